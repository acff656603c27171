"""`well-assets trigger`: launch `odata_import_job` for a page range over Dagster's GraphQL API.

This is what any tool (a scheduler, a CI job, `curl`) can do against a running
`dagster-webserver`; docs/operations.md shows the same calls as plain HTTP. It talks only
to the webserver, never to the OData source or DuckDB, so it runs anywhere the UI's URL
is reachable:

1. read the page partitions registered for the job (``partitionKeysOrError``);
2. with ``--max-pages``: add the missing page keys with ``addDynamicPartition``;
3. launch one run with the range tags ``dagster/asset_partition_range_start/end``
   (``DagsterGraphQLClient.submit_job_execution``) and print its run id;
4. with ``--wait``: poll the run's status until it ends, then read the import summary
   back from the ``summary_json`` metadata of the ``well_production_import_report``
   materialization of that run.

Page keys are always registered from ``00000`` upward without gaps: Dagster orders
dynamic partition keys by insertion, and a range run covers the keys between its two
ends in that order, so a key added below existing ones would put the wrong pages in a
later range.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any

from well_assets.cli.common import EXIT_FAILED, EXIT_OK, EXIT_USAGE, fail, whole_number
from well_assets.cli.webserver import (
    QUEUED_HINT_SECONDS,
    REPORT_ASSET,
    TERMINAL_STATUSES,
    TriggerError,
    Webserver,
    parse_endpoint,
)
from well_assets.errors import ConfigError, WellAssetsError
from well_assets.names import JOB_NAME, LOCATION_NAME, PARTITIONS_NAME
from well_assets.pages.keys import missing_keys, page_index, page_key, range_problem


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "trigger",
        help="launch odata_import_job for a page range through a running Dagster webserver (GraphQL)",
        description=(
            "Launches one run of odata_import_job for pages START..START+MAX-1 through the Dagster "
            "GraphQL API of a running webserver (the run is queued; dagster-daemon starts it) and "
            "prints the run id. With --max-pages the missing page partitions are added first "
            "(00000 upward, no gaps); without it the run covers the registered pages from "
            "--start-page on. With --wait it waits for the run and prints its status and the "
            "import summary."
        ),
    )
    p.add_argument("--url", default="http://127.0.0.1:3000",
                   help="the Dagster webserver, e.g. http://127.0.0.1:3000 (default) or https://host/prefix")
    p.add_argument("--start-page", default="0", help="first page to import (default 0)")
    p.add_argument("--max-pages", default=None,
                   help="number of pages to import; their partitions are added when missing "
                        "(default: every registered page from --start-page on)")
    p.add_argument("--wait", action="store_true",
                   help="wait for the run to finish; print its status and the import summary")
    p.add_argument("--timeout", default="3600",
                   help="seconds --wait waits before giving up (the run keeps going; default 3600)")
    p.add_argument("--location", default=LOCATION_NAME,
                   help=f"code location name (default {LOCATION_NAME}, as in workspace.yaml)")
    p.add_argument("--repository", default=None,
                   help="repository name (default: the code location's only repository, asked of the webserver)")
    p.add_argument("--json", action="store_true",
                   help="print one JSON object: run_id, pages, status and summary")


# --- argument validation -------------------------------------------------------------


def _positive_seconds(value: Any, flag: str) -> float:
    allowed = "a number of seconds > 0"
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ConfigError(flag, value, allowed) from None
    if not number > 0 or number == float("inf"):
        raise ConfigError(flag, value, allowed)
    return number


def _name(value: str, flag: str) -> str:
    if not value or not value.strip() or value.strip() != value:
        raise ConfigError(flag, value, "a non-empty name without surrounding spaces")
    return value


def plan_range(registered: list[str], start_page: int, max_pages: int | None) -> tuple[list[str], str, str]:
    """Returns (keys to add, first key, last key) for the request.

    Raises TriggerError when nothing is registered from start_page on (without
    --max-pages), or when the registered keys are not in ascending page order, which
    would make Dagster resolve the range to other pages.
    """
    if max_pages is not None:
        first, last = start_page, start_page + max_pages - 1
        to_add = missing_keys(registered, last + 1)
    else:
        to_add = []
        from_start = sorted(page_index(key) for key in registered if page_index(key) >= start_page)
        if not from_start:
            where = f"from page {start_page} on" if start_page else "at all"
            highest = f" (the last registered page is {max(registered)})" if registered else ""
            raise TriggerError(
                f"no page partitions of {PARTITIONS_NAME} are registered {where}{highest}: pass "
                f"--max-pages M to add and import M pages from {page_key(start_page)}, or register the source's "
                "pages first (turn on odata_page_sensor, or run `well-assets import` once with the same DAGSTER_HOME)",
                start_page=start_page,
            )
        first, last = from_start[0], from_start[-1]
    problem = range_problem(registered + to_add, first, last)
    if problem:
        raise TriggerError(problem, first=page_key(first), last=page_key(last))
    return to_add, page_key(first), page_key(last)


# --- the command ---------------------------------------------------------------------------

def _err(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def wait_for_run(server: Webserver, run_id: str, timeout: float, poll: float = 1.0) -> str:
    began = time.monotonic()
    hinted = False
    delay = 0.5
    while True:
        status = server.status(run_id)
        if status in TERMINAL_STATUSES:
            return status
        waited = time.monotonic() - began
        if status in ("QUEUED", "NOT_STARTED") and waited > QUEUED_HINT_SECONDS and not hinted:
            _err(f"run {run_id} still {status} after {waited:.0f} s: queued runs are started by "
                 "dagster-daemon (`dagster dev` runs one), or wait for a free slot of the run queue")
            hinted = True
        if waited > timeout:
            raise TriggerError(
                f"run {run_id} still {status} after {timeout:g} s (--timeout); it keeps running: "
                f"{server.endpoint.run_url(run_id)}",
                run_id=run_id,
                status=status,
            )
        time.sleep(delay)
        delay = min(delay * 1.5, poll * 5)


def run(args) -> int:
    try:
        endpoint = parse_endpoint(args.url)
        start_page = whole_number(args.start_page, "--start-page", 0)
        max_pages = whole_number(args.max_pages, "--max-pages", 1) if args.max_pages is not None else None
        timeout = _positive_seconds(args.timeout, "--timeout")
        location = _name(args.location, "--location")
        repository = _name(args.repository, "--repository") if args.repository is not None else None
    except WellAssetsError as exc:
        return fail(exc, args.json, EXIT_USAGE)

    result: dict[str, Any] = {}
    try:
        server = Webserver(endpoint, location, repository)
        registered = server.registered_keys()
        to_add, first, last = plan_range(registered, start_page, max_pages)
        if to_add:
            added = server.add_keys(to_add)
            _err(f"added {len(added)} page partition(s) to {PARTITIONS_NAME}: {to_add[0]}..{to_add[-1]}")
        run_id = server.launch(first, last)
        n_pages = int(last) - int(first) + 1
        result = {"run_id": run_id, "job": JOB_NAME, "pages": {"first": first, "last": last, "count": n_pages},
                  "url": endpoint.run_url(run_id)}
        if not args.json:
            print(run_id, flush=True)
        _err(f"launched {JOB_NAME} for pages {first}..{last} ({n_pages} page(s)): {endpoint.run_url(run_id)}")
        if not args.wait:
            if args.json:
                print(json.dumps(result, indent=2))
            return EXIT_OK
        status = wait_for_run(server, run_id, timeout)
        result["status"] = status
        result["summary"] = server.summary(run_id)
        if status != "SUCCESS":
            result["errors"] = server.failures(run_id)
    except WellAssetsError as exc:
        if result:
            exc.details.setdefault("run_id", result["run_id"])
        return fail(exc, args.json, EXIT_FAILED)

    summary = result["summary"]
    if args.json:
        print(json.dumps(result, indent=2, default=str))
    else:
        print(f"status: {status}")
        for message in result.get("errors", []):
            print(f"error: {message}")
        if summary is not None:
            print(f"summary: {summary.get('message', '')}")
            print(json.dumps(summary, indent=2, default=str))
        else:
            print(f"summary: none (the run did not materialize {REPORT_ASSET})")
    ok = status == "SUCCESS" and (summary is None or summary.get("success", True))
    return EXIT_OK if ok else EXIT_FAILED
