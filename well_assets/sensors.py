"""`odata_page_sensor`: discovers new OData pages and imports them in one ranged run.

Each tick asks the source for its count. When it grew, the sensor adds the missing page
partitions (ascending) and requests ONE run covering the new pages plus the previously
last page, which was partial and may have gained rows. Its cursor holds the count and
page size it last acted on, so it never requests the same work twice.
"""

from __future__ import annotations

import json
import os

import dagster as dg

from well_assets.errors import WellAssetsError
from well_assets.jobs import odata_import_job, range_tags
from well_assets.partitions import odata_pages, page_count, page_key
from well_assets.resources import ODataResource

SENSOR_INTERVAL_SECONDS = int(os.environ.get("WELL_ASSETS_SENSOR_INTERVAL", "300"))


def plan_tick(cursor: dict, count: int, page_size: int, registered: set[str]) -> tuple[list[str], tuple[int, int] | None, str]:
    """Decides a tick: (keys to add, inclusive page range to run or None, reason)."""
    n_pages = page_count(count, page_size)
    to_add = [page_key(k) for k in range(n_pages) if page_key(k) not in registered]
    previous = cursor.get("count") if cursor.get("page_size") == page_size else None
    if previous is not None and count == previous:
        return [], None, f"source unchanged: {count} rows in {n_pages} page(s) of {page_size}"
    if n_pages == 0:
        return to_add, None, "source is empty: nothing to import"
    if previous is None:
        return to_add, (0, n_pages - 1), f"first import: {count} rows in {n_pages} page(s)"
    if count < previous:
        return to_add, None, f"source shrank from {previous} to {count} rows: rows are never deleted, nothing to import"
    old_pages = page_count(previous, page_size)
    # The old last page was partial unless the old count filled it exactly.
    first = old_pages - 1 if previous % page_size else old_pages
    first = max(first, 0)
    return to_add, (first, n_pages - 1), f"source grew from {previous} to {count} rows"


@dg.sensor(
    job=odata_import_job,
    minimum_interval_seconds=SENSOR_INTERVAL_SECONDS,
    default_status=dg.DefaultSensorStatus.STOPPED,
    description=(
        "When on: every few minutes asks the OData source for its row count, adds partitions for "
        "new pages and launches one import run for them (plus the previously partial last page)."
    ),
)
def odata_page_sensor(context: dg.SensorEvaluationContext, odata: ODataResource):
    try:
        with odata.client(run_id="sensor") as client:
            count = client.count()
    except WellAssetsError as exc:
        return dg.SkipReason(f"source unreachable: {exc.code}: {exc.message}")
    cursor = json.loads(context.cursor) if context.cursor else {}
    registered = set(context.instance.get_dynamic_partitions(odata_pages.name))
    to_add, page_range, reason = plan_tick(cursor, count, odata.page_size, registered)
    if page_range is None and not to_add:
        return dg.SkipReason(reason)
    new_cursor = json.dumps({"count": count, "page_size": odata.page_size})
    requests = []
    if page_range is not None:
        first, last = page_range
        requests.append(
            dg.RunRequest(
                run_key=f"pages-{first}-{last}-count-{count}-size-{odata.page_size}",
                tags={**range_tags(first, last), "well_assets/trigger": "sensor", "well_assets/reason": reason},
            )
        )
    context.log.info(f"{reason}; adding {len(to_add)} page(s)")
    return dg.SensorResult(
        run_requests=requests,
        dynamic_partitions_requests=[odata_pages.build_add_request(to_add)] if to_add else [],
        cursor=new_cursor,
        skip_reason=None if requests else reason,
    )
