"""The reference loop: the least a hand-written importer has to do, with no Dagster.

Sequentially, for every page k: GET ``$skip=k*P&$top=P&$orderby=WellCode,ProductionDate``
with httpx (following nextLinks until the page is complete), parse the JSON into a Polars
frame with fixed dtypes, and upsert it into DuckDB by (well_code, production_date) with
``INSERT ... ON CONFLICT DO UPDATE`` from the frame via Arrow, one transaction per page.
No validation beyond dtypes, no ledger, no rejects, no prefetch; no retries but the
one a rate-limited source demands (a 429 is waited out as its Retry-After asks).

    python benchmarks/raw_loop.py --base-url http://127.0.0.1:8000/odata --database /tmp/raw.duckdb

Prints one JSON object: rows, pages, wall_seconds and the split fetch/parse/db seconds.
The page count comes from ``$count=true&$top=0`` first, like the import does.
Deliberately plain: this is the yardstick, not a competitor.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from datetime import datetime, timezone
from urllib.parse import quote, urljoin

import duckdb
import httpx
import polars as pl

SCHEMA = {
    "WellCode": pl.Utf8,
    "ProductionDate": pl.Utf8,
    "OilProduction": pl.Float64,
    "GasProduction": pl.Float64,
    "WaterProduction": pl.Float64,
}
RENAME = {
    "WellCode": "well_code",
    "ProductionDate": "production_date",
    "OilProduction": "oil_production",
    "GasProduction": "gas_production",
    "WaterProduction": "water_production",
}
DDL = """
CREATE TABLE IF NOT EXISTS well_production (
    well_code VARCHAR NOT NULL,
    production_date DATE NOT NULL,
    oil_production DOUBLE,
    gas_production DOUBLE,
    water_production DOUBLE,
    source_page INTEGER,
    run_id VARCHAR,
    imported_at TIMESTAMP,
    updated_at TIMESTAMP,
    PRIMARY KEY (well_code, production_date)
)
"""
UPSERT = """
INSERT INTO well_production
SELECT well_code, production_date, oil_production, gas_production, water_production,
       $page, 'raw', $now, $now
FROM page_frame
ON CONFLICT (well_code, production_date) DO UPDATE SET
    oil_production = excluded.oil_production,
    gas_production = excluded.gas_production,
    water_production = excluded.water_production,
    source_page = excluded.source_page,
    updated_at = excluded.updated_at
"""


def _q(value: str) -> str:
    return quote(value, safe=",$'")


def get(http: httpx.Client, url: str, **kwargs) -> httpx.Response:
    """GET, waiting out a 429 as its Retry-After asks (the least a loop against a
    rate-limited source must do)."""
    while True:
        resp = http.get(url, **kwargs)
        if resp.status_code != 429:
            resp.raise_for_status()
            return resp
        time.sleep(float(resp.headers.get("Retry-After") or 1))


def fetch_page(http: httpx.Client, entity_url: str, page: int, size: int, orderby: str) -> list[dict]:
    url = f"{entity_url}?$skip={page * size}&$top={size}&$orderby={_q(orderby)}"
    rows: list[dict] = []
    while True:
        resp = get(http, url, headers={"Prefer": f"odata.maxpagesize={size}"})
        payload = resp.json()
        rows.extend(payload["value"])
        link = payload.get("@odata.nextLink") or payload.get("@nextLink")
        if link is None or len(rows) >= size:
            return rows[:size]
        url = urljoin(url, link)


def to_frame(rows: list[dict]) -> pl.DataFrame:
    frame = pl.from_dicts(rows, schema=SCHEMA)  # keys not in SCHEMA (annotations) are dropped
    return frame.rename(RENAME).with_columns(pl.col("production_date").str.to_date("%Y-%m-%d"))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base-url", required=True, help="service root, e.g. http://127.0.0.1:8000/odata")
    ap.add_argument("--database", required=True, help="DuckDB file (created)")
    ap.add_argument("--entity-set", default="WellProduction")
    ap.add_argument("--page-size", type=int, default=1000)
    ap.add_argument("--orderby", default="WellCode,ProductionDate")
    ap.add_argument("--max-pages", type=int, default=None)
    args = ap.parse_args(argv)

    began = time.perf_counter()
    entity_url = f"{args.base_url.rstrip('/')}/{args.entity_set}"
    fetch_s = parse_s = db_s = 0.0
    rows_total = pages = 0
    with httpx.Client(timeout=60.0, headers={"Accept": "application/json"}) as http, \
            duckdb.connect(args.database) as con:
        con.execute(DDL)
        resp = get(http, f"{entity_url}?$count=true&$top=0")
        count = int(resp.json()["@odata.count"])
        n_pages = math.ceil(count / args.page_size)
        if args.max_pages is not None:
            n_pages = min(n_pages, args.max_pages)
        for page in range(n_pages):
            t0 = time.perf_counter()
            rows = fetch_page(http, entity_url, page, args.page_size, args.orderby)
            t1 = time.perf_counter()
            frame = to_frame(rows)
            page_frame = frame.to_arrow()
            t2 = time.perf_counter()
            con.execute("BEGIN")
            con.register("page_frame", page_frame)
            con.execute(UPSERT, {"page": page, "now": datetime.now(timezone.utc).replace(tzinfo=None)})
            con.unregister("page_frame")
            con.execute("COMMIT")
            t3 = time.perf_counter()
            fetch_s += t1 - t0
            parse_s += t2 - t1
            db_s += t3 - t2
            rows_total += frame.height
            pages += 1
        stored = con.execute("SELECT count(*) FROM well_production").fetchone()[0]
    wall = time.perf_counter() - began
    print(json.dumps({
        "source_count": count,
        "rows": rows_total,
        "stored_rows": stored,
        "pages": pages,
        "wall_seconds": round(wall, 3),
        "fetch_seconds": round(fetch_s, 3),
        "parse_seconds": round(parse_s, 3),
        "db_seconds": round(db_s, 3),
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
