"""`odata_import_job`: the page import, its checks and the report, for a page range.

Launch it for a range of pages with the run tags
``dagster/asset_partition_range_start`` / ``..._end`` (the sensor, the schedule, the CLI
and `well-assets trigger` all do), or as a backfill from the UI.
"""

from __future__ import annotations

import dagster as dg

from well_assets.defs.assets import well_production, well_production_import_report
from well_assets.names import RANGE_END_TAG, RANGE_START_TAG
from well_assets.pages.keys import page_key

odata_import_job = dg.define_asset_job(
    name="odata_import_job",
    # Selecting the assets also selects their asset checks.
    selection=dg.AssetSelection.assets(well_production, well_production_import_report),
    # One process per run: every step of this job opens DuckDB and is in the `duckdb`
    # pool (limit 1), so steps never run in parallel anyway, and the multiprocess
    # executor's process per step cost ~10 s each (imports of polars, pandera, dagster):
    # a 5-page run through the daemon took ~70 s instead of ~18 s.
    executor_def=dg.in_process_executor,
    description=(
        "Imports a range of OData pages into DuckDB (one transaction per page), runs the "
        "asset checks and refreshes the import report. Launch with the range tags "
        "dagster/asset_partition_range_start/end, e.g. 00000..00149."
    ),
)


def range_tags(first_page: int, last_page: int) -> dict[str, str]:
    """Run tags selecting pages first_page..last_page (inclusive) in one run."""
    return {RANGE_START_TAG: page_key(first_page), RANGE_END_TAG: page_key(last_page)}

