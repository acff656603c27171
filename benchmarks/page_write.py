"""The writer's cost per page, statement by statement: a first import of P pages of 1000
rows into a fresh DuckDB file through ``storage.page_write.write_page`` (no HTTP, no Dagster).

    python benchmarks/page_write.py [PAGES]          (default 300)

Prints write_page's milliseconds per page and, per SQL statement, its milliseconds per page
and how many it runs per page. The pages are built and validated before the clock starts.
"""

from __future__ import annotations

import collections
import datetime as dt
import os
import sys
import tempfile
import time

from well_assets.storage import page_write
from well_assets.storage.records import PageWrite
from well_assets.storage.store import DuckDBStore
from well_assets.validation.page import validate_page


def pages(count: int) -> list:
    start = dt.date(2023, 1, 1)
    out = []
    for p in range(count + 1):
        records = [{"WellCode": f"WELL_{(p * 1000 + i) // 500:04d}",
                    "ProductionDate": (start + dt.timedelta(days=(p * 1000 + i) % 500)).isoformat(),
                    "OilProduction": 1.0 * i, "GasProduction": 2.0, "WaterProduction": 3.0} for i in range(1000)]
        out.append(validate_page(records))
    return out


def main() -> None:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 300
    validated = pages(count)
    seconds: collections.Counter = collections.Counter()
    calls: collections.Counter = collections.Counter()
    original = page_write.fetch_all

    def timed(con, statement, params=None):
        began = time.perf_counter()
        try:
            return original(con, statement, params)
        finally:
            name = " ".join(statement.split())[:60]
            seconds[name] += time.perf_counter() - began
            calls[name] += 1

    page_write.fetch_all = timed

    def first_key(v):
        return v.valid["well_code"][0], v.valid["production_date"][0]

    with tempfile.TemporaryDirectory() as work:
        store = DuckDBStore(os.path.join(work, "w.duckdb"))
        con = store.open_writer()
        fast = page_write.FastInsert()
        began = time.perf_counter()
        for p in range(count):
            v = validated[p]
            page_write.write_page(con, PageWrite(
                page=p, partition_key=f"{p:05d}", run_id="bench", source="bench", page_size=1000, valid=v.valid,
                rejects=v.rejects, lower=None if p == 0 else first_key(v), upper=first_key(validated[p + 1]),
                next_lower=first_key(validated[p + 1]), mirror_deletes=True, max_delete_fraction=0.5,
                lower_recorded=p > 0), fast)
        total = time.perf_counter() - began
        con.close()
    print(f"write_page: {total / count * 1000:.2f} ms a page ({count} pages)")
    for name, spent in seconds.most_common():
        print(f"  {spent / count * 1000:6.2f} ms a page  {calls[name] / count:.1f} a page  {name}")


if __name__ == "__main__":
    main()
