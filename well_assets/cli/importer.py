"""Runs an import through Dagster in this process: what `well-assets import` does.

It takes the plan (``cli.plan``: the pages, their runs, the first pages already being
read), registers the page partitions, and executes `odata_import_job` for the planned
pages in ranged runs (as many pages per run as the asset's backfill policy allows); the
report and the checks run once, in the last of them. With DAGSTER_HOME set the runs land
in that instance and show in the UI; otherwise a throwaway instance is used.
"""

from __future__ import annotations

import gc
import os
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

import dagster as dg

from well_assets.cli.plan import CLI_RUN_ID, ImportPlan, plan_import
from well_assets.defs.assets import well_production
from well_assets.defs.dagster_internals import one_planned_event_per_run, reuse_event_log_connection
from well_assets.defs.definitions import build_definitions
from well_assets.defs.jobs import range_tags
from well_assets.defs.partitions import register_pages
from well_assets.errors import WellAssetsError
from well_assets.names import IMPORT_TAG, TRIGGER_TAG
from well_assets.pages import progress
from well_assets.pages.fetcher import PageFetcher
from well_assets.reporting import summary as report
from well_assets.settings import Settings

QUIET_LOGGERS = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


@dataclass(frozen=True)
class ImportRequest:
    settings: Settings
    start_page: int = 0
    max_pages: int | None = None


@contextmanager
def _instance() -> Iterator[dg.DagsterInstance]:
    """DAGSTER_HOME's instance (the runs show in the UI), else a throwaway one that nobody
    looks at, made cheaper to write to (see defs.dagster_internals)."""
    if os.environ.get("DAGSTER_HOME"):
        with dg.DagsterInstance.get() as instance:
            yield instance
    else:
        with one_planned_event_per_run(), dg.DagsterInstance.ephemeral() as instance:
            reuse_event_log_connection(instance)
            yield instance


def run_import(request: ImportRequest, *, progress_bar: bool = False, fetcher: PageFetcher | None = None,
               planned: ImportPlan | None = None) -> dict:
    """Runs the import; ``fetcher``: a page fetcher the caller owns, else the resource starts
    one; ``planned``: the plan the caller made with that fetcher (a source with a URL), else
    it is made here once the OData resource is open."""
    defs = build_definitions(request.settings)
    store = defs.resources["wells_db"].store()  # plain settings, no EnvVar to resolve
    run_errors: list[str] = []
    from well_assets.cli.console import ProgressDisplay

    import_id = str(uuid.uuid4())  # the runs of this command are one import
    with _instance() as instance:
        # The command holds the OData resource open for all its runs (EnvVar secrets
        # resolved, the bundled demo service started when no URL is set, one page fetcher
        # for every run); leaving the block stops what the resource started.
        with dg.build_resources({"odata": defs.resources["odata"]}, instance=instance) as resources:
            odata = resources.odata
            if fetcher is not None:
                odata.use_page_fetcher(fetcher)
            plan = planned or plan_import(request.settings, odata.client_config(run_id=CLI_RUN_ID),
                                          odata.source_identity(), odata.page_fetcher(),
                                          request.start_page, request.max_pages)
            pages, runs = plan.pages, plan.runs
            job = build_definitions(request.settings, open_odata=odata).resolve_job_def("odata_import_job")
            display = ProgressDisplay(total_pages=len(pages), enabled=progress_bar)
            progress.subscribe(display)
            try:
                with display:
                    register_pages(instance, plan.n_pages)
                    _start_up_done()
                    page_job = pages_only_job(job) if len(runs) > 1 else job
                    for i, (first, last) in enumerate(runs):
                        last_run = i == len(runs) - 1
                        result = (job if last_run else page_job).execute_in_process(
                            instance=instance,
                            tags={**range_tags(first, last), TRIGGER_TAG: "cli", IMPORT_TAG: import_id},
                            run_config=QUIET_LOGGERS,
                            raise_on_error=False,
                        )
                        if not result.success:
                            run_errors.extend(_step_errors(result))
            finally:
                progress.unsubscribe(display)
    with store.connection(read_only=True, lean=True) as con:
        summary = report.import_summary(con, import_id)
    recorded = summary["data"]["pagination_summary"]["processed_pages"] + summary["data"]["pagination_summary"]["failed_pages"]
    if run_errors and (summary["success"] or recorded < len(pages)):
        # The run failed outside the page loop (e.g. the database could not be opened):
        # no ledger row explains it, so report the run's own error.
        raise RunFailed(run_errors)
    return summary


def _start_up_done() -> None:
    """The command turns the cyclic garbage collector off for its start-up (cli.main): the
    objects the start-up made (modules, Dagster's instance and definitions) move out of the
    collector's sight for good, every later collection and the one at exit skip them, and
    the collector is on again for the runs. A caller that left it on keeps it as it is."""
    if not gc.isenabled():
        gc.freeze()
        gc.enable()


def pages_only_job(job: dg.JobDefinition) -> dg.JobDefinition:
    """``job`` without the report and the checks: the runs of an import before its last
    one. The report and the checks cover the whole table and ledger, so running them once,
    after the last page range, gives the same result and saves them on every run but the
    last."""
    return job.get_subset(asset_selection={well_production.key}, asset_check_selection=set())


class RunFailed(WellAssetsError):
    """A Dagster run failed for a reason that is not a page's (see the message)."""

    def __init__(self, errors: list[str]) -> None:
        codes = [e.split(":", 1)[0].strip() for e in errors]
        self.code = next((c for c in codes if c in report.ERROR_CODES), "DATABASE_ERROR")
        super().__init__("import run failed: " + " | ".join(errors), errors=errors)


def _step_errors(result: dg.ExecuteInProcessResult) -> list[str]:
    messages = []
    for event in result.get_step_failure_events():
        error = event.step_failure_data.error
        if error is None:
            continue
        # Dagster wraps IO manager errors; the innermost cause is the project's own error.
        while error.cause is not None:
            error = error.cause
        # Its message starts with the (module-qualified) name of its class: drop that.
        prefix, sep, rest = error.message.strip().partition(": ")
        messages.append(rest if sep and prefix.rsplit(".", 1)[-1] == error.cls_name else error.message.strip())
    return messages
