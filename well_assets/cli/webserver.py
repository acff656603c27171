"""A small client of Dagster's GraphQL API: what `well-assets trigger` sends.

It reads the job's registered page keys, adds missing ones (``addDynamicPartition``),
launches runs with DagsterGraphQLClient, polls their status and reads the import
summary back from the report's metadata. docs/operations.md shows the same calls as
plain HTTP (curl).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from urllib.parse import urlsplit

from well_assets.errors import ConfigError, WellAssetsError
from well_assets.names import JOB_NAME, RANGE_END_TAG, RANGE_START_TAG, TRIGGER_TAG
from well_assets.names import REPORT_ASSET_NAME as REPORT_ASSET
from well_assets.pages.keys import PARTITIONS_NAME

SUMMARY_LABEL = "summary_json"

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

REPOSITORIES_QUERY = """
{ repositoriesOrError { __typename ... on RepositoryConnection { nodes { name location { name } } } } }
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


# --- GraphQL ---------------------------------------------------------------------------

class Webserver:
    """The few GraphQL operations the trigger needs, on top of DagsterGraphQLClient."""

    def __init__(self, endpoint: Endpoint, location: str, repository: str | None = None, timeout: int = 60):
        from dagster_graphql import DagsterGraphQLClient

        self.endpoint = endpoint
        self.location = location
        self.timeout = timeout
        self.client = DagsterGraphQLClient(
            endpoint.hostname,
            port_number=endpoint.port,
            use_https=endpoint.use_https,
            path_prefix=endpoint.path_prefix,
            timeout=timeout,
        )
        self.repository = repository or self._only_repository()

    def _unreachable(self, exc: Exception) -> TriggerError:
        cause = exc.__cause__ or exc
        text = str(cause).strip().splitlines()[0] if str(cause).strip() else type(cause).__name__
        return TriggerError(
            f"cannot talk to the Dagster webserver at {self.endpoint.url} ({type(cause).__name__}: "
            f"{text}); is `dagster dev` / dagster-webserver running there?",
            url=self.endpoint.url,
        )

    def execute(self, document: str, variables: dict | None = None) -> dict:
        """POST one GraphQL document to the webserver's public HTTP API (what curl does)."""
        import httpx

        try:
            response = httpx.post(self.endpoint.graphql_url, json={"query": document, "variables": variables or {}},
                                  timeout=self.timeout)
        except httpx.HTTPError as exc:
            raise self._unreachable(exc) from None
        try:
            body = response.json()
        except ValueError:
            body = None
        if not isinstance(body, dict) or ("data" not in body and "errors" not in body):
            raise TriggerError(f"{self.endpoint.graphql_url} answered HTTP {response.status_code} without a GraphQL "
                               "response; is it a Dagster webserver?", url=self.endpoint.url)
        if body.get("errors"):
            # GraphQL-level errors (bad document, resolver exception): show the server's message.
            messages = "; ".join(str(e.get("message", e)) for e in body["errors"])
            raise TriggerError(f"the webserver rejected the request: {messages}", url=self.endpoint.url)
        return body["data"]

    def _only_repository(self) -> str:
        """The name of the code location's one repository (a Definitions object's is
        Dagster's own name for it), asked of the webserver."""
        data = self.execute(REPOSITORIES_QUERY)["repositoriesOrError"]
        names = [r["name"] for r in data.get("nodes") or [] if r["location"]["name"] == self.location]
        if len(names) != 1:
            raise TriggerError(
                f"code location {self.location!r} has {len(names)} repositories on {self.endpoint.url} "
                f"({', '.join(names) or 'none'}); pass --location (and --repository when there are several)",
                location=self.location,
            )
        return names[0]

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
