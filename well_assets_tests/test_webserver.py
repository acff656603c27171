"""End to end through a real `dagster-webserver` and `dagster-daemon` (subprocesses).

The stack: a DemoServer started by the test (5000 rows, page size 1000) reached over
loopback through ODATA_BASE_URL, a temporary DAGSTER_HOME holding the project's
dagster.yaml, the project's workspace.yaml, and a DuckDB file in tmp. Runs are launched
over HTTP exactly as any tool would: plain httpx POSTs of GraphQL documents (the same
documents as the curl examples in docs/operations.md), and `well-assets trigger --wait`
as a subprocess (a grown source; a run failed by a broken page, then repaired). The table is then opened read-only and compared row by row with the
demo service's data.

One stack serves the module (starting it costs ~30 s on a small machine).
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
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import duckdb
import httpx
import psutil
import pytest

from well_assets.storage import latest_page_status

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
ROWS = 5000
PAGE_SIZE = 1000
SELECTOR = {"repositoryLocationName": "well_assets", "repositoryName": "__repository__"}
START_TIMEOUT = 180.0
RUN_TIMEOUT = 300.0

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

RUN_RESULT = """
query Result($runId: ID!) {
  runOrError(runId: $runId) {
    __typename
    ... on Run {
      status
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

INSTIGATORS = """
{
  sensorsOrError(repositorySelector: {repositoryLocationName: "well_assets", repositoryName: "__repository__"}) {
    ... on Sensors { results { name description minIntervalSeconds sensorState { status } } }
  }
  schedulesOrError(repositorySelector: {repositoryLocationName: "well_assets", repositoryName: "__repository__"}) {
    ... on Schedules { results { name cronSchedule executionTimezone description scheduleState { status } } }
  }
}
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Stack:
    """dagster-webserver + dagster-daemon on a temporary DAGSTER_HOME."""

    def __init__(self, tmp: Path, base_url: str):
        self.tmp = tmp
        self.home = tmp / "dagster_home"
        self.home.mkdir()
        shutil.copy(ROOT / "dagster.yaml", self.home / "dagster.yaml")
        self.database = tmp / "wells.duckdb"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {k: v for k, v in os.environ.items() if not k.startswith(("ODATA_", "WELLS_", "DAGSTER_"))}
        env.update(
            DAGSTER_HOME=str(self.home),
            ODATA_BASE_URL=base_url,
            ODATA_PAGE_SIZE=str(PAGE_SIZE),
            WELLS_DATABASE=str(self.database),
            ODATA_CACHE_DIR=str(tmp / "odata-cache"),
            DAGSTER_DISABLE_TELEMETRY="1",
            PYTHONUNBUFFERED="1",
        )
        self.env = env
        self.procs: list[tuple[str, subprocess.Popen, Path]] = []

    def spawn(self, name: str, *argv: str) -> None:
        log = self.tmp / f"{name}.log"
        with open(log, "wb") as out:
            proc = subprocess.Popen(argv, cwd=ROOT, env=self.env, stdout=out, stderr=subprocess.STDOUT,
                                    start_new_session=True)
        self.procs.append((name, proc, log))

    def start(self) -> None:
        # Create the sqlite schema once before anything else opens it: processes that
        # meet an empty DAGSTER_HOME at the same moment race on alembic's version table
        # ("more than one head present"). This also proves dagster.yaml loads.
        info = subprocess.run([str(BIN / "dagster"), "instance", "info"], cwd=ROOT, env=self.env,
                              capture_output=True, text=True, timeout=120)
        assert info.returncode == 0, f"dagster instance info failed:\n{info.stdout}\n{info.stderr}"
        assert "max_concurrent_runs: 4" in info.stdout and "default_limit: 1" in info.stdout, info.stdout
        self.spawn("webserver", str(BIN / "dagster-webserver"), "-h", "127.0.0.1", "-p", str(self.port),
                   "-w", str(ROOT / "workspace.yaml"))
        self.spawn("daemon", str(BIN / "dagster-daemon"), "run", "-w", str(ROOT / "workspace.yaml"))
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            self.check_alive()
            try:
                if httpx.get(f"{self.url}/server_info", timeout=5).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"webserver not up after {START_TIMEOUT} s\n{self.logs()}")
            time.sleep(0.5)
        while True:  # the code location must have loaded (a load error fails fast, with its message)
            entries = self.gql(LOCATION_STATUS)["workspaceOrError"]["locationEntries"]
            entry = next(e for e in entries if e["name"] == "well_assets")
            if entry["loadStatus"] == "LOADED":
                loaded = entry["locationOrLoadError"] or {}
                assert loaded.get("__typename") == "RepositoryLocation", f"{loaded}\n{self.logs()}"
                break
            if time.monotonic() > deadline:
                raise AssertionError(f"code location not loaded after {START_TIMEOUT} s\n{self.logs()}")
            time.sleep(0.5)

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

    def stop(self) -> None:
        procs = [p for _, p, _ in self.procs]
        family = []
        for proc in procs:  # children (code servers, run workers) may leave the group
            try:
                family += psutil.Process(proc.pid).children(recursive=True)
            except psutil.NoSuchProcess:
                pass
        for proc in procs:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + 20
        for proc in procs:
            try:
                proc.wait(timeout=max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                pass
        for proc in procs:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait(timeout=10)
        for child in family:
            try:
                child.kill()
            except psutil.NoSuchProcess:
                pass
        psutil.wait_procs(family, timeout=10)

    # -- GraphQL over plain HTTP ------------------------------------------------------

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

    def launch(self, first: int, last: int) -> str:
        params = {
            "selector": {**SELECTOR, "jobName": "odata_import_job"},
            "runConfigData": {},
            "executionMetadata": {"tags": [
                {"key": "dagster/asset_partition_range_start", "value": f"{first:05d}"},
                {"key": "dagster/asset_partition_range_end", "value": f"{last:05d}"},
                {"key": "well_assets/trigger", "value": "test-httpx"},
            ]},
        }
        result = self.gql(LAUNCH, {"params": params})["launchRun"]
        assert result["__typename"] == "LaunchRunSuccess", result
        return result["run"]["runId"]

    def result(self, run_id: str) -> dict:
        run = self.gql(RUN_RESULT, {"runId": run_id})["runOrError"]
        assert run["__typename"] == "Run", run
        return run

    def wait(self, run_id: str, timeout: float = RUN_TIMEOUT) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            run = self.result(run_id)
            if run["status"] in ("SUCCESS", "FAILURE", "CANCELED"):
                return run
            self.check_alive()
            if time.monotonic() > deadline:
                raise AssertionError(f"run {run_id} still {run['status']} after {timeout} s\n{self.logs()}")
            time.sleep(1)


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


@pytest.fixture(scope="module")
def source():
    from well_assets.demo_service import DemoServer, DemoServiceConfig

    with DemoServer(DemoServiceConfig(rows=ROWS, days_per_well=500, max_page_size=PAGE_SIZE)) as server:
        yield server


@pytest.fixture(scope="module")
def stack(source, tmp_path_factory):
    stack = Stack(tmp_path_factory.mktemp("stack"), source.base_url)
    try:
        stack.start()
        yield stack
    finally:
        stack.stop()


@pytest.fixture
def diagnose(stack):
    """Prints the webserver's and daemon's logs after the test: pytest shows them only
    when the test failed (output captured during teardown of a passing test is dropped)."""
    yield
    print(stack.logs(), file=sys.stderr)


def test_two_runs_launched_at_once_over_http_both_succeed_and_the_table_is_exact(stack, source, diagnose):
    stack.add_pages(0, 4)
    # Overlapping ranges, launched at the same moment: the `duckdb` pool (limit 1) makes
    # the writers take turns; the file lock is never contended.
    with ThreadPoolExecutor(max_workers=2) as pool:
        run_ids = list(pool.map(lambda r: stack.launch(*r), [(0, 2), (2, 4)]))
    runs = [stack.wait(run_id) for run_id in run_ids]
    for run_id, run in zip(run_ids, runs):
        assert run["status"] == "SUCCESS", f"run {run_id}: {run['status']}\n{stack.logs()}"

    # Each run imported its pages (per-page materializations) and refreshed the report.
    parts = [sorted(e["partition"] for e in run["assetMaterializations"] if e["assetKey"]["path"] == ["well_production"])
             for run in runs]
    assert parts == [["00000", "00001", "00002"], ["00002", "00003", "00004"]]
    summaries = [report_summary(run) for run in runs]
    assert all(s and s["success"] for s in summaries), summaries
    # The report covers the latest outcome of every registered page: the later run's sees all 5.
    final = max(summaries, key=lambda s: s["data"]["pagination_summary"]["processed_pages"])
    assert final["data"]["pagination_summary"]["processed_pages"] == 5
    assert final["data"]["batch_result"]["processed_items"] == ROWS
    assert final["data"]["import_summary"]["new_records"] + final["data"]["import_summary"]["duplicate_records"] == ROWS

    # The pool serialized the two runs' DuckDB steps: no two of them overlapped in time.
    windows = sorted((s["startTime"], s["endTime"], s["stepKey"]) for run in runs for s in run["stepStats"]
                     if s["startTime"] and s["endTime"])
    for (_, end, a), (start, _, b) in zip(windows, windows[1:]):
        assert start >= end - 0.05, f"steps {a} and {b} overlapped: {windows}"

    rows = table_rows(stack.database)
    assert len(rows) == ROWS
    assert rows == source_rows(source)
    by_key = {(r[0], r[1]): r for r in rows}
    for record in (source.state.records()[0], source.state.records()[2345], source.state.records()[-1]):
        row = by_key[(record["WellCode"], dt.date.fromisoformat(record["ProductionDate"]))]
        assert row[2:] == (record["OilProduction"], record["GasProduction"], record["WaterProduction"])


def test_trigger_wait_imports_a_grown_source(stack, source, diagnose):
    # The source grows by 2.5 pages at the end: 5000 -> 7500 rows, pages 00000..00007.
    start = dt.date(2030, 1, 1)
    new = [{"WellCode": f"WELL_Z{i // 500:02d}", "ProductionDate": (start + dt.timedelta(days=i % 500)).isoformat(),
            "OilProduction": 10.25, "GasProduction": 20.5, "WaterProduction": float(i)} for i in range(2500)]
    httpx.post(f"{source.admin_url}/rows", json=new, timeout=120).raise_for_status()

    command = [str(BIN / "well-assets"), "trigger", "--url", stack.url, "--start-page", "0", "--max-pages", "8",
               "--wait", "--timeout", str(RUN_TIMEOUT), "--json"]
    done = subprocess.run(command, cwd=ROOT, env=stack.env, capture_output=True, text=True, timeout=RUN_TIMEOUT + 60)
    assert done.returncode == 0, f"exit {done.returncode}\nstdout:\n{done.stdout}\nstderr:\n{done.stderr}"
    out = json.loads(done.stdout)
    assert out["status"] == "SUCCESS"
    assert out["pages"] == {"first": "00000", "last": "00007", "count": 8}
    summary = out["summary"]
    assert summary["success"] is True
    assert summary["data"]["pagination_summary"]["processed_pages"] == 8
    assert summary["data"]["batch_result"]["total_items"] == 7500

    run = stack.result(out["run_id"])
    tags = {t["key"]: t["value"] for t in run["tags"]}
    assert tags["dagster/asset_partition_range_start"] == "00000"
    assert tags["dagster/asset_partition_range_end"] == "00007"
    assert tags["well_assets/trigger"] == "graphql"

    rows = table_rows(stack.database)
    assert len(rows) == 7500
    assert rows == source_rows(source)
    assert ("WELL_Z04", dt.date(2031, 5, 15), 10.25, 20.5, 2499.0) in rows

    # Without --max-pages the registered keys from --start-page on are used; past them it fails clearly.
    done = subprocess.run([str(BIN / "well-assets"), "trigger", "--url", stack.url, "--start-page", "9"],
                          cwd=ROOT, env=stack.env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    assert "no page partitions of odata_pages are registered from page 9 on" in done.stderr


def latest_ledger(database: Path) -> dict[int, tuple[str, str | None]]:
    con = duckdb.connect(str(database), read_only=True)
    try:
        latest = latest_page_status(con)
    finally:
        con.close()
    return {row["page"]: (row["status"], row["error"]) for row in latest.iter_rows(named=True)}


def test_trigger_wait_reports_a_failed_run_and_a_rerun_repairs_it(stack, source, diagnose):
    # Page 00001 answers 400 (not retryable, so the run fails fast); pages 0 and 2 go on.
    fault = {"kind": "status", "status": 400, "skip": [PAGE_SIZE], "code": "InjectedFault", "message": "page one is broken"}
    httpx.put(f"{source.admin_url}/faults", json=[fault], timeout=30).raise_for_status()
    before = table_rows(stack.database)
    command = [str(BIN / "well-assets"), "trigger", "--url", stack.url, "--start-page", "0", "--max-pages", "3",
               "--wait", "--timeout", str(RUN_TIMEOUT), "--json"]
    try:
        done = subprocess.run(command, cwd=ROOT, env=stack.env, capture_output=True, text=True,
                              timeout=RUN_TIMEOUT + 60)
    finally:
        httpx.put(f"{source.admin_url}/faults", json=[], timeout=30).raise_for_status()
    assert done.returncode == 1, f"exit {done.returncode}\nstdout:\n{done.stdout}\nstderr:\n{done.stderr}"
    out = json.loads(done.stdout)
    assert out["status"] == "FAILURE"
    assert out["pages"] == {"first": "00000", "last": "00002", "count": 3}
    assert any("00001" in message for message in out["errors"]), out["errors"]
    ledger = latest_ledger(stack.database)
    assert ledger[0][0] == "succeeded" and ledger[2][0] == "succeeded"
    status, error = ledger[1]
    assert status == "failed" and "HTTP 400" in error and "InjectedFault" in error
    assert table_rows(stack.database) == before  # nothing of the failed page, nothing lost

    done = subprocess.run(command, cwd=ROOT, env=stack.env, capture_output=True, text=True, timeout=RUN_TIMEOUT + 60)
    assert done.returncode == 0, f"exit {done.returncode}\nstdout:\n{done.stdout}\nstderr:\n{done.stderr}"
    assert json.loads(done.stdout)["status"] == "SUCCESS"
    assert latest_ledger(stack.database)[1][0] == "succeeded"
    assert table_rows(stack.database) == source_rows(source)


def test_sensor_and_schedule_are_listed_and_off_by_default(stack, diagnose):
    data = stack.gql(INSTIGATORS)
    [sensor] = data["sensorsOrError"]["results"]
    assert sensor["name"] == "odata_page_sensor"
    assert sensor["sensorState"]["status"] == "STOPPED"
    assert sensor["description"] and "\n" not in sensor["description"]
    [schedule] = data["schedulesOrError"]["results"]
    assert schedule["name"] == "odata_nightly_refresh"
    assert schedule["scheduleState"]["status"] == "STOPPED"
    assert (schedule["cronSchedule"], schedule["executionTimezone"]) == ("0 2 * * *", "UTC")


def curl_recipe() -> list[str]:
    """The ```bash blocks of docs/operations.md's curl section, in order."""
    text = (ROOT / "docs" / "operations.md").read_text()
    section = text.split("### The same with `curl`", 1)[1].split("\n## ", 1)[0]
    return [block.split("```", 1)[0] for block in section.split("```bash\n")[1:]]


@pytest.mark.skipif(not (shutil.which("curl") and shutil.which("jq")), reason="needs curl and jq")
def test_the_documented_curl_commands_work(stack, diagnose):
    add, launch, result, latest = curl_recipe()
    env = {**stack.env, "DAGSTER_URL": stack.url}

    def bash(script: str) -> str:
        done = subprocess.run(["bash", "-euo", "pipefail", "-c", script], env=env, capture_output=True,
                              text=True, timeout=120)
        assert done.returncode == 0, f"{script}\nstdout:\n{done.stdout}\nstderr:\n{done.stderr}"
        return done.stdout

    out = bash(add.replace("DAGSTER_URL=http://127.0.0.1:3000", f"DAGSTER_URL={stack.url}"))
    answers = [json.loads(line)["data"]["addDynamicPartition"]["__typename"] for line in out.splitlines() if line.strip()]
    assert len(answers) == 5 and set(answers) <= {"AddDynamicPartitionSuccess", "DuplicateDynamicPartitionError"}

    launched = json.loads(bash(launch))["data"]["launchRun"]
    assert launched["__typename"] == "LaunchRunSuccess", launched
    run_id = launched["run"]["runId"]
    assert stack.wait(run_id)["status"] == "SUCCESS"

    status, message = bash(result.replace("RUN_ID=2b0e...", f"RUN_ID={run_id}")).strip().splitlines()
    assert status == "SUCCESS"
    assert message.startswith("Imported ") and " page(s): " in message  # all registered pages
    summary = json.loads(bash(latest))
    assert summary["success"] is True
