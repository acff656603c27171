"""The well-assets code location: every asset, check, job, sensor, schedule and resource.

Read this file to see the whole system. Settings come from the environment
(README "Settings"); with ODATA_BASE_URL unset the bundled demo service is used.
"""

import dagster as dg

from well_assets.assets import well_production, well_production_import_report
from well_assets.checks import well_production_checks
from well_assets.jobs import odata_import_job
from well_assets.resources import ODataResource, resources_from_env
from well_assets.schedules import odata_nightly_refresh
from well_assets.sensors import odata_page_sensor
from well_assets.settings import Settings


def build_definitions(settings: Settings | None = None, *, open_odata: ODataResource | None = None) -> dg.Definitions:
    """The code location for the given settings (default: from the environment).

    ``open_odata``: an OData resource its caller already holds open (the CLI, for all the
    runs of one import): the runs use it as it is, so its page fetcher and demo service
    live for the whole command instead of starting again for every run."""
    resources = resources_from_env(settings)
    if open_odata is not None:
        resources["odata"] = dg.ResourceDefinition.hardcoded_resource(open_odata, "the caller's open OData resource")
    return dg.Definitions(
        assets=[well_production, well_production_import_report],
        asset_checks=well_production_checks,
        jobs=[odata_import_job],
        sensors=[odata_page_sensor],
        schedules=[odata_nightly_refresh],
        resources=resources,
    )


defs = build_definitions()
