"""The page-partitioned `well_production` asset and the `well_production_import_report`.

`well_production` knows nothing of HTTP or SQL: it asks the OData resource for the client's
settings, hands a lazy PageStream to the DuckDB IO manager, and the IO manager commits page by
page. The report reads the page ledger and renders the import summary.
"""

import logging
import time
from datetime import UTC, datetime

import dagster as dg
from pydantic import Field

from well_assets import storage
from well_assets.defs.metadata import COLUMN_SCHEMA, REJECTS_COLUMN_SCHEMA
from well_assets.defs.partitions import odata_pages
from well_assets.defs.resources import ODataResource, WellsDatabase
from well_assets.errors import ChangeTrackingUnavailable
from well_assets.names import SYNC_DELTA, SYNC_RESYNC, SYNC_TAG, import_id
from well_assets.pages.delta import DeltaStream
from well_assets.pages.keys import MAX_PAGES_PER_RUN, page_index
from well_assets.pages.ranges import known_ranges
from well_assets.pages.stream import PageStream
from well_assets.reporting import summary as report
from well_assets.storage import PageMap, tracking
from well_assets.validation.model import DEFAULT_MAX_DAILY_VOLUME, ValidationSettings

# dagster.yaml lists this logger under python_logs, so its INFO+ lines (retries,
# throttling) reach the run's event log while per-request DEBUG lines stay out of it.
ODATA_LOGGER = logging.getLogger("well_assets.odata")
GROUP = "well_production"
OWNERS = ["team:data-engineering"]


class ImportConfig(dg.Config):
    """Run configuration of a page import."""

    max_daily_volume: float = Field(default=DEFAULT_MAX_DAILY_VOLUME, description="A volume above this is rejected.")
    prefetch: int = Field(
        default=4,
        description="Page fetches queued beyond the ones in flight (ODATA_CONCURRENCY), 1..8; fetched pages "
                    "wait in memory for the writer, at most 32.",
    )


@dg.asset(
    partitions_def=odata_pages,
    backfill_policy=dg.BackfillPolicy.multi_run(max_partitions_per_run=MAX_PAGES_PER_RUN),
    io_manager_key="wells_io_manager",
    group_name=GROUP,
    kinds={"odata", "polars", "duckdb"},
    owners=OWNERS,
    pool="duckdb",
    # No step RetryPolicy: requests are retried by the OData client and a failed page is
    # recorded while the run goes on; and Dagster retries a step under a retry policy when
    # it is interrupted, so Terminate would restart an in-process import instead of ending it.
    metadata={
        "dagster/column_schema": COLUMN_SCHEMA,
        "dagster/table_name": "well_production",
        "rejects_table": "well_production_rejects",
        "rejects_column_schema": REJECTS_COLUMN_SCHEMA,
        "page_ledger_table": "odata_page_log",
    },
    tags={"source": "odata"},
)
def well_production(
    context: dg.AssetExecutionContext, config: ImportConfig, odata: ODataResource, wells_db: WellsDatabase
) -> PageStream:
    """Daily production (oil, gas, water) per well per day, one partition per OData page.

    A page is a range of the key (well, day) in the source's order: first read by offset,
    from then on by its key range, so changes elsewhere in the source never shift it.
    Each page is validated with the Pandera model and committed to DuckDB in one
    transaction: the table's rows in the page's range become the source's (new and
    corrected rows upserted by (well_code, production_date), rows the source no longer has
    deleted and kept in `well_production_deleted`), bad rows go to
    `well_production_rejects` with the reason, and the page's figures go to the
    `odata_page_log` ledger. A last page that outgrew a page is split into new pages.
    """
    if not 1 <= config.prefetch <= 8:
        raise dg.Failure(f"invalid setting prefetch={config.prefetch}: allowed values are 1..8")
    keys = list(context.partition_keys)
    pages = sorted((page_index(key), key) for key in keys)
    context.log.info(
        f"importing {len(pages)} page(s) {keys[0]}..{keys[-1]} of {odata.entity_set} "
        f"(page size {odata.page_size})"
    )
    run = context.run
    # Retries and re-executions share the root run's response cache.
    root_run = run.root_run_id or run.run_id
    odata.purge_expired_caches()
    record = context.instance.get_run_record_by_id(run.run_id)
    started = record.start_time if record is not None and record.start_time else time.time()
    source = odata.source_identity()
    instance = context.instance
    sync = run.tags.get(SYNC_TAG)
    if sync == SYNC_DELTA:
        return DeltaStream(
            fetcher=None,
            client_config=odata.client_config(run_id=run.run_id[:8]),
            pages=pages,
            page_size=odata.page_size,
            source=source,
            validation=ValidationSettings(max_daily_volume=config.max_daily_volume),
            logger_name=ODATA_LOGGER.name,
            root_run_id=root_run,
            import_id=import_id(run.tags, run.run_id, run.root_run_id),
            run_started_at=datetime.fromtimestamp(started, UTC).replace(tzinfo=None),
        )
    mapped = _start_sync(context, odata, wells_db, source, expired=sync == SYNC_RESYNC)
    return PageStream(
        fetcher=odata.page_fetcher(),
        client_config=odata.client_config(run_id=run.run_id[:8], cache_namespace=root_run),
        pages=pages,
        page_size=odata.page_size,
        source=source,
        validation=ValidationSettings(max_daily_volume=config.max_daily_volume),
        prefetch=config.prefetch,
        cache_dir=odata.run_cache_dir(root_run),
        logger_name=ODATA_LOGGER.name,
        root_run_id=root_run,
        import_id=import_id(run.tags, run.run_id, run.root_run_id),
        run_started_at=datetime.fromtimestamp(started, UTC).replace(tzinfo=None),
        ranges=known_ranges(mapped, [page for page, _ in pages]),
        max_delete_fraction=wells_db.max_delete_fraction,
        register_keys=lambda keys: instance.add_dynamic_partitions(odata_pages.name, keys),
    )


def _start_sync(context: dg.AssetExecutionContext, odata: ODataResource, wells_db: WellsDatabase, source: str,
                expired: bool) -> PageMap:
    """Before a run reads its pages: the source's page map (returned), and change tracking:
    unless the source has a delta link (or a baseline is being taken), ask the source for one
    now. It becomes the delta link once every page was synced after this moment (the IO
    manager checks after the pages). ``expired``: the run re-syncs because the delta link
    expired; it drops that link first. One connection for both reads."""
    if odata.change_tracking_mode == "off":
        return wells_db.page_map(source)
    store = wells_db.store()
    with store.connection() as con:
        if expired and tracking.drop_delta_link(con, source):
            context.log.info("change tracking: the expired delta link was dropped; this re-sync takes a new baseline")
        state = tracking.sync_state(con, source)
        mapped = storage.page_map(con, source)
    if state is not None and (state.delta_link or state.pending_link):
        return mapped
    taken_at = storage.utc_now()
    try:
        with odata.client(run_id=context.run.run_id[:8]) as client:
            baseline = client.start_tracking()
    except ChangeTrackingUnavailable as exc:
        raise dg.Failure(description=exc.message, allow_retries=False) from None
    if baseline.delta_link is not None:
        with store.connection() as con:
            if tracking.begin_baseline(con, source, baseline.delta_link, taken_at):
                context.log.info("change tracking: baseline taken; it becomes the delta link once every page is synced")
    return mapped


@dg.asset(
    deps=[well_production],
    group_name=GROUP,
    kinds={"duckdb", "markdown"},
    owners=OWNERS,
    pool="duckdb",
)
def well_production_import_report(
    context: dg.AssetExecutionContext, wells_db: WellsDatabase
) -> dg.MaterializeResult:
    """The latest import, from the page ledger, with the figures the CLI prints for it:
    pages, records, new/updated/duplicate/rejected counts, wall time from the start of its
    first run, throughput, memory, and every failed page with its error. Plus charts of the
    per-page figures across every page (the asset page's partition plots show only the
    newest 120 page keys).

    The summary has the JSON shape of the seed system's response (`success`,
    `data.batch_result`, `pagination_summary`, `import_summary`, `performance`).
    """
    with wells_db.store().connection(read_only=True, lean=True) as con:
        summary = report.import_summary(con)
        pages = storage.latest_page_status(con)
    return dg.MaterializeResult(
        metadata={
            "summary": dg.MetadataValue.md(report.to_markdown(summary)),
            "summary_json": dg.MetadataValue.json(summary),
            "pages": dg.MetadataValue.md(report.page_charts(pages)),
            "success": summary["success"],
            **report.headline_metadata(summary),
        }
    )
