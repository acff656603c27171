"""`odata_nightly_refresh`: re-imports the tail pages, then runs the checks and the report.

The tail is where an offset-paged source changes most (late-arriving and corrected days
land at the end), so a nightly pass over the last pages keeps the table current without
a full re-import; the job's asset checks and the import report run in the same run.
Growth beyond the tail between nights is the `odata_page_sensor`'s job; a full
re-import (`well-assets import`, or a backfill over all pages) catches rows inserted in
the middle of the source.

Settings (environment, read when the code location loads):
``WELL_ASSETS_REFRESH_CRON`` (default ``0 2 * * *``), ``WELL_ASSETS_REFRESH_TIMEZONE``
(IANA name, default ``UTC``), ``WELL_ASSETS_REFRESH_TAIL_PAGES`` (default 3).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import dagster as dg
from dagster._utils.schedules import is_valid_cron_string

from well_assets.errors import ConfigError, WellAssetsError
from well_assets.jobs import odata_import_job, range_tags
from well_assets.names import TRIGGER_TAG
from well_assets.partitions import page_count, page_key, register_pages
from well_assets.resources import ODataResource
from well_assets.sensors import sensor_client



@dataclass(frozen=True)
class RefreshSettings:
    cron: str = "0 2 * * *"
    timezone: str = "UTC"
    tail_pages: int = 3

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> "RefreshSettings":
        env = os.environ if env is None else env
        cron = env.get("WELL_ASSETS_REFRESH_CRON", cls.cron)
        if not is_valid_cron_string(cron):
            raise ConfigError("WELL_ASSETS_REFRESH_CRON", cron,
                              "a cron expression with 5 fields, e.g. '0 2 * * *' (02:00 every day)")
        timezone = env.get("WELL_ASSETS_REFRESH_TIMEZONE", cls.timezone)
        try:
            ZoneInfo(timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise ConfigError("WELL_ASSETS_REFRESH_TIMEZONE", timezone,
                              "an IANA time zone name, e.g. UTC, Europe/Oslo, America/Chicago") from None
        raw_tail = env.get("WELL_ASSETS_REFRESH_TAIL_PAGES", str(cls.tail_pages))
        try:
            tail = int(raw_tail)
        except (TypeError, ValueError):
            tail = 0
        if not 1 <= tail <= 1000:
            raise ConfigError("WELL_ASSETS_REFRESH_TAIL_PAGES", raw_tail, "a whole number of pages from 1 to 1000")
        return cls(cron=cron, timezone=timezone, tail_pages=tail)


REFRESH = RefreshSettings.from_env()
# Kept for readers of the old names.
REFRESH_CRON, REFRESH_TIMEZONE, TAIL_PAGES = REFRESH.cron, REFRESH.timezone, REFRESH.tail_pages


def tail_range(n_pages: int, tail: int) -> tuple[int, int] | None:
    """The last `tail` pages of `n_pages` (inclusive bounds), None for an empty source."""
    if n_pages <= 0:
        return None
    return max(n_pages - tail, 0), n_pages - 1


@dg.schedule(
    cron_schedule=REFRESH.cron,
    execution_timezone=REFRESH.timezone,
    job=odata_import_job,
    default_status=dg.DefaultScheduleStatus.STOPPED,
    description=(
        f"Nightly ({REFRESH.cron} {REFRESH.timezone}): re-imports the last {REFRESH.tail_pages} OData "
        "pages, then runs the checks and the report."
    ),
)
def odata_nightly_refresh(context: dg.ScheduleEvaluationContext, odata: ODataResource):
    try:
        with sensor_client(odata) as client:
            count = client.count()
    except ConfigError as exc:
        return dg.SkipReason(f"invalid OData settings: {exc.message}")
    except WellAssetsError as exc:
        return dg.SkipReason(f"source unreachable: {exc.code}: {exc.message}")
    n_pages = page_count(count, odata.page_size)
    page_range = tail_range(n_pages, REFRESH.tail_pages)
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
