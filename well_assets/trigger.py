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
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from well_assets.errors import ConfigError, WellAssetsError
from well_assets.page_keys import PARTITIONS_NAME, page_key

# Dagster's range tags (the same as well_assets.jobs; not imported from there so that the
# trigger does not load the asset code, polars and pandera just to send HTTP requests).
RANGE_START_TAG = "dagster/asset_partition_range_start"
RANGE_END_TAG = "dagster/asset_partition_range_end"

JOB_NAME = "odata_import_job"
LOCATION_NAME = "well_assets"
REPOSITORY_NAME = "__repository__"
REPORT_ASSET = "well_production_import_report"
SUMMARY_LABEL = "summary_json"
TRIGGER_TAG = "well_assets/trigger"

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
TERMINAL_STATUSES = ("SUCCESS", "FAILURE", "CANCELED")
ADD_BATCH = 100  # addDynamicPartition calls per GraphQL document (aliased, executed in order)
QUEUED_HINT_SECONDS = 60.0

JOB_PARTITION_KEYS_QUERY = """
query JobPartitionKeys($selector: PipelineSelector!) {
  pipelineOrError(params: $selector) {
    __typename
    ... on Pipeline { partitionKeysOrError { partitionKeys } }
    ... on Error { message }
  }
}
"""

RUN_STATUS_QUERY = """
query RunStatus($runId: ID!) {
  runOrError(runId: $runId) { __typename ... on Run { status } ... on Error { message } }
}
"""

RUN_RESULT_QUERY = """
query RunResult($runId: ID!) {
  runOrError(runId: $runId) {
    __typename
    ... on Run {
      status
      assetMaterializations {
        assetKey { path }
        metadataEntries { label ... on JsonMetadataEntry { jsonString } }
      }
    }
    ... on Error { message }
  }
}
"""

RUN_FAILURES_QUERY = """
query RunFailures($runId: ID!) {
  runOrError(runId: $runId) {
    ... on Run {
      eventConnection(limit: 10000) {
        events {
          __typename
          ... on ExecutionStepFailureEvent { stepKey error { message causes { message } } }
          ... on RunFailureEvent { message }
        }
      }
    }
  }
}
"""


class TriggerError(WellAssetsError):
    """The webserver refused or could not be reached; the message says what to do."""

    code = "TRIGGER_ERROR"


@dataclass(frozen=True)
class Endpoint:
    """The webserver's address split the way DagsterGraphQLClient wants it."""

    url: str  # normalized base URL, no trailing slash, no /graphql
    hostname: str
    port: int | None
    use_https: bool
    path_prefix: str

    @property
    def graphql_url(self) -> str:
        return f"{self.url}/graphql"

    def run_url(self, run_id: str) -> str:
        return f"{self.url}/runs/{run_id}"


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
    p.add_argument("--repository", default=REPOSITORY_NAME,
                   help=f"repository name (default {REPOSITORY_NAME}, the name of a Definitions object)")
    p.add_argument("--json", action="store_true",
                   help="print one JSON object: run_id, pages, status and summary")


# --- argument validation -------------------------------------------------------------

def parse_endpoint(value: str, flag: str = "--url") -> Endpoint:
    allowed = "an http:// or https:// URL of the Dagster webserver, e.g. http://127.0.0.1:3000"
    parts = urlsplit(value or "")
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment:
        raise ConfigError(flag, value, allowed)
    try:
        port = parts.port
    except ValueError:
        raise ConfigError(flag, value, allowed) from None
    prefix = parts.path.rstrip("/")
    if prefix.endswith("/graphql"):
        prefix = prefix[: -len("/graphql")]
    host = parts.hostname if ":" not in parts.hostname else f"[{parts.hostname}]"
    netloc = host + (f":{port}" if port else "")
    return Endpoint(
        url=f"{parts.scheme}://{netloc}{prefix}",
        hostname=host,
        port=port,
        use_https=parts.scheme == "https",
        path_prefix=prefix,
    )


def _whole_number(value: Any, flag: str, minimum: int) -> int:
    allowed = f"a whole number >= {minimum}"
    try:
        number = int(str(value).strip())
    except (TypeError, ValueError):
        raise ConfigError(flag, value, allowed) from None
    if number < minimum:
        raise ConfigError(flag, value, allowed)
    return number


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


# --- GraphQL ---------------------------------------------------------------------------

class Webserver:
    """The few GraphQL operations the trigger needs, on top of DagsterGraphQLClient."""

    def __init__(self, endpoint: Endpoint, location: str, repository: str, timeout: int = 60):
        from dagster_graphql import DagsterGraphQLClient

        self.endpoint = endpoint
        self.location = location
        self.repository = repository
        self.client = DagsterGraphQLClient(
            endpoint.hostname,
            port_number=endpoint.port,
            use_https=endpoint.use_https,
            path_prefix=endpoint.path_prefix,
            timeout=timeout,
        )

    def _unreachable(self, exc: Exception) -> TriggerError:
        cause = exc.__cause__ or exc
        text = str(cause).strip().splitlines()[0] if str(cause).strip() else type(cause).__name__
        return TriggerError(
            f"cannot talk to the Dagster webserver at {self.endpoint.url} ({type(cause).__name__}: "
            f"{text}); is `dagster dev` / dagster-webserver running there?",
            url=self.endpoint.url,
        )

    def execute(self, document: str, variables: dict | None = None) -> dict:
        from dagster_graphql import DagsterGraphQLClientError

        try:
            return self.client._execute(document, variables)
        except DagsterGraphQLClientError as exc:
            cause = exc.__cause__
            # GraphQL-level errors (bad document, resolver exception) come back as a
            # TransportQueryError with the server's message: show that, not the document.
            if cause is not None and type(cause).__name__ == "TransportQueryError":
                raise TriggerError(f"the webserver rejected the request: {cause}", url=self.endpoint.url) from None
            raise self._unreachable(exc) from None

    @property
    def repository_selector(self) -> dict:
        return {"repositoryLocationName": self.location, "repositoryName": self.repository}

    def registered_keys(self) -> list[str]:
        data = self.execute(
            JOB_PARTITION_KEYS_QUERY, {"selector": {**self.repository_selector, "pipelineName": JOB_NAME}}
        )["pipelineOrError"]
        if data["__typename"] != "Pipeline":
            raise TriggerError(
                f"job {JOB_NAME} not found in code location {self.location!r}, repository "
                f"{self.repository!r} ({data['__typename']}: {data.get('message', '')}); check --location "
                f"and --repository against the webserver's workspace",
                location=self.location,
                repository=self.repository,
            )
        return list(data["partitionKeysOrError"]["partitionKeys"])

    def add_keys(self, keys: list[str]) -> list[str]:
        """Adds keys in the given order; returns those that were new."""
        added: list[str] = []
        for first in range(0, len(keys), ADD_BATCH):
            batch = keys[first:first + ADD_BATCH]
            params = ", ".join(f"$k{i}: String!" for i in range(len(batch)))
            fields = "\n".join(
                f"  p{i}: addDynamicPartition(repositorySelector: $selector, partitionsDefName: $name, "
                f"partitionKey: $k{i}) {{ __typename ... on AddDynamicPartitionSuccess {{ partitionKey }} "
                f"... on Error {{ message }} }}"
                for i in range(len(batch))
            )
            document = f"mutation AddPages($selector: RepositorySelector!, $name: String!, {params}) {{\n{fields}\n}}"
            variables = {"selector": self.repository_selector, "name": PARTITIONS_NAME,
                         **{f"k{i}": key for i, key in enumerate(batch)}}
            data = self.execute(document, variables)
            for i, key in enumerate(batch):
                result = data[f"p{i}"]
                kind = result["__typename"]
                if kind == "AddDynamicPartitionSuccess":
                    added.append(key)
                elif kind != "DuplicateDynamicPartitionError":  # added meanwhile (sensor): fine
                    raise TriggerError(
                        f"could not add page partition {key} to {PARTITIONS_NAME}: {kind}: {result.get('message', '')}",
                        partition_key=key,
                    )
        return added

    def launch(self, first: str, last: str) -> str:
        from dagster_graphql import DagsterGraphQLClientError

        tags = {RANGE_START_TAG: first, RANGE_END_TAG: last, TRIGGER_TAG: "graphql"}
        try:
            return self.client.submit_job_execution(
                JOB_NAME,
                repository_location_name=self.location,
                repository_name=self.repository,
                run_config={},
                tags=tags,
            )
        except DagsterGraphQLClientError as exc:
            if exc.__cause__ is not None:
                raise self._unreachable(exc) from None
            detail = exc.body if exc.body is not None else ""
            raise TriggerError(f"the webserver refused to launch {JOB_NAME}: {exc.args[0]}: {detail}") from None

    def status(self, run_id: str) -> str:
        data = self.execute(RUN_STATUS_QUERY, {"runId": run_id})["runOrError"]
        if data["__typename"] != "Run":
            raise TriggerError(f"run {run_id} not found: {data.get('message', data['__typename'])}", run_id=run_id)
        return data["status"]

    def summary(self, run_id: str) -> dict | None:
        """The import summary of the run's report materialization, or None when there is none."""
        data = self.execute(RUN_RESULT_QUERY, {"runId": run_id})["runOrError"]
        if data.get("__typename") != "Run":
            return None
        for event in data.get("assetMaterializations") or []:
            if event["assetKey"]["path"] == [REPORT_ASSET]:
                for entry in event["metadataEntries"]:
                    if entry.get("label") == SUMMARY_LABEL and "jsonString" in entry:
                        return json.loads(entry["jsonString"])
        return None

    def failures(self, run_id: str) -> list[str]:
        data = self.execute(RUN_FAILURES_QUERY, {"runId": run_id})["runOrError"]
        events = ((data or {}).get("eventConnection") or {}).get("events") or []
        messages = []
        for event in events:
            if event["__typename"] == "ExecutionStepFailureEvent":
                error = event.get("error") or {}
                # The innermost cause is the project's own error (e.g. the failed pages).
                chain = [error.get("message") or ""] + [c.get("message") or "" for c in error.get("causes") or []]
                text = next((m.strip() for m in reversed(chain) if m.strip()), "failed")
                messages.append(f"{event['stepKey']}: {text}")
            elif event["__typename"] == "RunFailureEvent":
                messages.append(event.get("message", "run failed"))
        return messages


# --- planning ----------------------------------------------------------------------------

def plan_range(registered: list[str], start_page: int, max_pages: int | None) -> tuple[list[str], str, str]:
    """Returns (keys to add, first key, last key) for the request.

    Raises TriggerError when nothing is registered from start_page on (without
    --max-pages), or when the registered keys are not in ascending page order, which
    would make Dagster resolve the range to other pages.
    """
    if max_pages is not None:
        last_page = start_page + max_pages - 1
        present = set(registered)
        to_add = [page_key(k) for k in range(last_page + 1) if page_key(k) not in present]
        first, last = page_key(start_page), page_key(last_page)
    else:
        to_add = []
        from_start = [key for key in registered if int(key) >= start_page]
        if not from_start:
            where = f"from page {start_page} on" if start_page else "at all"
            highest = f" (the last registered page is {max(registered)})" if registered else ""
            raise TriggerError(
                f"no page partitions of {PARTITIONS_NAME} are registered {where}{highest}: pass "
                f"--max-pages M to add and import M pages from {page_key(start_page)}, or register the source's pages first (turn on odata_page_sensor, or run "
                f"`well-assets import` once with the same DAGSTER_HOME)",
                start_page=start_page,
            )
        first, last = page_key(start_page), max(from_start)
        if first not in registered:
            first = min(from_start)
    final = registered + to_add
    lo, hi = final.index(first), final.index(last)
    covered = final[lo:hi + 1]
    expected = [page_key(k) for k in range(int(first), int(last) + 1)]
    if covered != expected:
        raise TriggerError(
            f"the registered {PARTITIONS_NAME} keys are not contiguous and in ascending page order over "
            f"{first}..{last} (Dagster orders dynamic partitions by insertion), so a range run would "
            f"cover other pages; delete and re-add the keys in order (Dagster UI > Partitions)",
            first=first,
            last=last,
        )
    return to_add, first, last


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
        start_page = _whole_number(args.start_page, "--start-page", 0)
        max_pages = _whole_number(args.max_pages, "--max-pages", 1) if args.max_pages is not None else None
        timeout = _positive_seconds(args.timeout, "--timeout")
        location = _name(args.location, "--location")
        repository = _name(args.repository, "--repository")
    except WellAssetsError as exc:
        return _fail(exc, args.json, EXIT_USAGE)

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
        return _fail(exc, args.json, EXIT_FAILED)

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


def _fail(exc: WellAssetsError, as_json: bool, code: int) -> int:
    if as_json:
        print(json.dumps(exc.to_dict(), indent=2, default=str))
    else:
        print(f"error: {exc.code}: {exc.message}", file=sys.stderr)
    return code
