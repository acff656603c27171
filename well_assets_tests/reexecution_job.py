"""A reconstructable `odata_import_job` for re-execution tests (settings from the environment)."""

from well_assets.defs.definitions import defs


def import_job():
    return defs().resolve_job_def("odata_import_job")
