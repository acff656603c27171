"""`odata_nightly_refresh`: reads every page again, then runs the checks and the report.

What the sensor's counts cannot see (changed values; as many rows inserted as deleted in
one group of pages) a nightly pass over every page by its key range catches: each page
takes in the source's inserts, updates and deletions; the last page, grown past a page, is
split. The pages go in runs of at most MAX_PAGES_PER_RUN (like a backfill); the last run
also runs the asset checks and the report. Before the first import it imports every page.

Settings (``settings.Settings``, read when the code location loads):
``WELL_ASSETS_REFRESH_CRON`` (default ``0 2 * * *``) and ``WELL_ASSETS_REFRESH_TIMEZONE``
(IANA name, default ``UTC``).
"""

from __future__ import annotations

import dagster as dg

from well_assets.defs.jobs import odata_import_job, range_tags
from well_assets.defs.partitions import odata_pages, register_pages
from well_assets.defs.resources import ODataResource
from well_assets.defs.sensors import sensor_client
from well_assets.errors import ConfigError, WellAssetsError
from well_assets.names import SCHEDULE_NAME, TRIGGER_TAG
from well_assets.pages.keys import MAX_PAGES_PER_RUN, page_count, page_key, range_problem, run_ranges
from well_assets.settings import Settings


def build_nightly_refresh(settings: Settings) -> dg.ScheduleDefinition:
    """`odata_nightly_refresh` for the given settings (cron, time zone)."""

    def odata_nightly_refresh(context: dg.ScheduleEvaluationContext, odata: ODataResource):
        registered = context.instance.get_dynamic_partitions(odata_pages.name)
        if not registered:  # never imported: register the source's pages first
            try:
                with sensor_client(odata) as client:
                    count = client.count()
            except ConfigError as exc:
                return dg.SkipReason(f"invalid OData settings: {exc.message}")
            except WellAssetsError as exc:
                return dg.SkipReason(f"source unreachable: {exc.code}: {exc.message}")
            # Schedules cannot return partition requests: register the keys the runs need
            # (ascending, so range runs resolve to the right pages).
            registered = register_pages(context.instance, page_count(count, odata.page_size))
            if not registered:
                return dg.SkipReason(f"source is empty ({count} rows): nothing to refresh")
        n_pages = len(registered)
        problem = range_problem(list(registered), 0, n_pages - 1)
        if problem:
            return dg.SkipReason(problem)
        when = context.scheduled_execution_time
        return [
            dg.RunRequest(
                run_key=f"nightly-{when.isoformat()}-{page_key(first)}-{page_key(last)}" if when else None,
                tags={**range_tags(first, last), TRIGGER_TAG: "schedule"},
            )
            for first, last in run_ranges(0, n_pages - 1, MAX_PAGES_PER_RUN)
        ]

    try:
        return dg.schedule(
            name=SCHEDULE_NAME,
            cron_schedule=settings.refresh_cron,
            execution_timezone=settings.refresh_timezone,
            job=odata_import_job,
            default_status=dg.DefaultScheduleStatus.STOPPED,
            description=(
                f"Nightly ({settings.refresh_cron} {settings.refresh_timezone}): reads every OData page again "
                "by its key range (inserts, updates, deletions), then runs the checks and the report."
            ),
        )(odata_nightly_refresh)
    except dg.DagsterInvalidDefinitionError as exc:  # a cron Dagster does not accept
        raise ConfigError("WELL_ASSETS_REFRESH_CRON", settings.refresh_cron,
                          f"a cron expression Dagster accepts ({exc})") from None
