"""The DuckDB IO manager of `well_production`: commits a PageStream page by page.

Why not dagster-duckdb's stock IO manager: it inserts by column position, types a table
from the first frame, and replaces whole partitions with DELETE + INSERT, which is wrong
for offset pages of a changing source. Here every page is ONE transaction that upserts by
the natural key, quarantines rejects and writes the page's ledger row. A page that fails
is recorded in the ledger and the run goes on; the step fails at the end naming the
failed pages, so re-running just those completes the import.
"""

from __future__ import annotations

import resource
import time

import dagster as dg
import polars as pl
from pydantic import Field

from well_assets import storage
from well_assets.defs.dagster_internals import add_partition_metadata
from well_assets.defs.metadata import page_metadata
from well_assets.errors import DatabaseError, WellAssetsError
from well_assets.pages import progress
from well_assets.pages.stream import PageItem, PageStream
from well_assets.storage import DuckDBStore, PageFailure, PageWrite
from well_assets.storage.records import key_text

REOPEN_EVERY_PAGES = 100


class WellsDuckDBIOManager(dg.ConfigurableIOManager):
    """Writes `well_production` pages to DuckDB (upsert, rejects, ledger) and loads the table."""

    database: str = Field(default="data/wells.duckdb", description="DuckDB file (WELLS_DATABASE).")
    lock_timeout: float = Field(default=120.0, description="Seconds to wait for another writer's file lock.")

    def _store(self) -> DuckDBStore:
        return DuckDBStore(self.database, lock_timeout=self.lock_timeout)

    def handle_output(self, context: dg.OutputContext, obj: PageStream) -> None:
        if not isinstance(obj, PageStream):
            raise dg.Failure(f"{type(self).__name__} writes PageStream outputs, got {type(obj).__name__}")
        store = self._store()
        run_id = context.run_id
        failures: list[tuple[str, str]] = []
        totals = {"pages": 0, "rows_new": 0, "rows_updated": 0, "rows_duplicate": 0, "rows_rejected": 0}
        writer = _Writer(store)
        try:
            con = writer.con
            # Before any fetch: keys must map to the same rows they were created for.
            store.check_page_size(con, obj.page_size, obj.source)
            done = storage.pages_succeeded_in_runs(con, {run_id, obj.root_run_id or run_id}) & {p for p, _ in obj.pages}
            if done:
                context.log.info(f"{len(done)} page(s) already committed by this run group; not fetched again")
                obj.skip_pages(done)
            progress.started(total=len(obj.pending))
            for item in obj:
                figures = self._commit(store, writer.con, item, run_id, obj)
                writer.page_committed()
                if figures["status"] == "failed":
                    failures.append((item.partition_key, figures["error"]))
                    context.log.error(f"page {item.partition_key} failed: {figures['error']}")
                else:
                    for name in totals:
                        if name != "pages":
                            totals[name] += int(figures[name])
                    totals["pages"] += 1
                add_partition_metadata(context, item.partition_key, page_metadata(figures))
                progress.page_done(figures)
        finally:
            writer.close()
        if failures:
            # Dagster's step is all or nothing: the run fails and none of its pages is
            # marked materialized, although the committed ones are in the table and the
            # ledger. Re-executing it from failure fetches only the failed pages.
            listing = "; ".join(f"{key}: {error}" for key, error in failures)
            raise dg.Failure(
                description=f"{len(failures)} page(s) failed: {', '.join(k for k, _ in failures)}. {listing}",
                metadata={"failed_pages": [k for k, _ in failures], "committed_pages": totals["pages"]},
                # Each page already had its HTTP retries; retrying the step would only
                # repeat them. Re-execute from failure once the source is healthy.
                allow_retries=False,
            )
        obj.discard_cache()
        context.log.info(
            f"committed {totals['pages']} page(s): {totals['rows_new']} new, {totals['rows_updated']} updated, "
            f"{totals['rows_duplicate']} duplicate, {totals['rows_rejected']} rejected"
        )

    def _commit(self, store: DuckDBStore, con, item: PageItem, run_id: str, stream: PageStream) -> dict:
        result = item.result
        base = {
            "page": item.page,
            "partition_key": item.partition_key,
            "run_id": run_id,
            "skip": item.page * stream.page_size,
            "top": stream.page_size,
            "source": stream.source,
            "page_size": stream.page_size,
            "started_at": item.started_at,
            "source_count": result.source_count if result else None,
            "fetch_seconds": result.http_seconds if result else item.fetch_wall_seconds,
            "throttle_seconds": result.throttle_seconds if result else 0.0,
            "retries": result.retries if result else _attempts(item.error),
            "bytes": result.bytes if result else 0,
            "cache_hit": result.from_cache if result else False,
            "first_key": result.first_key if result else None,
            "last_key": result.last_key if result else None,
            "import_id": stream.import_id,
            "run_started_at": stream.run_started_at,
            # this process (the writer) and the page fetcher, the peak of each so far
            "max_daily_volume": stream.validation.max_daily_volume,
            "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 + stream.fetcher.peak_rss_mb,
        }
        # The figures reported as metadata carry the keys as the ledger stores them.
        keys = {"first_key": key_text(base["first_key"]), "last_key": key_text(base["last_key"])}
        if not item.failed:
            validated = item.validated
            write = PageWrite(
                **base,
                valid=validated.valid,
                rejects=validated.rejects,
                in_page_duplicates=validated.in_page_duplicates,
                rows_fetched=validated.valid.height + validated.rejects.height + validated.in_page_duplicates,
                validate_seconds=validated.validate_seconds,
            )
            try:
                counts = store.write_page(con, write)
            except DatabaseError as exc:
                item.error = exc
            else:
                return {**base, **keys, "status": "succeeded", "rows_fetched": write.rows_fetched,
                        "rows_new": counts.new, "rows_updated": counts.updated,
                        "rows_duplicate": counts.duplicate, "rows_rejected": counts.rejected,
                        "in_page_duplicates": write.in_page_duplicates,
                        "validate_seconds": write.validate_seconds, "db_seconds": counts.db_seconds}
        error = _error_text(item.error)
        began = time.perf_counter()
        store.record_failure(con, PageFailure(**base, error=error))
        return {**base, **keys, "status": "failed", "error": error, "db_seconds": time.perf_counter() - began}

    def load_input(self, context: dg.InputContext) -> pl.DataFrame:
        """The production table as a Polars frame (all rows; pages shift, so no per-page slice)."""
        with self._store().connection(read_only=True) as con:
            return storage.load_table(con)


class _Writer:
    """The writer's connection, reopened every REOPEN_EVERY_PAGES pages.

    A DuckDB connection keeps caches that grow with the table it writes (docs/benchmarks.md);
    reopening between two page transactions returns them, so
    a run's memory stays flat however many pages it covers. The file lock is released for
    that instant; another writer would be waited for (the store retries the lock).
    """

    def __init__(self, store: DuckDBStore) -> None:
        self._store = store
        self.con = store.open_writer()
        self._pages = 0

    def page_committed(self) -> None:
        self._pages += 1
        if self._pages % REOPEN_EVERY_PAGES == 0:
            self.con.close()
            self.con = self._store.open_writer()

    def close(self) -> None:
        self.con.close()


def _attempts(error: WellAssetsError | None) -> int:
    attempts = getattr(error, "attempts", None)
    return max(int(attempts) - 1, 0) if attempts else 0


def _error_text(error: WellAssetsError | None) -> str:
    if error is None:
        return "UNKNOWN_ERROR: page failed without an error"
    return f"{error.code}: {error.message}"
