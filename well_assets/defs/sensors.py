"""`odata_page_sensor`: discovers new OData pages and imports them in one ranged run.

Each tick asks the source for its row count (one small request, one retry at most, so a
dead source costs a tick seconds, not minutes). When the count grew, the sensor adds the
missing page partitions (ascending: Dagster orders dynamic partitions by insertion) and
requests ONE run covering the new pages plus the previously last page, which was partial
and may have gained rows (a run holds at most MAX_PAGES_PER_RUN pages, like a backfill,
so only a first import of a very large source is split into several runs). When nothing changed, or the source cannot be reached, the tick
is skipped with the reason (shown in the UI's tick history).

The cursor (JSON) holds what the sensor last acted on: ``count``, ``page_size``,
``source`` and a tick sequence number ``seq``. It only moves when the sensor requests
work, so the same work is never requested twice; the run key
(``odata-pages-<first>-<last>-seq<seq>``) also makes Dagster drop a repeat if a tick's
cursor update was lost. A failed run is not retried by the sensor: re-execute it from
the UI (or `well-assets trigger`) after fixing the cause.

Settings: ``WELL_ASSETS_SENSOR_INTERVAL`` (seconds between ticks, default 300, read with
every setting when the code location loads).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass

import dagster as dg

from well_assets.defs.assets import MAX_PAGES_PER_RUN
from well_assets.defs.jobs import odata_import_job, range_tags
from well_assets.defs.partitions import odata_pages
from well_assets.defs.resources import ODataResource
from well_assets.errors import ConfigError, WellAssetsError
from well_assets.names import SENSOR_NAME, TRIGGER_TAG
from well_assets.odata import ODataClient
from well_assets.pages.keys import missing_keys, page_count, page_key, range_problem, run_ranges
from well_assets.settings import Settings


@dataclass(frozen=True)
class TickPlan:
    """What one tick does: keys to add (ascending), page ranges to run, why, new cursor."""

    to_add: list[str]
    ranges: list[tuple[int, int]]
    reason: str
    cursor: dict | None  # None: keep the cursor as it is


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
    """Decides a tick from the cursor, the source's count and the registered keys (in order)."""
    n_pages = page_count(count, page_size)
    to_add = missing_keys(registered, n_pages)
    seq = int(cursor.get("seq", 0)) + 1
    new_cursor = {"count": count, "page_size": page_size, "source": source, "seq": seq}
    previous = cursor.get("count")
    pages_text = f"{count} rows in {n_pages} page(s) of {page_size}"

    if previous is not None and cursor.get("page_size") != page_size:
        return TickPlan([], [], (
            f"page size changed from {cursor.get('page_size')} to {page_size} since the last import: "
            "page keys would name other rows; nothing done. Import into a new database and DAGSTER_HOME, "
            "or restore ODATA_PAGE_SIZE"), None)
    if previous is not None and cursor.get("source", source) != source:
        previous = None  # another source (URL, entity set, filter): start over
        first_reason = f"source changed to {source}: importing all {pages_text}"
    else:
        first_reason = f"first import: {pages_text}"

    if previous is not None and count == previous:
        if to_add:  # keys deleted by hand: put them back, nothing to run
            return TickPlan(to_add, [], f"source unchanged ({pages_text}); re-added {len(to_add)} missing page key(s)", None)
        return TickPlan([], [], f"source unchanged: {pages_text}", None)
    if n_pages == 0:
        return TickPlan(to_add, [], f"source is empty ({count} rows): nothing to import", new_cursor)
    if previous is None:
        first = 0
        reason = first_reason
    elif count < previous:
        return TickPlan(to_add, [], (
            f"source shrank from {previous} to {count} rows ({n_pages} page(s)): rows are never deleted "
            "by an import, nothing to run"), new_cursor)
    else:
        # The previously last page is imported again: it was partial and may have gained
        # rows (when the old count filled it exactly, it is one cheap, idempotent page).
        first = max(page_count(previous, page_size) - 1, 0)
        reason = (f"source grew from {previous} to {count} rows: {len(to_add)} new page(s), "
                  f"importing pages {page_key(first)}..{page_key(n_pages - 1)}")
    ranges = run_ranges(first, n_pages - 1, max_pages_per_run)
    problem = range_problem(registered + to_add, first, n_pages - 1)
    if problem:
        return TickPlan([], [], problem, None)
    return TickPlan(to_add, ranges, reason, new_cursor)


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

    def odata_page_sensor(context: dg.SensorEvaluationContext, odata: ODataResource):
        try:
            with sensor_client(odata) as client:
                count = client.count()
            source = odata.source_identity()
        except ConfigError as exc:
            return dg.SkipReason(f"invalid OData settings: {exc.message}")
        except WellAssetsError as exc:
            return dg.SkipReason(f"source unreachable: {exc.code}: {exc.message}")
        registered = list(context.instance.get_dynamic_partitions(odata_pages.name))
        plan = plan_tick(parse_cursor(context.cursor), count, odata.page_size, source, registered)
        context.log.info(f"{plan.reason}; adding {len(plan.to_add)} page key(s), requesting {len(plan.ranges)} run(s)")
        if not plan.ranges and not plan.to_add and plan.cursor is None:
            return dg.SkipReason(plan.reason)
        seq = (plan.cursor or {}).get("seq", 0)
        requests = [
            dg.RunRequest(
                run_key=f"odata-pages-{page_key(first)}-{page_key(last)}-seq{seq}",
                tags={**range_tags(first, last), TRIGGER_TAG: "sensor"},
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
        description="Polls the OData count and imports new pages (plus the last partial one) in one ranged run.",
    )(odata_page_sensor)
