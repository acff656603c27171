"""A reconstructable `odata_import_job` for re-execution tests (settings from the environment)."""

from well_assets.definitions import build_definitions


def import_job():
    return build_definitions().resolve_job_def("odata_import_job")
