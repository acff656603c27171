"""Asset checks on `well_production`: unique keys, schema, reconciliation with the source.

They query DuckDB directly (SQL, no table load into memory) and share the `duckdb` pool
with the writers, because DuckDB allows one process at a time on the file.
"""

from __future__ import annotations

import dagster as dg
import polars as pl

from well_assets import storage
from well_assets.defs.assets import well_production
from well_assets.defs.resources import WellsDatabase


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


def reconcile(ledger: pl.DataFrame) -> tuple[bool, dg.AssetCheckSeverity, dict]:
    """Compares what the pages received with what the source said it had.

    For each imported page the source count implies how many rows the page should hold
    (``clamp(count - skip, 0, top)``); accepted + rejected + in-page duplicates must add up
    to that. A mismatch is an ERROR unless the source count changed during the import
    (pages shift then), which is a WARN.
    """
    ok = ledger.filter(pl.col("status") == "succeeded")
    if ok.is_empty():
        return True, dg.AssetCheckSeverity.WARN, {"pages_checked": 0}
    counts = ok.get_column("source_count").drop_nulls().unique()
    count = int(counts.max()) if len(counts) else None
    if count is None:
        return True, dg.AssetCheckSeverity.WARN, {"pages_checked": ok.height, "note": "the source reported no count"}
    expected = ok.select(
        ((pl.lit(count) - pl.col("skip")).clip(0, None)).clip(None, pl.col("top")).sum()
    ).item()
    received = int(ok.get_column("rows_fetched").sum())
    changed = len(counts) > 1
    passed = received == expected
    failed_pages = ledger.filter(pl.col("status") == "failed").get_column("partition_key").to_list()
    metadata = {
        "source_count": count,
        "expected_rows_for_imported_pages": int(expected),
        "received_rows": received,
        "accepted_rows": int(ok.select(pl.col("rows_new") + pl.col("rows_updated")
                                       + pl.col("rows_duplicate") - pl.col("in_page_duplicates")).sum().item()),
        "rejected_rows": int(ok.get_column("rows_rejected").sum()),
        "in_page_duplicates": int(ok.get_column("in_page_duplicates").sum()),
        "pages_checked": ok.height,
        "failed_pages": failed_pages,
        "source_changed_during_import": changed,
    }
    severity = dg.AssetCheckSeverity.WARN if changed else dg.AssetCheckSeverity.ERROR
    return passed, severity, metadata


@dg.asset_check(asset=well_production, pool="duckdb", blocking=False)
def well_production_reconciliation(wells_db: WellsDatabase) -> dg.AssetCheckResult:
    """Source count = accepted + rejected + in-page duplicates for the imported pages
    (WARN when the source changed during the import, ERROR otherwise)."""
    with wells_db.store().connection(read_only=True, lean=True) as con:
        ledger = storage.latest_page_status(con)
    passed, severity, metadata = reconcile(ledger)
    return dg.AssetCheckResult(passed=passed, severity=severity, metadata=metadata)


well_production_checks = [
    well_production_unique_keys,
    well_production_schema,
    well_production_reconciliation,
]
