"""The webserver's HTTP API end to end, on the shared live stack (conftest `live`): two
runs launched at once over GraphQL, `well-assets trigger --wait` on a grown source and on a
run failed by a broken page, the sensor and schedule as listed, and the curl recipe of
docs/operations.md replayed as written. The table is then opened read-only and compared
row by row with the demo service's data.
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from well_assets_tests.conftest import LIVE_PAGE_SIZE, LIVE_ROWS
from well_assets_tests.live.test_launch_paths import latest_ledger
from well_assets_tests.live_stack import BIN, ROOT, RUN_TIMEOUT, page_rows, report_summary, source_rows, table_rows

pytestmark = pytest.mark.slow

ROWS = LIVE_ROWS
PAGE_SIZE = LIVE_PAGE_SIZE

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


def test_two_runs_launched_at_once_over_http_both_succeed_and_the_table_is_exact(live, live_source):
    live.add_pages(0, 4)
    # Overlapping ranges, launched at the same moment: the `duckdb` pool (limit 1) makes
    # the writers take turns; the file lock is never contended.
    with ThreadPoolExecutor(max_workers=2) as pool:
        run_ids = list(pool.map(lambda r: live.launch(*r), [(0, 2), (2, 4)]))
    runs = [live.wait(run_id) for run_id in run_ids]
    for run_id, run in zip(run_ids, runs):
        assert run["status"] == "SUCCESS", f"run {run_id}: {run['status']}\n{live.logs()}"

    # Each run imported its pages (per-page materializations) and refreshed the report.
    parts = [sorted(e["partition"] for e in run["assetMaterializations"] if e["assetKey"]["path"] == ["well_production"])
             for run in runs]
    assert parts == [["00000", "00001", "00002"], ["00002", "00003", "00004"]]
    summaries = [report_summary(run) for run in runs]
    assert all(s and s["success"] for s in summaries), summaries
    # Each run's report describes that run's import: 3 pages, the shared page counted by both.
    for summary in summaries:
        assert summary["data"]["pagination_summary"]["processed_pages"] == 3
        assert summary["data"]["batch_result"]["processed_items"] == 3 * PAGE_SIZE
    imported = [s["data"]["import_summary"] for s in summaries]
    assert sum(i["new_records"] for i in imported) == ROWS  # every row new once
    assert sum(i["duplicate_records"] for i in imported) == PAGE_SIZE  # page 00002, stored by the first

    # The pool serialized the two runs' DuckDB steps: no two of them overlapped in time.
    windows = sorted((s["startTime"], s["endTime"], s["stepKey"]) for run in runs for s in run["stepStats"]
                     if s["startTime"] and s["endTime"])
    for (_, end, a), (start, _, b) in zip(windows, windows[1:]):
        assert start >= end - 0.05, f"steps {a} and {b} overlapped: {windows}"

    rows = table_rows(live.database)
    assert len(rows) == ROWS
    assert rows == source_rows(live_source)
    by_key = {(r[0], r[1]): r for r in rows}
    for record in (live_source.state.records()[0], live_source.state.records()[2345], live_source.state.records()[-1]):
        row = by_key[(record["WellCode"], dt.date.fromisoformat(record["ProductionDate"]))]
        assert row[2:] == (record["OilProduction"], record["GasProduction"], record["WaterProduction"])


def test_trigger_wait_imports_a_grown_source(live, live_source):
    # The source grows by 2.5 pages at the end: 5000 -> 7500 rows, pages 00000..00007.
    start = dt.date(2030, 1, 1)
    new = [{"WellCode": f"WELL_Z{i // 500:02d}", "ProductionDate": (start + dt.timedelta(days=i % 500)).isoformat(),
            "OilProduction": 10.25, "GasProduction": 20.5, "WaterProduction": float(i)} for i in range(2500)]
    httpx.post(f"{live_source.admin_url}/rows", json=new, timeout=120).raise_for_status()

    command = [str(BIN / "well-assets"), "trigger", "--url", live.url, "--start-page", "0", "--max-pages", "8",
               "--wait", "--timeout", str(RUN_TIMEOUT), "--json"]
    done = subprocess.run(command, cwd=ROOT, env=live.env, capture_output=True, text=True, timeout=RUN_TIMEOUT + 60)
    assert done.returncode == 0, f"exit {done.returncode}\nstdout:\n{done.stdout}\nstderr:\n{done.stderr}"
    out = json.loads(done.stdout)
    assert out["status"] == "SUCCESS"
    assert out["pages"] == {"first": "00000", "last": "00007", "count": 8}
    summary = out["summary"]
    assert summary["success"] is True
    assert summary["data"]["pagination_summary"]["processed_pages"] == 8
    assert summary["data"]["batch_result"]["total_items"] == 7500

    run = live.result(out["run_id"])
    tags = {t["key"]: t["value"] for t in run["tags"]}
    assert tags["dagster/asset_partition_range_start"] == "00000"
    assert tags["dagster/asset_partition_range_end"] == "00007"
    assert tags["well_assets/trigger"] == "graphql"

    rows = table_rows(live.database)
    assert len(rows) == 7500
    assert rows == source_rows(live_source)
    assert ("WELL_Z04", dt.date(2031, 5, 15), 10.25, 20.5, 2499.0) in rows

    # Without --max-pages the registered keys from --start-page on are used; past them it fails clearly.
    done = subprocess.run([str(BIN / "well-assets"), "trigger", "--url", live.url, "--start-page", "9"],
                          cwd=ROOT, env=live.env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    assert "no page partitions of odata_pages are registered from page 9 on" in done.stderr


def test_trigger_wait_reports_a_failed_run_and_a_rerun_repairs_it(live, live_source):
    # Page 00001 answers 400 (not retryable, so the run fails fast); pages 0 and 2 go on.
    fault = {"kind": "status", "status": 400, "skip": [PAGE_SIZE], "code": "InjectedFault", "message": "page one is broken"}
    httpx.put(f"{live_source.admin_url}/faults", json=[fault], timeout=30).raise_for_status()
    command = [str(BIN / "well-assets"), "trigger", "--url", live.url, "--start-page", "0", "--max-pages", "3",
               "--wait", "--timeout", str(RUN_TIMEOUT), "--json"]
    try:
        done = subprocess.run(command, cwd=ROOT, env=live.env, capture_output=True, text=True,
                              timeout=RUN_TIMEOUT + 60)
    finally:
        httpx.put(f"{live_source.admin_url}/faults", json=[], timeout=30).raise_for_status()
    assert done.returncode == 1, f"exit {done.returncode}\nstdout:\n{done.stdout}\nstderr:\n{done.stderr}"
    out = json.loads(done.stdout)
    assert out["status"] == "FAILURE"
    assert out["pages"] == {"first": "00000", "last": "00002", "count": 3}
    assert any("00001" in message for message in out["errors"]), out["errors"]
    ledger = latest_ledger(live.database)
    assert ledger[0][0] == "succeeded" and ledger[2][0] == "succeeded"
    status, error = ledger[1]
    assert status == "failed" and "HTTP 400" in error and "InjectedFault" in error
    assert table_rows(live.database) == page_rows(live_source, [0, 2], PAGE_SIZE)  # nothing of the failed page

    done = subprocess.run(command, cwd=ROOT, env=live.env, capture_output=True, text=True, timeout=RUN_TIMEOUT + 60)
    assert done.returncode == 0, f"exit {done.returncode}\nstdout:\n{done.stdout}\nstderr:\n{done.stderr}"
    assert json.loads(done.stdout)["status"] == "SUCCESS"
    assert latest_ledger(live.database)[1][0] == "succeeded"
    assert table_rows(live.database) == page_rows(live_source, [0, 1, 2], PAGE_SIZE)


def test_sensor_and_schedule_are_listed_with_their_settings_and_off_by_default(live):
    data = live.gql(INSTIGATORS)
    [sensor] = data["sensorsOrError"]["results"]
    assert sensor["name"] == "odata_page_sensor"
    assert sensor["sensorState"]["status"] == "STOPPED"
    assert sensor["description"] and "\n" not in sensor["description"]
    [schedule] = data["schedulesOrError"]["results"]
    assert schedule["name"] == "odata_nightly_refresh"
    assert schedule["scheduleState"]["status"] == "STOPPED"
    # The stack sets WELL_ASSETS_REFRESH_CRON (every minute) and leaves the time zone at its default.
    assert (schedule["cronSchedule"], schedule["executionTimezone"]) == ("* * * * *", "UTC")


def curl_recipe() -> list[str]:
    """The ```bash blocks of docs/operations.md's curl section, in order."""
    text = (ROOT / "docs" / "operations.md").read_text()
    section = text.split("### The same with `curl`", 1)[1].split("\n## ", 1)[0]
    return [block.split("```", 1)[0] for block in section.split("```bash\n")[1:]]


@pytest.mark.skipif(not (shutil.which("curl") and shutil.which("jq")), reason="needs curl and jq")
def test_the_documented_curl_commands_work(live):
    add, launch, result, latest = curl_recipe()
    env = {**live.env, "DAGSTER_URL": live.url}

    def bash(script: str) -> str:
        done = subprocess.run(["bash", "-euo", "pipefail", "-c", script], env=env, capture_output=True,
                              text=True, timeout=120)
        assert done.returncode == 0, f"{script}\nstdout:\n{done.stdout}\nstderr:\n{done.stderr}"
        return done.stdout

    out = bash(add.replace("DAGSTER_URL=http://127.0.0.1:3000", f"DAGSTER_URL={live.url}"))
    answers = [json.loads(line)["data"]["addDynamicPartition"]["__typename"] for line in out.splitlines() if line.strip()]
    assert len(answers) == 5 and set(answers) <= {"AddDynamicPartitionSuccess", "DuplicateDynamicPartitionError"}

    launched = json.loads(bash(launch))["data"]["launchRun"]
    assert launched["__typename"] == "LaunchRunSuccess", launched
    run_id = launched["run"]["runId"]
    assert live.wait(run_id)["status"] == "SUCCESS"

    status, message = bash(result.replace("RUN_ID=2b0e...", f"RUN_ID={run_id}")).strip().splitlines()
    assert status == "SUCCESS"
    assert message.startswith("Imported ") and " page(s): " in message  # all registered pages
    summary = json.loads(bash(latest))
    assert summary["success"] is True
