"""The well-assets code location: every asset, check, job, sensor, schedule and resource.

Read this file to see the whole system. Dagster loads the code location by calling
``defs()`` (``@dg.definitions``), which reads the settings from the environment then:
nothing is read, started or connected when the module is imported.
"""

import dagster as dg

from well_assets.defs.assets import well_production, well_production_import_report
from well_assets.defs.checks import well_production_checks
from well_assets.defs.jobs import odata_import_job
from well_assets.defs.resources import ODataResource, resources_from_settings
from well_assets.defs.schedules import build_nightly_refresh
from well_assets.defs.sensors import build_page_sensor
from well_assets.settings import Settings


def build_definitions(settings: Settings, *, open_odata: ODataResource | None = None) -> dg.Definitions:
    """The code location for the given settings.

    ``open_odata``: an OData resource its caller already holds open (the CLI, for all the
    runs of one import): the runs use it as it is, so its page fetcher and demo service
    live for the whole command instead of starting again for every run."""
    resources = resources_from_settings(settings)
    if open_odata is not None:
        resources["odata"] = dg.ResourceDefinition.hardcoded_resource(open_odata, "the caller's open OData resource")
    return dg.Definitions(
        assets=[well_production, well_production_import_report],
        asset_checks=[well_production_checks],
        jobs=[odata_import_job],
        sensors=[build_page_sensor(settings)],
        schedules=[build_nightly_refresh(settings)],
        resources=resources,
    )


@dg.definitions
def defs() -> dg.Definitions:
    """The code location as Dagster loads it: settings from the environment."""
    return build_definitions(Settings.from_env())
