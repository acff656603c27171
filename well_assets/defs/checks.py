"""Asset checks on `well_production`: unique keys, schema, reconciliation with the source.

They query DuckDB directly (SQL, no table load into memory) and share the `duckdb` pool
with the writers, because DuckDB allows one process at a time on the file.
"""

from __future__ import annotations

import dagster as dg
import polars as pl

from well_assets import storage
from well_assets.defs.assets import well_production
from well_assets.defs.resources import ODataResource, WellsDatabase
from well_assets.pages.keys import page_key


@dg.asset_check(asset=well_production, pool="duckdb", blocking=False)
def well_production_unique_keys(wells_db: WellsDatabase) -> dg.AssetCheckResult:
    """No two rows share (well_code, production_date)."""
    with wells_db.store().connection(read_only=True, lean=True) as con:
        duplicates = storage.duplicate_key_count(con)
        rows = storage.table_row_count(con)
    return dg.AssetCheckResult(
        passed=duplicates == 0,
        severity=dg.AssetCheckSeverity.ERROR,
        metadata={"duplicate_keys": duplicates, "rows": rows},
    )


@dg.asset_check(asset=well_production, pool="duckdb", blocking=False)
def well_production_schema(wells_db: WellsDatabase) -> dg.AssetCheckResult:
    """Accepted rows satisfy the rules they were validated with: keys present, volumes
    within 0..max_daily_volume (the limit the ledger recorded for each row's page)."""
    with wells_db.store().connection(read_only=True, lean=True) as con:
        violations = storage.schema_violation_count(con)
    return dg.AssetCheckResult(
        passed=violations == 0,
        severity=dg.AssetCheckSeverity.ERROR,
        metadata={"violating_rows": violations},
    )


def reconcile(mapped: list[tuple[int, tuple | None, bool]], ledger: pl.DataFrame,
              on_table: dict[int, tuple[int, int]]) -> tuple[bool, dict]:
    """Every page's key range against the table, page by page.

    A synced page must still hold in its range exactly what its last sync left there,
    which is what the source had: as many rows, with the same keys (a checksum of them).
    The ranges must tile the key space: pages 0..n-1, each starting after the one before.
    Equal totals prove nothing: a table can miss rows in one page and keep stale ones in
    another."""
    synced = ledger.filter(pl.col("status") == "succeeded")
    last_sync = {row["page"]: (row["rows_in_range"], row["key_checksum"]) for row in synced.iter_rows(named=True)}
    differing, unsynced = [], []
    for page, _lower, was_synced in mapped:
        expected = last_sync.get(page)
        if not was_synced or expected is None or expected[0] is None:
            unsynced.append(page_key(page))
            continue
        rows, checksum = on_table.get(page, (0, 0))
        if (rows, checksum) != (int(expected[0]), int(expected[1])):
            differing.append({"page": page_key(page), "source_rows": int(expected[0]), "table_rows": rows,
                              "same_keys": checksum == int(expected[1])})
    pages = [page for page, _, _ in mapped]
    lowers = [lower for page, lower, _ in mapped if page > 0]
    gaps = pages != list(range(len(pages))) or any(lower is None for lower in lowers) or lowers != sorted(lowers)
    failed = ledger.filter(pl.col("status") == "failed").get_column("partition_key").to_list() if ledger.height else []
    metadata = {
        "pages_checked": len(pages) - len(unsynced),
        "pages_differing": [d["page"] for d in differing],
        "differences": differing,
        "pages_not_synced": unsynced,
        "ranges_tile_the_keys": not gaps,
        "failed_pages": failed,
    }
    return not differing and not gaps, metadata


@dg.asset_check(asset=well_production, pool="duckdb", blocking=False)
def well_production_reconciliation(wells_db: WellsDatabase, odata: ODataResource) -> dg.AssetCheckResult:
    """Page by page, the table holds in each page's key range exactly what the source had
    there at the page's last sync (rows and a checksum of their keys), and the ranges tile
    the keys without gaps: ERROR naming the pages otherwise, even when the totals agree."""
    with wells_db.store().connection(read_only=True, lean=True) as con:
        source = odata.source_identity()
        passed, metadata = reconcile(storage.page_map(con, source), storage.latest_page_status(con, source),
                                     storage.table_by_page(con, source))
    return dg.AssetCheckResult(passed=passed, severity=dg.AssetCheckSeverity.ERROR, metadata=metadata,
                               description=None if passed else f"pages differing from the source: "
                               f"{', '.join(metadata['pages_differing']) or 'none'}; ranges tile the keys: "
                               f"{metadata['ranges_tile_the_keys']}")


well_production_checks = [
    well_production_unique_keys,
    well_production_schema,
    well_production_reconciliation,
]
