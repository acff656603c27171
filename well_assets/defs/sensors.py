"""`odata_page_sensor`: keeps the table equal to the source between nightly refreshes.

Before the first import (no page has a key range yet) a tick counts the source, adds the
page partitions (ascending: Dagster orders dynamic partitions by insertion) and requests
runs that import every page. After it, a tick finds the pages that changed anywhere in the
source: it counts the source's rows in the key ranges of groups of GROUP_PAGES pages and
compares them with the table (one small request per group, one retry at most), then
counts page by page inside a group whose count differs, and requests runs for exactly
the changed pages (contiguous ones in one run). A page read again by its range takes in
inserts, updates and deletions; the last page, when it has grown past a page, is split
into new pages by its run. A tick that finds nothing says so, and so does one that cannot
reach the source or finds the database being written (shown in the UI's tick history).

What counts cannot see, as many rows inserted as deleted within one group, and changed
values, the nightly refresh catches: it reads every page again.

With OData change tracking (a source that applies ``odata.track-changes``, and
``ODATA_CHANGE_TRACKING`` not ``off``), once a full sync has taken a baseline, a tick reads
the source's changes since its delta link instead of counting: new and changed rows in full
and removed keys. It requests runs (tagged ``well_assets/sync=delta``) for exactly the pages
those changes fall in; the first of them stages the changes, each page applies its own in
its transaction, and the delta link moves on with the last one (``storage.tracking``).
Changes staged and not applied yet (a failed run) are requested again before the link is
read again. A tick with no changes skips and says so; an expired link (410 Gone) starts a
full re-sync (``well_assets/sync=resync``) that takes a new baseline.

The cursor (JSON) holds ``source``, ``page_size`` and a tick sequence number ``seq`` that
only moves when the sensor requests work; the run key (``odata-pages-<first>-<last>-seq<seq>``)
makes Dagster drop a repeat if a tick's cursor update was lost. A failed run is not retried
by the sensor: the next tick finds its pages still different and asks again.

Settings: ``WELL_ASSETS_SENSOR_INTERVAL`` (seconds between ticks, default 300).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass

import dagster as dg

from well_assets import storage
from well_assets.defs.jobs import odata_import_job, range_tags
from well_assets.defs.partitions import odata_pages
from well_assets.defs.resources import ODataResource, WellsDatabase
from well_assets.errors import ConfigError, DatabaseError, DeltaLinkExpired, WellAssetsError
from well_assets.names import SENSOR_NAME, SYNC_DELTA, SYNC_RESYNC, SYNC_TAG, TRIGGER_TAG
from well_assets.odata import ODataClient
from well_assets.pages.delta import PageLocator, place
from well_assets.pages.keys import MAX_PAGES_PER_RUN, blocks, missing_keys, page_count, page_key, range_problem, run_ranges
from well_assets.pages.ranges import changed_synced_pages
from well_assets.settings import Settings
from well_assets.storage import PageMap, tracking
from well_assets.storage.tracking import SyncState


# Pages per run applying delta changes: nothing is fetched page by page, so a run's pages
# cost little and one run (one start-up, one set of checks) takes the whole delta. A daily
# change touches every page under the key order.
DELTA_PAGES_PER_RUN = 10_000


@dataclass(frozen=True)
class TickPlan:
    """What one tick does: keys to add (ascending), page ranges to run, why, new cursor,
    and the tags of its runs beyond the page range's (how they sync)."""

    to_add: list[str]
    ranges: list[tuple[int, int]]
    reason: str
    cursor: dict | None  # None: keep the cursor as it is
    tags: dict = dataclasses.field(default_factory=dict)


def parse_cursor(raw: str | None) -> dict:
    if not raw:
        return {}
    try:
        value = json.loads(raw)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def plan_tick(cursor: dict, count: int, page_size: int, source: str, registered: list[str],
              max_pages_per_run: int = MAX_PAGES_PER_RUN) -> TickPlan:
    """The first import, from the source's count and the registered keys (in order)."""
    n_pages = page_count(count, page_size)
    to_add = missing_keys(registered, n_pages)
    seq = int(cursor.get("seq", 0)) + 1
    new_cursor = {"count": count, "page_size": page_size, "source": source, "seq": seq}
    pages_text = f"{count} rows in {n_pages} page(s) of {page_size}"
    if cursor.get("count") == count and cursor.get("source") == source and cursor.get("page_size") == page_size:
        return TickPlan([], [], f"first import already requested ({pages_text}); waiting for its runs", None)
    if n_pages == 0:
        return TickPlan(to_add, [], f"source is empty ({count} rows): nothing to import", new_cursor)
    problem = range_problem(registered + to_add, 0, n_pages - 1)
    if problem:
        return TickPlan([], [], problem, None)
    return TickPlan(to_add, run_ranges(0, n_pages - 1, max_pages_per_run), f"first import: {pages_text}", new_cursor)


def plan_sync(cursor: dict, mapped: PageMap, synced_rows: dict[int, int], client: ODataClient, page_size: int, source: str,
              registered: list[str]) -> TickPlan:
    """After the first import: the changed pages, and the pages a stopped import has not
    reached yet (when the last mapped page was never synced, the source's count says how
    many pages remain)."""
    changed, requests = changed_synced_pages(mapped, synced_rows, client.count_ranges)
    synced = [page for page, _lower, was_synced in mapped if was_synced]
    # Pages an import has not reached (a partial backfill, a stopped run) are imported too.
    changed = sorted(set(changed) | (set(range(mapped[-1][0] + 1)) - set(synced)))
    to_add: list[str] = []
    if not mapped[-1][2]:
        n_pages = max(mapped[-1][0] + 1, page_count(client.count(), page_size))
        requests += 1
        to_add = missing_keys(registered, n_pages)
        changed = sorted(set(changed) | set(range(mapped[-1][0], n_pages)))
    if not changed:
        return TickPlan([], [], f"source unchanged: {len(mapped)} page(s) checked with {requests} count request(s)",
                        None)
    reason = f"{len(changed)} page(s) to sync ({requests} count request(s)): {_shown(changed)}"
    seq = int(cursor.get("seq", 0)) + 1
    return TickPlan(to_add, blocks(changed, MAX_PAGES_PER_RUN), reason, {"source": source, "page_size": page_size, "seq": seq})


def plan_delta(cursor: dict, mapped: PageMap, state: SyncState, staged: list[int], client: ODataClient,
               source: str, page_size: int) -> TickPlan:
    """With a delta link: the pages that hold staged changes not applied yet, else the pages
    the changes since the delta link fall in (or every page, when the link expired)."""
    seq = int(cursor.get("seq", 0)) + 1
    new_cursor = {"source": source, "page_size": page_size, "seq": seq}
    delta_tags = {SYNC_TAG: SYNC_DELTA}
    if staged:
        return TickPlan([], blocks(staged, DELTA_PAGES_PER_RUN),
                        f"{state.staged_changes} staged delta change(s) in {len(staged)} page(s) not applied yet: "
                        + _shown(staged), new_cursor, delta_tags)
    try:
        delta = client.read_delta(state.delta_link)
    except DeltaLinkExpired:
        last = mapped[-1][0]
        return TickPlan([], run_ranges(0, last, MAX_PAGES_PER_RUN),
                        f"the delta link expired (the source no longer serves it): full re-sync of {last + 1} page(s), "
                        "which takes a new baseline", new_cursor, {SYNC_TAG: SYNC_RESYNC})
    if not delta.changed and not delta.removed:
        return TickPlan([], [], f"no changes at the source since the last sync (delta link read with "
                                f"{delta.requests} request(s))", None)
    locator = PageLocator(mapped)
    pages = sorted({change.page for change in place(delta.changed, delta.removed, client.config.key_names, locator)})
    return TickPlan([], blocks(pages, DELTA_PAGES_PER_RUN),
                    f"delta: {len(delta.changed)} new or changed and {len(delta.removed)} removed row(s) in "
                    f"{len(pages)} page(s) ({delta.requests} request(s)): " + _shown(pages), new_cursor, delta_tags)


def _shown(pages: list[int]) -> str:
    return ", ".join(page_key(p) for p in pages[:20]) + (" ..." if len(pages) > 20 else "")


def _delta_runs_active(instance: dg.DagsterInstance) -> bool:
    """Runs applying delta changes, queued or running: a tick waits for them (they apply
    what is staged; asking again would only start runs with nothing left to apply)."""
    active = [dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.NOT_STARTED, dg.DagsterRunStatus.STARTING,
              dg.DagsterRunStatus.STARTED]
    return bool(instance.get_run_records(dg.RunsFilter(tags={SYNC_TAG: SYNC_DELTA}, statuses=active), limit=1))


def sensor_client(odata: ODataResource) -> ODataClient:
    """A client for one quick count: one retry, short timeouts, no cache."""
    config = dataclasses.replace(
        odata.client_config(run_id="sensor"),
        max_retries=1,
        backoff_cap=2.0,
        read_timeout=min(odata.read_timeout, 15.0),
        connect_timeout=min(odata.connect_timeout, 5.0),
        max_retry_after=5.0,
        cache_dir=None,
    )
    return ODataClient(config)


def build_page_sensor(settings: Settings) -> dg.SensorDefinition:
    """`odata_page_sensor`, ticking every ``settings.sensor_interval`` seconds."""

    def odata_page_sensor(context: dg.SensorEvaluationContext, odata: ODataResource, wells_db: WellsDatabase):
        cursor = parse_cursor(context.cursor)
        try:
            source = odata.source_identity()
            mapped, synced_rows, state, staged = _table_state(wells_db, source)
            registered = list(context.instance.get_dynamic_partitions(odata_pages.name))
            tracked = odata.change_tracking_mode != "off" and state is not None and (state.delta_link or staged)
            if tracked and mapped and _delta_runs_active(context.instance):
                return dg.SkipReason("runs applying delta changes are queued or running; waiting for them")
            with sensor_client(odata) as client:
                if not any(synced for _page, _lower, synced in mapped):
                    plan = plan_tick(cursor, client.count(), odata.page_size, source, registered)
                elif tracked:
                    plan = plan_delta(cursor, mapped, state, staged, client, source, odata.page_size)
                else:
                    plan = plan_sync(cursor, mapped, synced_rows, client, odata.page_size, source, registered)
        except ConfigError as exc:
            return dg.SkipReason(f"invalid OData settings: {exc.message}")
        except DatabaseError as exc:
            return dg.SkipReason(f"the database cannot be read now (a run may be writing it): {exc.message}")
        except WellAssetsError as exc:
            return dg.SkipReason(f"source unreachable: {exc.code}: {exc.message}")
        context.log.info(f"{plan.reason}; adding {len(plan.to_add)} page key(s), requesting {len(plan.ranges)} run(s)")
        if not plan.ranges and not plan.to_add and plan.cursor is None:
            return dg.SkipReason(plan.reason)
        seq = (plan.cursor or {}).get("seq", 0)
        requests = [
            dg.RunRequest(
                run_key=f"odata-pages-{page_key(first)}-{page_key(last)}-seq{seq}",
                tags={**range_tags(first, last), TRIGGER_TAG: "sensor", **plan.tags},
            )
            for first, last in plan.ranges
        ]
        return dg.SensorResult(
            run_requests=requests,
            dynamic_partitions_requests=[odata_pages.build_add_request(plan.to_add)] if plan.to_add else [],
            cursor=json.dumps(plan.cursor) if plan.cursor is not None else context.cursor,
            skip_reason=None if requests else plan.reason,
        )

    return dg.sensor(
        name=SENSOR_NAME,
        job=odata_import_job,
        minimum_interval_seconds=settings.sensor_interval,
        default_status=dg.DefaultSensorStatus.STOPPED,
        description="Imports the source, then finds the pages that changed (counts per key range) and syncs them.",
    )(odata_page_sensor)


def _table_state(wells_db: WellsDatabase, source: str) -> tuple[list, dict, SyncState | None, list[int]]:
    """The page map, the source's count of each synced page's range at its sync, the
    change-tracking state and the pages with staged delta changes (empty before the first
    import). A tick does not wait for a run that holds the database: it tries again next
    time."""
    store = wells_db.store()
    if not store.path.exists():
        return [], {}, None, []
    quick = type(store)(store.path, lock_timeout=2.0)
    with quick.connection(read_only=True, lean=True) as con:
        if not storage.has_table(con, "odata_page_map"):
            return [], {}, None, []
        return (storage.page_map(con, source), storage.synced_source_rows(con, source),
                tracking.sync_state(con, source), tracking.staged_pages(con, source))
