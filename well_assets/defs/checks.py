"""Asset checks on `well_production`: unique keys, schema, reconciliation with the source.

They query DuckDB directly (SQL, no table load into memory) and share the `duckdb` pool
with the writers, because DuckDB allows one process at a time on the file. They are one
multi-asset check, so a run that checks them all pays for one step and opens the database
once; a run may still select any of them.
"""

import concurrent.futures as cf
from collections.abc import Iterator

import dagster as dg
import duckdb
import polars as pl

from well_assets import storage
from well_assets.defs.assets import well_production
from well_assets.defs.resources import ODataResource, WellsDatabase
from well_assets.errors import WellAssetsError
from well_assets.pages.keys import page_key
from well_assets.pages.ranges import changed_synced_pages
from well_assets.storage import PageMap


UNIQUE_KEYS = "well_production_unique_keys"
SCHEMA = "well_production_schema"
RECONCILIATION = "well_production_reconciliation"
_SPECS = [
    dg.AssetCheckSpec(UNIQUE_KEYS, asset=well_production,
                      description="No two rows share (well_code, production_date)."),
    dg.AssetCheckSpec(SCHEMA, asset=well_production, description=(
        "Accepted rows satisfy the rules they were validated with: keys present, volumes within "
        "0..max_daily_volume (the limit the ledger recorded for each row's page).")),
    dg.AssetCheckSpec(RECONCILIATION, asset=well_production, description=(
        "Page by page, the table holds in each page's key range exactly what the source had there at "
        "the page's last sync (rows and a checksum of their keys), the source holds as many rows there "
        "now, and the ranges tile the keys without gaps: ERROR naming the pages otherwise, even when the "
        "totals agree. Pages behind the source are the sensor's next work; pages differing from their "
        "last sync were changed by something else.")),
]


@dg.multi_asset_check(specs=_SPECS, can_subset=True, pool="duckdb")
def well_production_checks(context: dg.AssetCheckExecutionContext, wells_db: WellsDatabase,
                           odata: ODataResource) -> Iterator[dg.AssetCheckResult]:
    """The checks on `well_production` (any subset of them): one step and one read-only
    connection for all, instead of a step and a connection each."""
    selected = {key.name for key in context.selected_asset_check_keys}
    store = wells_db.store()
    with store.connection(read_only=True, lean=True) as con:
        if RECONCILIATION in selected:
            yield _reconciliation(con, odata)
        if SCHEMA in selected:
            violations = storage.schema_violation_count(con)
            yield dg.AssetCheckResult(check_name=SCHEMA, passed=violations == 0,
                                      severity=dg.AssetCheckSeverity.ERROR, metadata={"violating_rows": violations})
        if UNIQUE_KEYS in selected:
            duplicates = storage.duplicate_key_count(con)
            yield dg.AssetCheckResult(check_name=UNIQUE_KEYS, passed=duplicates == 0,
                                      severity=dg.AssetCheckSeverity.ERROR,
                                      metadata={"duplicate_keys": duplicates, "rows": storage.table_row_count(con)})


def reconcile(mapped: PageMap, ledger: pl.DataFrame, on_table: dict[int, tuple[int, int]],
              behind: tuple[list[int], int] | None) -> tuple[bool, dict]:
    """Every page's key range against the table and the source, page by page.

    A synced page must still hold in its range exactly what its last sync left there,
    which is what the source had: as many rows, with the same keys (a checksum of them);
    and the source must have as many rows in the range now (``behind``: the pages it does
    not, from ``pages.ranges.changed_synced_pages``, and the counts that took). The ranges must tile the key
    space: pages 0..n-1, each starting after the one before. Equal totals prove nothing:
    a table can miss rows in one page and keep stale ones in another. Without ``behind``
    (the source could not be reached) the source is not compared."""
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
            differing.append({"page": page_key(page), "synced_rows": int(expected[0]), "table_rows": rows,
                              "same_keys": checksum == int(expected[1])})
    behind, counts = behind or ([], 0)
    pages = [page for page, _, _ in mapped]
    lowers = [lower for page, lower, _ in mapped if page > 0]
    gaps = pages != list(range(len(pages))) or any(lower is None for lower in lowers) or lowers != sorted(lowers)
    failed = ledger.filter(pl.col("status") == "failed").get_column("partition_key").to_list() if ledger.height else []
    metadata = {
        "pages_checked": len(pages) - len(unsynced),
        "pages_differing": [d["page"] for d in differing],
        "differences": differing,
        "pages_behind_source": [page_key(page) for page in behind],
        "source_counts_requested": counts,
        "pages_not_synced": unsynced,
        "ranges_tile_the_keys": not gaps,
        "failed_pages": failed,
    }
    return not differing and not behind and not gaps, metadata


def _reconciliation(con: duckdb.DuckDBPyConnection, odata: ODataResource) -> dg.AssetCheckResult:
    """The reconciliation check (see its spec)."""
    source = odata.source_identity()
    mapped = storage.page_map(con, source)
    synced_rows = storage.synced_source_rows(con, source)
    # The source's counts (requests) and the table's figures (a pass over the table) take
    # about as long on a large table: they run at the same time.
    with cf.ThreadPoolExecutor(1, thread_name_prefix="reconciliation") as pool:
        counted = pool.submit(_count_behind, odata, mapped, synced_rows)
        ledger = storage.latest_page_status(con, source)
        on_table = storage.table_by_page(con, source)
        try:
            behind, source_error = counted.result(), None
        except WellAssetsError as exc:
            behind, source_error = None, exc
    passed, metadata = reconcile(mapped, ledger, on_table, behind)
    if source_error is not None:
        metadata["source_error"] = f"{source_error.code}: {source_error.message}"
        return dg.AssetCheckResult(
            check_name=RECONCILIATION, passed=False,
            severity=dg.AssetCheckSeverity.ERROR if not passed else dg.AssetCheckSeverity.WARN,
            metadata=metadata, description=f"the source could not be counted ({source_error.code}); the table "
            f"matches its last syncs: {passed}")
    description = None if passed else (
        f"pages differing from their last sync: {', '.join(metadata['pages_differing']) or 'none'}; "
        f"pages behind the source: {', '.join(metadata['pages_behind_source'][:50]) or 'none'}; "
        f"ranges tile the keys: {metadata['ranges_tile_the_keys']}")
    return dg.AssetCheckResult(check_name=RECONCILIATION, passed=passed, severity=dg.AssetCheckSeverity.ERROR,
                               metadata=metadata, description=description)


def _count_behind(odata: ODataResource, mapped: PageMap, synced_rows: dict[int, int]) -> tuple[list[int], int]:
    with odata.client(run_id="reconciliation") as client:
        return changed_synced_pages(mapped, synced_rows, client.count_ranges)

