"""A real Dagster stack for the live tests: `dagster-webserver` + `dagster-daemon` (or
`dagster dev`) as subprocesses on a temporary DAGSTER_HOME holding the project's
dagster.yaml, the project's workspace.yaml, a DemoServer reached over loopback, and a
DuckDB file in tmp. Everything is driven over HTTP (GraphQL documents sent with httpx),
as the UI and any tool do.

The stack also watches its own process tree: every process it ever saw below the
webserver and the daemon is remembered, so a test can assert that nothing a run started
(run worker, step workers, page fetcher) is left, and that nothing at all is left after
the stack stopped.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

import duckdb
import httpx
import psutil

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
LOCATION = "well_assets"
REPOSITORY = "__repository__"
SELECTOR = {"repositoryLocationName": LOCATION, "repositoryName": REPOSITORY}
START_TIMEOUT = 180.0
RUN_TIMEOUT = 240.0
TERMINAL = ("SUCCESS", "FAILURE", "CANCELED")
CHECKS = ("well_production_reconciliation", "well_production_schema", "well_production_unique_keys")

# -- GraphQL documents ------------------------------------------------------------------

ADD_PAGE = """
mutation AddPage($page: String!) {
  addDynamicPartition(
    repositorySelector: {repositoryLocationName: "well_assets", repositoryName: "__repository__"}
    partitionsDefName: "odata_pages"
    partitionKey: $page
  ) { __typename ... on Error { message } }
}
"""

LAUNCH = """
mutation Launch($params: ExecutionParams!) {
  launchRun(executionParams: $params) {
    __typename
    ... on LaunchRunSuccess { run { runId status } }
    ... on Error { message }
    ... on RunConfigValidationInvalid { errors { message } }
  }
}
"""

# What the asset page's "Launch 1 run" sends (captured from the UI in a browser).
LAUNCH_PIPELINE_EXECUTION = """
mutation LaunchPipelineExecution($executionParams: ExecutionParams!) {
  launchPipelineExecution(executionParams: $executionParams) {
    __typename
    ... on LaunchRunSuccess { run { id pipelineName } }
    ... on PipelineNotFoundError { message }
    ... on InvalidSubsetError { message }
    ... on RunConfigValidationInvalid { errors { message } }
    ... on PythonError { message stack }
  }
}
"""

# What the asset page's "Launch backfill" sends, and what a job backfill sends.
LAUNCH_BACKFILL = """
mutation LaunchPartitionBackfill($backfillParams: LaunchBackfillParams!) {
  launchPartitionBackfill(backfillParams: $backfillParams) {
    __typename
    ... on LaunchBackfillSuccess { backfillId }
    ... on PartitionSetNotFoundError { message }
    ... on PartitionKeysNotFoundError { message }
    ... on PythonError { message stack }
    ... on Error { message }
  }
}
"""

BACKFILL_STATUS = """
query Backfill($id: String!) {
  partitionBackfillOrError(backfillId: $id) {
    __typename
    ... on PartitionBackfill { id status runs(limit: 100) { runId status tags { key value } } }
    ... on Error { message }
  }
}
"""

REEXECUTE = """
mutation Reexecute($params: ReexecutionParams!) {
  launchRunReexecution(reexecutionParams: $params) {
    __typename
    ... on LaunchRunSuccess { run { runId } }
    ... on PythonError { message stack }
    ... on Error { message }
  }
}
"""

TERMINATE = """
mutation Terminate($runId: String!) {
  terminateRun(runId: $runId, terminatePolicy: SAFE_TERMINATE) {
    __typename
    ... on TerminateRunSuccess { run { runId status } }
    ... on TerminateRunFailure { message }
    ... on PythonError { message }
  }
}
"""

RUN_RESULT = """
query Result($runId: ID!) {
  runOrError(runId: $runId) {
    __typename
    ... on Run {
      status
      jobName
      tags { key value }
      stepStats { stepKey status startTime endTime }
      assetMaterializations {
        assetKey { path }
        partition
        metadataEntries { label ... on JsonMetadataEntry { jsonString } }
      }
    }
    ... on Error { message }
  }
}
"""

RUNS = """
query Runs($filter: RunsFilter) {
  runsOrError(filter: $filter, limit: 100) {
    ... on Runs { results { runId status jobName tags { key value } } }
  }
}
"""

RUN_EVENTS = """
query Events($runId: ID!) {
  runOrError(runId: $runId) {
    ... on Run {
      eventConnection(limit: 10000) {
        events { __typename ... on MessageEvent { message stepKey timestamp } }
      }
    }
  }
}
"""

LOCATION_STATUS = """
{
  workspaceOrError {
    __typename
    ... on Workspace {
      locationEntries {
        name
        loadStatus
        locationOrLoadError { __typename ... on PythonError { message } }
      }
    }
  }
}
"""

POOL_SLOTS = """
{ instance { concurrencyLimits { concurrencyKey slotCount claimedSlots { runId stepKey } pendingSteps { runId stepKey } } } }
"""

SENSOR_STATE = """
query Sensor($selector: SensorSelector!) {
  sensorOrError(sensorSelector: $selector) { ... on Sensor { sensorState { id status } } }
}
"""
START_SENSOR = """
mutation Start($selector: SensorSelector!) {
  startSensor(sensorSelector: $selector) { __typename ... on Sensor { sensorState { id status } } ... on Error { message } }
}
"""
STOP_SENSOR = """
mutation Stop($id: String!) { stopSensor(id: $id) { __typename ... on StopSensorMutationResult { instigationState { status } } } }
"""
START_SCHEDULE = """
mutation Start($selector: ScheduleSelector!) {
  startSchedule(scheduleSelector: $selector) {
    __typename ... on ScheduleStateResult { scheduleState { id status } } ... on Error { message }
  }
}
"""
STOP_SCHEDULE = """
mutation Stop($id: String!) {
  stopRunningSchedule(id: $id) { __typename ... on ScheduleStateResult { scheduleState { status } } }
}
"""


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(what: str, probe: Callable[[], Any], timeout: float, interval: float = 0.5,
              on_timeout: Callable[[], str] = lambda: "") -> Any:
    """Polls ``probe`` until it returns something truthy; fails naming ``what``."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not after {timeout:g} s\n{on_timeout()}")
        time.sleep(interval)


# -- the stack --------------------------------------------------------------------------


class Stack:
    """The Dagster processes of one test session, on a temporary DAGSTER_HOME."""

    def __init__(self, tmp: Path, base_url: str | None, *, page_size: int, extra_env: dict[str, str] | None = None):
        self.tmp = tmp
        self.home = tmp / "dagster_home"
        self.home.mkdir()
        shutil.copy(ROOT / "dagster.yaml", self.home / "dagster.yaml")
        self.database = tmp / "wells.duckdb"
        self.cache = tmp / "odata-cache"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {k: v for k, v in os.environ.items() if not k.startswith(("ODATA_", "WELLS_", "DAGSTER_", "WELL_ASSETS_"))}
        env.update(
            DAGSTER_HOME=str(self.home),
            ODATA_PAGE_SIZE=str(page_size),
            WELLS_DATABASE=str(self.database),
            ODATA_CACHE_DIR=str(self.cache),
            DAGSTER_DISABLE_TELEMETRY="1",
            PYTHONUNBUFFERED="1",
            **(extra_env or {}),
        )
        if base_url:
            env["ODATA_BASE_URL"] = base_url
        self.env = env
        self.procs: list[tuple[str, subprocess.Popen, Path]] = []
        self.seen: dict[int, psutil.Process] = {}  # every process ever seen in the tree

    # -- processes ----------------------------------------------------------------------

    def spawn(self, name: str, *argv: str) -> subprocess.Popen:
        log = self.tmp / f"{name}.log"
        with open(log, "wb") as out:
            # SIGINT at its default whatever the caller ignores (a background shell starts
            # pytest with it ignored, and children inherit that): the Ctrl-C tests send it.
            proc = subprocess.Popen(argv, cwd=ROOT, env=self.env, stdout=out, stderr=subprocess.STDOUT,
                                    start_new_session=True, preexec_fn=_default_sigint)
        self.procs.append((name, proc, log))
        self.track()
        return proc

    def migrate(self) -> None:
        # Create the sqlite schema once before anything else opens it: processes that meet
        # an empty DAGSTER_HOME at the same moment race on alembic's version table.
        info = subprocess.run([str(BIN / "dagster"), "instance", "info"], cwd=ROOT, env=self.env,
                              capture_output=True, text=True, timeout=120)
        assert info.returncode == 0, f"dagster instance info failed:\n{info.stdout}\n{info.stderr}"
        self.instance_info = info.stdout

    def start(self) -> Stack:
        """dagster-webserver and dagster-daemon, as in production."""
        self.migrate()
        self.spawn("webserver", str(BIN / "dagster-webserver"), "-h", "127.0.0.1", "-p", str(self.port),
                   "-w", str(ROOT / "workspace.yaml"))
        self.spawn("daemon", str(BIN / "dagster-daemon"), "run", "-w", str(ROOT / "workspace.yaml"))
        self.wait_until_loaded()
        return self

    def start_dev(self) -> Stack:
        """`dagster dev` (webserver and daemon in one command), as a developer runs it."""
        self.migrate()
        self.spawn("dev", str(BIN / "dagster"), "dev", "-h", "127.0.0.1", "-p", str(self.port),
                   "-w", str(ROOT / "workspace.yaml"))
        self.wait_until_loaded()
        return self

    def wait_until_loaded(self) -> None:
        def up() -> bool:
            self.check_alive()
            try:
                return httpx.get(f"{self.url}/server_info", timeout=5).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for("webserver up", up, START_TIMEOUT, on_timeout=self.logs)

        def loaded() -> bool:
            entries = self.gql(LOCATION_STATUS)["workspaceOrError"]["locationEntries"]
            entry = next(e for e in entries if e["name"] == LOCATION)
            if entry["loadStatus"] != "LOADED":
                return False
            kind = (entry["locationOrLoadError"] or {}).get("__typename")
            assert kind == "RepositoryLocation", f"{entry}\n{self.logs()}"
            return True

        wait_for("code location loaded", loaded, START_TIMEOUT, on_timeout=self.logs)
        self.track()

    def check_alive(self) -> None:
        for name, proc, _ in self.procs:
            if proc.poll() is not None:
                raise AssertionError(f"{name} exited with {proc.returncode}\n{self.logs()}")

    def logs(self, tail: int = 6000) -> str:
        parts = []
        for name, _, log in self.procs:
            text = log.read_text(errors="replace") if log.exists() else ""
            parts.append(f"----- {name} log (last {tail} chars) -----\n{text[-tail:]}")
        return "\n".join(parts)

    def tree(self) -> list[psutil.Process]:
        """The live processes below (and including) the ones the stack started."""
        alive = []
        for _, proc, _ in self.procs:
            try:
                top = psutil.Process(proc.pid)
                alive += [top, *top.children(recursive=True)]
            except psutil.NoSuchProcess:
                continue
        return alive

    def track(self) -> list[psutil.Process]:
        current = self.tree()
        for process in current:
            self.seen.setdefault(process.pid, process)
        return current

    def run_processes(self) -> list[str]:
        """Processes that belong to runs (run workers, step workers, page fetchers):
        every spawned Python process below the stack except Dagster's own helpers."""
        left = []
        for process in self.track():
            try:
                cmdline = " ".join(process.cmdline())
            except psutil.Error:
                continue
            if "multiprocessing.spawn" in cmdline or "execute_run" in cmdline or "execute_step" in cmdline:
                left.append(f"{process.pid}: {cmdline[:160]}")
        return left

    def leftovers(self) -> list[str]:
        """Every process ever seen in the tree that still runs."""
        left = []
        for pid, process in self.seen.items():
            try:
                if process.is_running() and process.status() != psutil.STATUS_ZOMBIE:
                    left.append(f"{pid}: {' '.join(process.cmdline())[:160]}")
            except psutil.Error:
                continue
        return left

    def interrupt(self) -> None:
        """Ctrl-C, as a person stops `dagster dev` or the services in their terminals."""
        self.track()
        for _, proc, _ in self.procs:
            try:
                os.killpg(proc.pid, signal.SIGINT)
            except ProcessLookupError:
                pass

    def stop(self) -> None:
        """Stop everything, whatever state it is in (fixture teardown)."""
        self.track()
        for _, proc, _ in self.procs:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + 20
        for _, proc, _ in self.procs:
            try:
                proc.wait(timeout=max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                pass
        for _, proc, _ in self.procs:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait(timeout=10)
        for process in self.seen.values():
            try:
                process.kill()
            except psutil.Error:
                pass
        psutil.wait_procs(list(self.seen.values()), timeout=10)

    # -- GraphQL over plain HTTP --------------------------------------------------------

    def gql(self, query: str, variables: dict | None = None) -> dict:
        response = httpx.post(f"{self.url}/graphql", json={"query": query, "variables": variables or {}}, timeout=60)
        assert response.status_code == 200, f"HTTP {response.status_code}: {response.text[:2000]}"
        body = response.json()
        assert not body.get("errors"), body["errors"]
        return body["data"]

    def add_pages(self, first: int, last: int) -> None:
        for k in range(first, last + 1):
            result = self.gql(ADD_PAGE, {"page": f"{k:05d}"})["addDynamicPartition"]
            assert result["__typename"] in ("AddDynamicPartitionSuccess", "DuplicateDynamicPartitionError"), result

    def launch(self, first: int, last: int, job: str = "odata_import_job", trigger: str = "test-httpx") -> str:
        """The Launchpad's way: one run of a job for a page range (the range tags). For the
        implicit asset job ``__ASSET_JOB`` this is what each run of an asset backfill is."""
        selector = {**SELECTOR, "jobName": job}
        if job == "__ASSET_JOB":
            selector["assetSelection"] = [{"path": ["well_production"]}]
        params = {
            "selector": selector,
            "runConfigData": {},
            "executionMetadata": {"tags": [
                {"key": "dagster/asset_partition_range_start", "value": f"{first:05d}"},
                {"key": "dagster/asset_partition_range_end", "value": f"{last:05d}"},
                {"key": "well_assets/trigger", "value": trigger},
            ]},
        }
        result = self.gql(LAUNCH, {"params": params})["launchRun"]
        assert result["__typename"] == "LaunchRunSuccess", result
        return result["run"]["runId"]

    def materialize_partition(self, key: str) -> str:
        """Exactly what the asset page's Materialize sends for one partition: the implicit
        asset job with the asset and its checks, Dagster's default executor."""
        params = {
            "mode": "default",
            "executionMetadata": {"tags": [{"key": "dagster/partition", "value": key},
                                           {"key": "dagster/from_ui", "value": "true"}]},
            "runConfigData": "{}\n",
            "selector": {**SELECTOR, "pipelineName": "__ASSET_JOB", "assetSelection": [{"path": ["well_production"]}],
                         "assetCheckSelection": [{"name": n, "assetKey": {"path": ["well_production"]}} for n in CHECKS]},
        }
        result = self.gql(LAUNCH_PIPELINE_EXECUTION, {"executionParams": params})["launchPipelineExecution"]
        assert result["__typename"] == "LaunchRunSuccess", result
        return result["run"]["id"]

    def backfill_asset(self, keys: list[str]) -> str:
        """Exactly what the asset page's Materialize sends for several partitions."""
        params = {"tags": [{"key": "dagster/from_ui", "value": "true"}], "assetSelection": [{"path": ["well_production"]}],
                  "partitionNames": keys, "fromFailure": False}
        result = self.gql(LAUNCH_BACKFILL, {"backfillParams": params})["launchPartitionBackfill"]
        assert result["__typename"] == "LaunchBackfillSuccess", result
        return result["backfillId"]

    def backfill_job(self, keys: list[str], job: str = "odata_import_job") -> str:
        """A backfill of the job by partition names (Jobs > odata_import_job > Partitions)."""
        params = {"selector": {"repositorySelector": SELECTOR, "partitionSetName": f"{job}_partition_set"},
                  "partitionNames": keys, "fromFailure": False}
        result = self.gql(LAUNCH_BACKFILL, {"backfillParams": params})["launchPartitionBackfill"]
        assert result["__typename"] == "LaunchBackfillSuccess", result
        return result["backfillId"]

    def reexecute_from_failure(self, run_id: str) -> str:
        result = self.gql(REEXECUTE, {"params": {"parentRunId": run_id, "strategy": "FROM_FAILURE"}})
        result = result["launchRunReexecution"]
        assert result["__typename"] == "LaunchRunSuccess", result
        return result["run"]["runId"]

    def terminate(self, run_id: str) -> None:
        result = self.gql(TERMINATE, {"runId": run_id})["terminateRun"]
        assert result["__typename"] == "TerminateRunSuccess", result

    def result(self, run_id: str) -> dict:
        run = self.gql(RUN_RESULT, {"runId": run_id})["runOrError"]
        assert run["__typename"] == "Run", run
        return run

    def events(self, run_id: str) -> list[dict]:
        return self.gql(RUN_EVENTS, {"runId": run_id})["runOrError"]["eventConnection"]["events"]

    def runs(self, tags: dict[str, str] | None = None) -> list[dict]:
        variables = {"filter": {"tags": [{"key": k, "value": v} for k, v in (tags or {}).items()]}}
        return self.gql(RUNS, variables)["runsOrError"]["results"]

    def wait(self, run_id: str, timeout: float = RUN_TIMEOUT) -> dict:
        def ended() -> dict | None:
            self.check_alive()
            self.track()
            run = self.result(run_id)
            return run if run["status"] in TERMINAL else None

        return wait_for(f"run {run_id} to end", ended, timeout, interval=1.0, on_timeout=self.logs)

    def wait_backfill(self, backfill_id: str, keys: list[str], timeout: float = RUN_TIMEOUT) -> list[dict]:
        """The backfill's runs once runs covering ``keys`` were launched and all ended (the
        daemon marks the backfill completed up to 30 s later; that is not waited for)."""
        def covered(runs: list[dict]) -> set[str]:
            keys_seen: set[str] = set()
            for run in runs:
                tags = {t["key"]: t["value"] for t in run["tags"]}
                if "dagster/partition" in tags:
                    keys_seen.add(tags["dagster/partition"])
                elif "dagster/asset_partition_range_start" in tags:
                    first, last = tags["dagster/asset_partition_range_start"], tags["dagster/asset_partition_range_end"]
                    keys_seen.update(key for key in keys if first <= key <= last)
            return keys_seen

        def done() -> list[dict] | None:
            self.check_alive()
            self.track()
            backfill = self.gql(BACKFILL_STATUS, {"id": backfill_id})["partitionBackfillOrError"]
            assert backfill["__typename"] == "PartitionBackfill", backfill
            runs = backfill["runs"]
            if not set(keys) <= covered(runs) or any(run["status"] not in TERMINAL for run in runs):
                return None
            return runs

        return wait_for(f"backfill {backfill_id} to complete", done, timeout, interval=1.0, on_timeout=self.logs)

    def pool_slots(self) -> dict:
        limits = self.gql(POOL_SLOTS)["instance"]["concurrencyLimits"]
        return {entry["concurrencyKey"]: entry for entry in limits}

    def assert_runs_left_nothing(self, timeout: float = 30.0) -> None:
        """No run worker, step worker or page fetcher is alive, and no pool slot is held."""
        wait_for("run processes gone", lambda: not self.run_processes(), timeout,
                 on_timeout=lambda: "\n".join(self.run_processes()))

        def slots_free() -> bool:
            duckdb_pool = self.pool_slots().get("duckdb")
            return duckdb_pool is None or (not duckdb_pool["claimedSlots"] and not duckdb_pool["pendingSteps"])

        wait_for("duckdb pool slots free", slots_free, timeout, on_timeout=lambda: json.dumps(self.pool_slots()))

    def sensor_selector(self, name: str = "odata_page_sensor") -> dict:
        return {**SELECTOR, "sensorName": name}

    def start_sensor(self, name: str = "odata_page_sensor") -> str:
        result = self.gql(START_SENSOR, {"selector": self.sensor_selector(name)})["startSensor"]
        assert result["__typename"] == "Sensor", result
        return result["sensorState"]["id"]

    def stop_sensor(self, state_id: str) -> None:
        self.gql(STOP_SENSOR, {"id": state_id})

    def start_schedule(self, name: str = "odata_nightly_refresh") -> str:
        result = self.gql(START_SCHEDULE, {"selector": {**SELECTOR, "scheduleName": name}})["startSchedule"]
        assert result["__typename"] == "ScheduleStateResult", result
        return result["scheduleState"]["id"]

    def stop_schedule(self, state_id: str) -> None:
        self.gql(STOP_SCHEDULE, {"id": state_id})

    # -- the table ------------------------------------------------------------------------

    def wipe_database(self) -> None:
        """A fresh DuckDB file and response cache (no run may be active)."""
        for path in (self.database, Path(f"{self.database}.wal")):
            path.unlink(missing_ok=True)
        shutil.rmtree(self.cache, ignore_errors=True)


def report_summary(run: dict) -> dict | None:
    for event in run["assetMaterializations"]:
        if event["assetKey"]["path"] == ["well_production_import_report"]:
            for entry in event["metadataEntries"]:
                if entry["label"] == "summary_json":
                    return json.loads(entry["jsonString"])
    return None


def table_rows(database: Path) -> list[tuple]:
    con = duckdb.connect(str(database), read_only=True)
    try:
        return con.execute(
            "select well_code, production_date, oil_production, gas_production, water_production "
            "from well_production order by well_code, production_date"
        ).fetchall()
    finally:
        con.close()


def source_rows(server) -> list[tuple]:
    return sorted(
        (r["WellCode"], dt.date.fromisoformat(r["ProductionDate"]), r["OilProduction"], r["GasProduction"],
         r["WaterProduction"])
        for r in server.state.records()
    )


def page_rows(server, pages, page_size: int) -> list[tuple]:
    """The source's rows of the given pages (the source holds only valid rows here)."""
    rows = source_rows(server)
    return sorted(row for page in pages for row in rows[page * page_size:(page + 1) * page_size])
