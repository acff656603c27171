"""`odata_nightly_refresh`: re-imports the tail pages, then runs the checks and the report.

The tail is where an offset-paged source changes most (late-arriving and corrected days
land at the end), so a nightly pass over the last pages keeps the table current without
a full re-import; the job's asset checks and the import report run in the same run.
Growth beyond the tail between nights is the `odata_page_sensor`'s job; a full
re-import (`well-assets import`, or a backfill over all pages) catches rows inserted in
the middle of the source.

Settings (``settings.Settings``, read when the code location loads):
``WELL_ASSETS_REFRESH_CRON`` (default ``0 2 * * *``), ``WELL_ASSETS_REFRESH_TIMEZONE``
(IANA name, default ``UTC``), ``WELL_ASSETS_REFRESH_TAIL_PAGES`` (default 3).
"""

from __future__ import annotations

import dagster as dg

from well_assets.defs.jobs import odata_import_job, range_tags
from well_assets.defs.partitions import register_pages
from well_assets.defs.resources import ODataResource
from well_assets.defs.sensors import sensor_client
from well_assets.errors import ConfigError, WellAssetsError
from well_assets.names import SCHEDULE_NAME, TRIGGER_TAG
from well_assets.pages.keys import page_count, page_key, tail_range
from well_assets.settings import Settings


def build_nightly_refresh(settings: Settings) -> dg.ScheduleDefinition:
    """`odata_nightly_refresh` for the given settings (cron, time zone, tail pages)."""
    tail_pages = settings.refresh_tail_pages

    def odata_nightly_refresh(context: dg.ScheduleEvaluationContext, odata: ODataResource):
        try:
            with sensor_client(odata) as client:
                count = client.count()
        except ConfigError as exc:
            return dg.SkipReason(f"invalid OData settings: {exc.message}")
        except WellAssetsError as exc:
            return dg.SkipReason(f"source unreachable: {exc.code}: {exc.message}")
        n_pages = page_count(count, odata.page_size)
        page_range = tail_range(n_pages, tail_pages)
        if page_range is None:
            return dg.SkipReason(f"source is empty ({count} rows): nothing to refresh")
        # Schedules cannot return partition requests: register the keys the run needs
        # (all missing ones from 00000, ascending, so range runs resolve to the right pages).
        added = register_pages(context.instance, n_pages)
        if added:
            context.log.info(f"registered {len(added)} page key(s): {added[0]}..{added[-1]}")
        first, last = page_range
        when = context.scheduled_execution_time
        return dg.RunRequest(
            run_key=f"nightly-{when.isoformat()}-{page_key(first)}-{page_key(last)}" if when else None,
            tags={**range_tags(first, last), TRIGGER_TAG: "schedule"},
        )

    try:
        return dg.schedule(
            name=SCHEDULE_NAME,
            cron_schedule=settings.refresh_cron,
            execution_timezone=settings.refresh_timezone,
            job=odata_import_job,
            default_status=dg.DefaultScheduleStatus.STOPPED,
            description=(
                f"Nightly ({settings.refresh_cron} {settings.refresh_timezone}): re-imports the last "
                f"{tail_pages} OData pages, then runs the checks and the report."
            ),
        )(odata_nightly_refresh)
    except dg.DagsterInvalidDefinitionError as exc:  # a cron Dagster does not accept
        raise ConfigError("WELL_ASSETS_REFRESH_CRON", settings.refresh_cron,
                          f"a cron expression Dagster accepts ({exc})") from None
