"""Every way a person or a tool starts an import, against a real dagster-webserver and
dagster-daemon on the project's dagster.yaml and workspace.yaml.

Each test launches what the UI or the tool sends (the GraphQL documents were captured from
the UI in a browser), waits for the run to end within a bound, and then checks that the
run succeeded, that the table holds exactly the rows of the pages launched, and that the
run left nothing behind: no run worker, step worker or page fetcher process, no pool slot.
"""

from __future__ import annotations

import subprocess
import threading

import httpx
import pytest

from well_assets_tests.conftest import LIVE_PAGE_SIZE
from well_assets_tests.expected import query
from well_assets_tests.live_stack import BIN, ROOT, RUN_TIMEOUT, page_rows, table_rows, wait_for

pytestmark = pytest.mark.slow

PAGES = [f"{k:05d}" for k in range(5)]


def assert_exact(live, source, pages) -> None:
    assert table_rows(live.database) == page_rows(source, pages, LIVE_PAGE_SIZE)


def test_materialize_one_partition_from_the_asset_page(live, live_source):
    live.add_pages(0, 4)
    run_id = live.materialize_partition("00003")
    run = live.wait(run_id)
    assert run["status"] == "SUCCESS", live.logs()
    assert run["jobName"] == "__ASSET_JOB"
    assert [e["partition"] for e in run["assetMaterializations"] if e["assetKey"]["path"] == ["well_production"]] == ["00003"]
    # The UI's Materialize runs the default executor: one process per step.
    assert any("Executing steps using multiprocess executor" in (e.get("message") or "") for e in live.events(run_id))
    assert_exact(live, live_source, [3])
    live.assert_runs_left_nothing()


def test_materialize_a_range_of_partitions_is_an_asset_backfill(live, live_source):
    live.add_pages(0, 4)
    keys = ["00000", "00001", "00002"]
    runs = live.wait_backfill(live.backfill_asset(keys), keys)
    assert [r["status"] for r in runs] == ["SUCCESS"], live.logs()
    tags = {t["key"]: t["value"] for t in runs[0]["tags"]}
    assert (tags["dagster/asset_partition_range_start"], tags["dagster/asset_partition_range_end"]) == ("00000", "00002")
    assert_exact(live, live_source, [0, 1, 2])
    live.assert_runs_left_nothing()


def test_backfill_of_the_job_by_partition_names(live, live_source):
    live.add_pages(0, 4)
    keys = ["00001", "00002", "00004"]
    runs = live.wait_backfill(live.backfill_job(keys), keys)
    assert runs and all(r["status"] == "SUCCESS" for r in runs), live.logs()
    assert_exact(live, live_source, [1, 2, 4])
    live.assert_runs_left_nothing()


def test_launchpad_run_of_the_job_for_a_range(live, live_source):
    live.add_pages(0, 4)
    run = live.wait(live.launch(1, 3))
    assert run["status"] == "SUCCESS", live.logs()
    assert_exact(live, live_source, [1, 2, 3])
    live.assert_runs_left_nothing()


def test_the_sensor_imports_the_source_then_syncs_the_pages_that_changed(live, live_source):
    sensor = live.start_sensor()
    try:
        first = wait_for("a sensor run", lambda: live.runs({"well_assets/trigger": "sensor"}), RUN_TIMEOUT,
                         on_timeout=live.logs)
        run = live.wait(first[0]["runId"])
        assert run["status"] == "SUCCESS", live.logs()
        assert_exact(live, live_source, range(5))

        # Three rows of page 00002 deleted and a day added inside page 00000 (shifting every later page).
        records = live_source.state.records()
        gone = [{"WellCode": r["WellCode"], "ProductionDate": r["ProductionDate"]} for r in records[2100:2103]]
        httpx.request("DELETE", f"{live_source.admin_url}/rows", json=gone, timeout=30).raise_for_status()
        httpx.post(f"{live_source.admin_url}/rows", timeout=30, json=[
            {**records[0], "ProductionDate": "1999-12-31", "OilProduction": 5.5}]).raise_for_status()

        def synced() -> list[dict] | None:
            later = [r for r in live.runs({"well_assets/trigger": "sensor"}) if r["runId"] != first[0]["runId"]]
            return later if len(later) >= 2 else None

        later = wait_for("the sensor's runs of the changed pages", synced, RUN_TIMEOUT, on_timeout=live.logs)
        ended = [live.wait(r["runId"]) for r in later]
    finally:
        live.stop_sensor(sensor)
    assert [r["status"] for r in ended] == ["SUCCESS", "SUCCESS"], live.logs()
    starts = [next(t["value"] for t in r["tags"] if t["key"] == "dagster/asset_partition_range_start") for r in later]
    assert sorted(starts) == ["00000", "00002"]
    assert_exact(live, live_source, range(5))  # the whole source, as it is now
    deleted = query(live.database, "select well_code, strftime(production_date, '%Y-%m-%d') from well_production_deleted")
    assert sorted(deleted) == sorted((k["WellCode"], k["ProductionDate"]) for k in gone)
    live.assert_runs_left_nothing()


def test_a_schedule_tick_refreshes_every_page(live, live_source):
    schedule = live.start_schedule()
    try:  # the stack's cron is every minute
        runs = wait_for("a schedule run", lambda: live.runs({"well_assets/trigger": "schedule"}), RUN_TIMEOUT,
                        on_timeout=live.logs)
        run = live.wait(runs[0]["runId"])
    finally:
        live.stop_schedule(schedule)
    assert run["status"] == "SUCCESS", live.logs()
    assert_exact(live, live_source, range(5))
    live.assert_runs_left_nothing()


def test_reexecution_from_failure_completes_a_run_whose_page_failed(live, live_source):
    live.add_pages(0, 4)
    fault = {"kind": "status", "status": 400, "skip": [LIVE_PAGE_SIZE], "code": "InjectedFault", "message": "page one"}
    httpx.put(f"{live_source.admin_url}/faults", json=[fault], timeout=30).raise_for_status()
    failed = live.launch(0, 2)
    assert live.wait(failed)["status"] == "FAILURE"
    assert_exact(live, live_source, [0, 2])  # the broken page wrote nothing, the others committed
    httpx.put(f"{live_source.admin_url}/faults", json=[], timeout=30).raise_for_status()
    live_source.state.stats.reset()
    run = live.wait(live.reexecute_from_failure(failed))
    assert run["status"] == "SUCCESS", live.logs()
    assert_exact(live, live_source, [0, 1, 2])
    log = [r for r in live_source.state.stats.recent_requests() if r.get("endpoint") == "collection"]
    # Only the failed page was fetched again: its read by offset (one row more than a page,
    # which the service sends after a nextLink) and nothing of pages 0 and 2; the one
    # request with $top=0 is the reconciliation check counting the source.
    reads = [r for r in log if "$top=0&" not in r["query"]]
    assert {r["skip"] for r in reads} == {LIVE_PAGE_SIZE}, "\n".join(r["query"] for r in log)
    assert len(log) - len(reads) == 1, "\n".join(r["query"] for r in log)
    live.assert_runs_left_nothing()


def test_trigger_wait(live, live_source):
    done = subprocess.run([str(BIN / "well-assets"), "trigger", "--url", live.url, "--start-page", "0",
                           "--max-pages", "2", "--wait", "--timeout", str(RUN_TIMEOUT)],
                          cwd=ROOT, env=live.env, capture_output=True, text=True, timeout=RUN_TIMEOUT + 60)
    assert done.returncode == 0, f"{done.stdout}\n{done.stderr}"
    assert "status: SUCCESS" in done.stdout
    assert_exact(live, live_source, [0, 1])
    live.assert_runs_left_nothing()


def test_two_partitions_launched_at_the_same_moment_take_turns(live, live_source):
    live.add_pages(0, 4)
    barrier = threading.Barrier(2)

    def launch(key: str) -> str:
        barrier.wait()
        return live.materialize_partition(key)

    results: dict[str, str] = {}
    threads = [threading.Thread(target=lambda k=k: results.__setitem__(k, launch(k))) for k in ("00001", "00004")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    runs = [live.wait(results[key]) for key in ("00001", "00004")]
    assert [run["status"] for run in runs] == ["SUCCESS", "SUCCESS"], live.logs()
    # The `duckdb` pool (limit 1) let one DuckDB step run at a time across both runs.
    windows = sorted((s["startTime"], s["endTime"], s["stepKey"]) for run in runs for s in run["stepStats"]
                     if s["startTime"] and s["endTime"])
    for (_, end, a), (start, _, b) in zip(windows, windows[1:]):
        assert start >= end - 0.05, f"steps {a} and {b} overlapped: {windows}"
    assert_exact(live, live_source, [1, 4])
    live.assert_runs_left_nothing()


@pytest.mark.parametrize("job", ["__ASSET_JOB", "odata_import_job"])
def test_terminate_ends_a_running_import_within_seconds(live, live_source, job):
    """Terminate (the UI's button) on a run of the asset job (one process per step) and
    of odata_import_job (in-process): the page in flight rolls back, committed pages stay,
    and nothing is left running."""
    import time

    live.add_pages(0, 4)
    # Each page takes 3 s at the source: the import is still running when it is terminated.
    httpx.put(f"{live_source.admin_url}/faults", json=[{"kind": "latency", "seconds": 3}], timeout=30).raise_for_status()
    run_id = live.launch(0, 4, job=job)

    def answered() -> int:
        # This run's requests only: a request of an earlier test's terminated run, sent
        # before it ended, is still answered (and logged) by the source after it.
        return len([r for r in live_source.state.stats.recent_requests()
                    if r.get("endpoint") == "collection" and r.get("request_id", "").startswith(run_id[:8])])

    wait_for("two pages answered", lambda: answered() >= 2, RUN_TIMEOUT, interval=0.2, on_timeout=live.logs)
    began = time.monotonic()
    live.terminate(run_id)
    run = live.wait(run_id, timeout=60)
    assert run["status"] == "CANCELED" and time.monotonic() - began < 30, live.logs()
    live.assert_runs_left_nothing()
    ledger = latest_ledger(live.database)
    committed = sorted(page for page, (status, _) in ledger.items() if status == "succeeded")
    assert all(status == "succeeded" for status, _ in ledger.values())  # a terminated page is not a failure
    assert table_rows(live.database) == page_rows(live_source, committed, LIVE_PAGE_SIZE)
    assert len(committed) < 5  # it really was cut short


def latest_ledger(database) -> dict[int, tuple[str, str | None]]:
    import duckdb

    from well_assets.storage import latest_page_status

    if not database.exists():
        return {}
    con = duckdb.connect(str(database), read_only=True)
    try:
        latest = latest_page_status(con)
    finally:
        con.close()
    return {row["page"]: (row["status"], row["error"]) for row in latest.iter_rows(named=True)}
