"""`odata_nightly_refresh`: re-imports the tail pages, then runs the checks and the report.

The tail is where an offset-paged source changes most (late-arriving and corrected days
land at the end), so a nightly pass over the last pages keeps the table current without
a full re-import. Cron, timezone and tail length come from the environment.
"""

from __future__ import annotations

import os

import dagster as dg

from well_assets.errors import WellAssetsError
from well_assets.jobs import odata_import_job, range_tags
from well_assets.partitions import page_count, register_pages
from well_assets.resources import ODataResource

REFRESH_CRON = os.environ.get("WELL_ASSETS_REFRESH_CRON", "0 2 * * *")
REFRESH_TIMEZONE = os.environ.get("WELL_ASSETS_REFRESH_TIMEZONE", "UTC")
TAIL_PAGES = int(os.environ.get("WELL_ASSETS_REFRESH_TAIL_PAGES", "3"))


def tail_range(n_pages: int, tail: int) -> tuple[int, int] | None:
    if n_pages <= 0:
        return None
    return max(n_pages - tail, 0), n_pages - 1


@dg.schedule(
    cron_schedule=REFRESH_CRON,
    execution_timezone=REFRESH_TIMEZONE,
    job=odata_import_job,
    default_status=dg.DefaultScheduleStatus.STOPPED,
    description=(
        f"Nightly ({REFRESH_CRON} {REFRESH_TIMEZONE}): re-imports the last {TAIL_PAGES} OData "
        "pages (new and corrected rows land at the end), then runs the checks and the report."
    ),
)
def odata_nightly_refresh(context: dg.ScheduleEvaluationContext, odata: ODataResource):
    try:
        with odata.client(run_id="schedule") as client:
            count = client.count()
    except WellAssetsError as exc:
        return dg.SkipReason(f"source unreachable: {exc.code}: {exc.message}")
    n_pages = page_count(count, odata.page_size)
    register_pages(context.instance, n_pages)
    page_range = tail_range(n_pages, TAIL_PAGES)
    if page_range is None:
        return dg.SkipReason("source is empty: nothing to refresh")
    first, last = page_range
    return dg.RunRequest(
        run_key=None,
        tags={**range_tags(first, last), "well_assets/trigger": "schedule"},
    )
