"""The names the project's parts share, in one place: Dagster names and run tags.

Plain strings (no Dagster import), so the light entry points (the trigger, the demo
service) use the same names as the code location without loading it.
"""

from __future__ import annotations

from collections.abc import Mapping

# -- Dagster names (README "Names") ----------------------------------------------------
LOCATION_NAME = "well_assets"

ASSET_NAME = "well_production"
REPORT_ASSET_NAME = "well_production_import_report"
JOB_NAME = "odata_import_job"
PARTITIONS_NAME = "odata_pages"
SENSOR_NAME = "odata_page_sensor"
SCHEDULE_NAME = "odata_nightly_refresh"
POOL_NAME = "duckdb"

# -- run tags -------------------------------------------------------------------------------
RANGE_START_TAG = "dagster/asset_partition_range_start"
RANGE_END_TAG = "dagster/asset_partition_range_end"
BACKFILL_TAG = "dagster/backfill"
# Who started a run: cli, sensor, schedule, graphql (the trigger).
TRIGGER_TAG = "well_assets/trigger"
# One `well-assets import` command may launch several runs: they share this tag's value.
IMPORT_TAG = "well_assets/import"
# How a run syncs its pages: absent = read from the source (by offset or key range);
# SYNC_DELTA = apply the changes of the source's delta link; SYNC_RESYNC = read every page
# again because the delta link expired (the run drops it and takes a new baseline).
SYNC_TAG = "well_assets/sync"
SYNC_DELTA = "delta"
SYNC_RESYNC = "resync"


def import_id(tags: Mapping[str, str], run_id: str, root_run_id: str | None) -> str:
    """The import a run's pages belong to: the CLI command's, the backfill's, or the run
    group's (a run and its re-executions)."""
    return tags.get(IMPORT_TAG) or tags.get(BACKFILL_TAG) or root_run_id or run_id
