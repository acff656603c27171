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
from well_assets.errors import DatabaseError, DeleteGuardError, WellAssetsError
from well_assets.odata import ODataClient
from well_assets.pages import progress
from well_assets.pages.delta import DeltaStream
from well_assets.pages.keys import page_key
from well_assets.pages.ranges import plan_offset_page, raw_key, split, within
from well_assets.pages.stream import PageItem, PageStream
from well_assets.storage import DuckDBStore, Key, PageFailure, PageWrite, to_key, tracking
from well_assets.storage.records import key_text
from well_assets.validation.columns import KEY
from well_assets.validation.page import ValidatedPage

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
        sync = _Sync(context, store, obj)
        try:
            # Before any fetch: keys must map to the same rows they were created for.
            store.check_page_size(sync.writer.con, obj.page_size, obj.source)
            done = storage.pages_succeeded_in_runs(sync.writer.con, {context.run_id, obj.root_run_id or context.run_id})
            done &= {p for p, _ in obj.pages}
            if done:
                context.log.info(f"{len(done)} page(s) already committed by this run group; not fetched again")
                obj.skip_pages(done)
            sync.learn_map()
            if isinstance(obj, DeltaStream):
                obj.prepare(sync.writer.con)
            progress.started(total=len(obj.pending))
            for item in obj:
                sync.commit(item)
            if sync.drifted:
                sync.verify()
            sync.track_changes()
        finally:
            sync.writer.close()
        if sync.new_keys and obj.register_keys is not None:
            obj.register_keys(sync.new_keys)
        for key, metadata in sync.split_pages.items():  # pages a split of the last page created
            context.log_event(dg.AssetMaterialization(asset_key=context.asset_key, partition=key, metadata=metadata))
        if sync.failures:
            # Dagster's step is all or nothing: the run fails and none of its pages is
            # marked materialized, although the committed ones are in the table and the
            # ledger. Re-executing it from failure fetches only the failed pages.
            failures = sync.failures
            listing = "; ".join(f"{key}: {error}" for key, error in failures)
            raise dg.Failure(
                description=f"{len(failures)} page(s) failed: {', '.join(k for k, _ in failures)}. {listing}",
                metadata={"failed_pages": [k for k, _ in failures], "committed_pages": sync.totals["pages"]},
                # Each page already had its HTTP retries; retrying the step would only
                # repeat them. Re-execute from failure once the source is healthy.
                allow_retries=False,
            )
        obj.discard_cache()
        t = sync.totals
        context.log.info(
            f"committed {t['pages']} page(s): {t['rows_new']} new, {t['rows_updated']} updated, "
            f"{t['rows_duplicate']} duplicate, {t['rows_deleted']} deleted, {t['rows_rejected']} rejected"
            + (f"; {t['rows_repaired']} row(s) repaired after the source changed during the import"
               if t["rows_repaired"] else "")
        )

    def load_input(self, context: dg.InputContext) -> pl.DataFrame:
        """The production table as a Polars frame (all rows; pages shift, so no per-page slice)."""
        with self._store().connection(read_only=True) as con:
            return storage.load_table(con)


class _Sync:
    """One step's page commits: the key range of each page, drift repair, verification."""

    def __init__(self, context: dg.OutputContext, store: DuckDBStore, stream: PageStream) -> None:
        self.context, self.store, self.stream = context, store, stream
        self.writer = _Writer(store)
        self.lowers: dict[int, Key | None] = {0: None}  # page -> lower key, as known
        self.mapped: set[int] = set()  # pages with a row in odata_page_map
        self.committed: dict[int, str] = {}  # page -> partition key, of the pages this step committed
        self.failures: list[tuple[str, str]] = []
        self.totals = {name: 0 for name in ("pages", "rows_new", "rows_updated", "rows_duplicate", "rows_deleted",
                                            "rows_rejected", "rows_repaired")}
        self.drifted = False
        self.new_keys: list[str] = []
        self.split_pages: dict[str, dict] = {}
        self.straddled: set[int] = set()  # pages whose offset read misses rows of their range
        self.stream_keys = {key for _, key in stream.pages}  # the partitions of the step's range

    def learn_map(self) -> None:
        for page, lower, _synced in storage.page_map(self.writer.con, self.stream.source):
            self.mapped.add(page)
            if page > 0 and lower is not None:
                self.lowers[page] = lower

    def upper(self, page: int) -> Key | None:
        return self.lowers.get(page + 1)

    # -- one page ---------------------------------------------------------------------

    def commit(self, item: PageItem) -> None:
        stream = self.stream
        if item.failed:
            return self._record(item, None, None, None)
        if isinstance(stream, DeltaStream):  # changes from the delta, to apply as they are
            return self._record(item, self.lowers.get(item.page), self.upper(item.page), item.validated,
                                read_by="delta", mirror=False, gone=item.gone or [])
        if item.page in stream.ranges:  # read by its key range
            lower, upper = self.lowers.get(item.page), self.upper(item.page)
            if upper is None and item.split_keys:  # the last page outgrew a page: split it
                return self._commit_split(item, lower)
            return self._record(item, lower, upper, item.validated, read_by="range")
        result = item.result
        plan = plan_offset_page(item.page, self.lowers.get(item.page), self.upper(item.page),
                                result.first_key, result.next_key)
        self.drifted |= plan.shifted
        if item.page > 0 and plan.lower is None:  # past the source's end: nothing to anchor
            return self._record(item, None, None, item.validated, read_by="offset", mirror=False)
        last = to_key(result.last_key)
        if plan.upper is not None and last is not None and last >= plan.upper:
            # A key repeated across the boundary: the copies read here belong to the next
            # page's range, and its read by offset starts after them. It is read by range.
            self.straddled.add(item.page + 1)
        rows, repaired = within(item.validated, plan.lower, plan.upper), 0
        if not plan.covered or item.page in self.straddled:  # read the page's range
            again = stream.read_range(item.page, item.partition_key, plan.lower, plan.upper)
            if again.failed:
                return self._record(again, plan.lower, plan.upper, None)
            had = set(rows.valid.select(KEY).iter_rows())
            rows = within(again.validated, plan.lower, plan.upper)
            repaired = sum(1 for key in rows.valid.select(KEY).iter_rows() if key not in had)
        next_lower = plan.upper if self.upper(item.page) is None else None
        self._record(item, plan.lower, plan.upper, rows, read_by="offset", repaired=repaired, next_lower=next_lower)

    def _commit_split(self, item: PageItem, lower: Key | None) -> None:
        parts = split(item.validated, lower, item.split_keys)
        for i, (lo, hi, rows) in enumerate(parts):
            page = item.page + i
            key = page_key(page)
            part = item if i == 0 else PageItem(page=page, partition_key=key, started_at=item.started_at,
                                                 result=item.result, validated=rows)
            figures = self._record(part, lo, hi, rows, read_by="range", next_lower=hi)
            if i and figures["status"] == "succeeded":
                self.new_keys.append(key)
                self.split_pages[key] = page_metadata(figures)
        self.context.log.info(f"page {item.partition_key} grew past {self.stream.page_size} rows: split into "
                              f"{len(parts)} pages, {page_key(item.page)}..{page_key(item.page + len(parts) - 1)}")

    def _record(self, item: PageItem, lower: Key | None, upper: Key | None, rows: ValidatedPage | None, *,
                read_by: str | None = None, repaired: int = 0, next_lower: Key | None = None,
                mirror: bool = True, gone: list[tuple[Key, bool]] | None = None) -> dict:
        """Writes the page (or its failure) in one transaction; reports it."""
        stream, con = self.stream, self.writer.con
        base = _figures(item, stream, self.context.run_id)
        base.update(read_by=read_by, rows_repaired=repaired)
        error = item.error
        figures: dict
        if error is None and rows is not None:
            removals = sum(1 for _key, removed in gone or [] if removed)
            write = PageWrite(**base, valid=rows.valid, rejects=rows.rejects, in_page_duplicates=rows.in_page_duplicates,
                              rows_fetched=rows.valid.height + rows.rejects.height + rows.in_page_duplicates + removals,
                              gone=gone,
                              validate_seconds=rows.validate_seconds, lower=lower, upper=upper,
                              next_lower=next_lower, mirror_deletes=mirror,
                              lower_recorded=item.page in self.mapped,
                              next_lower_recorded=item.page + 1 in self.mapped, map_known=True,
                              key_checksum=rows.key_checksum,
                              max_delete_fraction=stream.max_delete_fraction)
            try:
                counts = self.store.write_page(con, write)
            except (DatabaseError, DeleteGuardError) as exc:
                error = exc
            else:
                if mirror:
                    self.mapped.add(item.page)
                if next_lower is not None:
                    self.lowers[item.page + 1] = next_lower
                    self.mapped.add(item.page + 1)
                if lower is not None:
                    self.lowers.setdefault(item.page, lower)
                figures = {**base, "status": "succeeded", "rows_fetched": write.rows_fetched,
                           "rows_new": counts.new, "rows_updated": counts.updated,
                           "rows_duplicate": counts.duplicate, "rows_rejected": counts.rejected,
                           "rows_deleted": counts.deleted, "in_page_duplicates": write.in_page_duplicates,
                           "validate_seconds": write.validate_seconds, "db_seconds": counts.db_seconds}
                self.committed[item.page] = item.partition_key
                for name in self.totals:
                    if name != "pages":
                        self.totals[name] += int(figures.get(name) or 0)
                self.totals["pages"] += 1
        if error is not None:
            began = time.perf_counter()
            text = _error_text(error)
            self.store.record_failure(con, PageFailure(**base, error=text))
            figures = {**base, "status": "failed", "error": text, "db_seconds": time.perf_counter() - began}
            self.failures.append((item.partition_key, text))
            self.context.log.error(f"page {item.partition_key} failed: {text}")
        figures.update(first_key=key_text(figures["first_key"]), last_key=key_text(figures["last_key"]))
        if self.writer.page_committed():
            # Another writer may have had the file for the instant it was closed: the map as
            # it is now (the writes above rely on knowing it).
            self.learn_map()
        if item.partition_key in self.stream_keys:
            add_partition_metadata(self.context, item.partition_key, page_metadata(figures))
        progress.page_done(figures)
        return figures

    # -- after the pages ----------------------------------------------------------------

    def track_changes(self) -> None:
        """Change tracking after the pages: a full sync's baseline becomes the delta link
        once every page was synced after it was taken; a delta run says whether it applied
        every staged change (the delta link then moved on, in the last page's transaction)."""
        con, source, log = self.writer.con, self.stream.source, self.context.log
        if isinstance(self.stream, DeltaStream):
            read = self.stream.read
            state = tracking.sync_state(con, source)
            left = state.staged_changes if state is not None else 0
            log.info((f"delta read: {read.changed} changed and {read.removed} removed row(s) in {read.requests} "
                      "request(s); " if read.requests else "applied changes staged by an earlier run; ")
                     + ("every change applied: the delta link moved on" if not left
                        else f"{left} staged change(s) left for other pages (the sensor requests them)"))
        elif tracking.promote_baseline(con, source):
            log.info("change tracking: every page was synced after the baseline was taken; from now on the "
                     "sensor reads the source's changes from its delta link")

    def verify(self) -> None:
        """The source changed during this import: the pages read before the change may
        hold rows it has since deleted or lack rows it has since inserted. Every page this
        step committed is counted at the source; a page whose count differs from the
        table's is read again by its range."""
        stream = self.stream
        self.context.log.info("the source changed during the import: checking every page of this run by its key range")
        pages = [(page, key) for page, key in sorted(self.committed.items()) if page == 0 or self.lowers.get(page) is not None]
        with ODataClient(stream.client_config) as client:
            on_table = storage.table_by_page(self.writer.con, stream.source)
            counts = client.count_ranges([(raw_key(self.lowers.get(page)), raw_key(self.upper(page)))
                                          for page, _ in pages])
            for (page, key), at_source in zip(pages, counts):
                lower, upper, on_file = self.lowers.get(page), self.upper(page), on_table.get(page, (0, 0))[0]
                if at_source == on_file:
                    continue
                again = stream.read_range(page, key, raw_key(lower), raw_key(upper))
                rows = None if again.failed else within(again.validated, lower, upper)
                self._record(again, lower, upper, rows, read_by="range", repaired=abs(at_source - on_file))


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

    def page_committed(self) -> bool:
        """Counts a page; True when the connection was reopened."""
        self._pages += 1
        if self._pages % REOPEN_EVERY_PAGES == 0:
            self.con.close()
            self.con = self._store.open_writer(schema_ensured=True)
            return True
        return False

    def close(self) -> None:
        self.con.close()


def _figures(item: PageItem, stream: PageStream, run_id: str) -> dict:
    """The ledger figures of a page attempt (success or failure)."""
    result = item.result
    return {
        "page": item.page,
        "partition_key": item.partition_key,
        "run_id": run_id,
        "skip": result.skip if result else item.page * stream.page_size,
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
        "max_daily_volume": stream.validation.max_daily_volume,
        # this process (the writer) and the page fetcher, the peak of each so far
        "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
                  + (stream.fetcher.peak_rss_mb if stream.fetcher is not None else 0.0),
    }


def _attempts(error: WellAssetsError | None) -> int:
    attempts = getattr(error, "attempts", None)
    return max(int(attempts) - 1, 0) if attempts else 0


def _error_text(error: WellAssetsError | None) -> str:
    if error is None:
        return "UNKNOWN_ERROR: page failed without an error"
    return f"{error.code}: {error.message}"
