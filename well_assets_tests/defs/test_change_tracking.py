"""OData change tracking through the sensor and its runs, against the bundled service.

A baseline import takes a delta link; a day of changes at the source (one new day for
every well, corrected values, deletions) is then applied by the sensor's next tick and its
runs from the delta alone: the table equals the source, deletions are kept, and the
service's request log shows the delta read and no page read. Ticks are evaluated as the
daemon does (``well_assets_tests.ticks``).
"""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
import textwrap
import time

import dagster as dg
import httpx
import pytest

from well_assets.defs.definitions import build_definitions
from well_assets.names import SYNC_DELTA, SYNC_RESYNC, SYNC_TAG
from well_assets.settings import Settings
from well_assets.storage import page_write
from well_assets_tests.expected import expected_table, query, stored_table
from well_assets_tests.ticks import execute, run_requests, sensor_tick, skip_message

ROWS, DAYS, PAGE_SIZE = 3000, 50, 500  # 60 wells, 6 pages
WELLS = ROWS // DAYS


@pytest.fixture
def instance():
    with dg.instance_for_test() as inst:
        yield inst


def definitions(base_url: str, db_path: str, change_tracking: str = "auto") -> dg.Definitions:
    return build_definitions(Settings(base_url=base_url, page_size=PAGE_SIZE, database=db_path,
                                      change_tracking=change_tracking))


def tick_and_run(instance, defs, cursor):
    """A tick and its runs (each must succeed): (tick result, cursor, the runs' sync tags)."""
    result, cursor = sensor_tick(defs, instance, cursor)
    requests = run_requests(result)
    runs = execute(defs, instance, requests)
    assert all(run.success for run in runs), [r.run_id for r in runs if not r.success]
    return result, cursor, [r.tags.get(SYNC_TAG) for r in requests]


def delta_link_state(db_path: str) -> tuple:
    """(has a delta link, staged changes) of the only tracked source."""
    rows = query(db_path, "select delta_link is not null, (select count(*) from odata_delta_staging) "
                          "from odata_sync_state")
    return rows[0] if rows else (False, 0)


def a_day_of_changes(server) -> dict:
    """One new day for every well, ten corrected values and twenty deletions."""
    records = server.state.records()
    by_well: dict[str, list[dict]] = {}
    for record in records:
        by_well.setdefault(record["WellCode"], []).append(record)
    new_day = [{**wells[-1], "ProductionDate": (dt.date.fromisoformat(wells[-1]["ProductionDate"])
                                                 + dt.timedelta(days=1)).isoformat(), "OilProduction": 7.25}
               for wells in by_well.values()]
    corrected = [{**records[i], "OilProduction": 1000.0 + i} for i in range(5, 3000, 300)]
    deleted = [{"WellCode": r["WellCode"], "ProductionDate": r["ProductionDate"]} for r in records[17:3000:150]]
    httpx.post(f"{server.admin_url}/rows", json=new_day + corrected, timeout=30).raise_for_status()
    httpx.request("DELETE", f"{server.admin_url}/rows", json=deleted, timeout=30).raise_for_status()
    return {"new": len(new_day), "corrected": len(corrected), "deleted": deleted}


def syncs_pages(instance) -> set[str]:
    """The page partitions the latest delta runs materialized."""
    runs = instance.get_run_records(dg.RunsFilter(tags={SYNC_TAG: SYNC_DELTA}))
    keys = set()
    for record in runs:
        tags = record.dagster_run.tags
        first, last = int(tags["dagster/asset_partition_range_start"]), int(tags["dagster/asset_partition_range_end"])
        keys |= {f"{k:05d}" for k in range(first, last + 1)}
    return keys


def requests_by_kind(server) -> dict[str, int]:
    """The service's requests since its stats were reset: delta reads, page reads (rows
    asked for) and counts ($top=0 or /$count)."""
    counts = {"delta": 0, "page": 0, "count": 0}
    for entry in server.state.stats.recent_requests():
        if entry.get("endpoint") == "delta":
            counts["delta"] += 1
        elif entry.get("endpoint") == "collection" and "$top=0&" not in (entry.get("query") or "") + "&":
            counts["page"] += 1
        else:
            counts["count"] += 1
    return counts


@pytest.mark.parametrize("delta_format", ["4.01", "4.0"])
def test_a_day_of_changes_is_applied_from_the_delta_alone(demo_server, db_path, instance, delta_format):
    server = demo_server(rows=ROWS, days_per_well=DAYS, bad_rows=0, delta_format=delta_format)
    defs = definitions(server.base_url, db_path)
    _, cursor, syncs = tick_and_run(instance, defs, None)  # the first import takes the baseline
    assert syncs and all(sync is None for sync in syncs)
    assert delta_link_state(db_path) == (True, 0)

    day = a_day_of_changes(server)
    server.state.stats.reset()
    _, cursor, syncs = tick_and_run(instance, defs, cursor)
    assert syncs and set(syncs) == {SYNC_DELTA}
    assert stored_table(db_path) == expected_table(server)  # keys and values
    kept = set(query(db_path, "select well_code, strftime(production_date, '%Y-%m-%d') from well_production_deleted"))
    assert kept == {(k["WellCode"], k["ProductionDate"]) for k in day["deleted"]}
    ledger = query(db_path, "select sum(rows_new), sum(rows_updated), sum(rows_deleted) from odata_page_log "
                            "where read_by = 'delta'")
    assert ledger == [(day["new"], day["corrected"], len(day["deleted"]))]
    # The delta was read (by the tick, and once by the runs to stage it); no page was read.
    requests = requests_by_kind(server)
    assert requests["delta"] == 2 and requests["page"] == 0, requests
    assert delta_link_state(db_path) == (True, 0)  # the link moved on: nothing staged is left
    report = instance.get_latest_materialization_event(dg.AssetKey("well_production_import_report"))
    summary = report.asset_materialization.metadata["summary_json"].value
    assert summary["data"]["pagination_summary"]["delta_pages"] == len(syncs_pages(instance))
    assert "applied from the source's change-tracking delta" in summary["message"]

    assert "no changes" in skip_message(sensor_tick(defs, instance, cursor)[0])


def test_an_expired_link_starts_a_full_resync_that_takes_a_new_baseline(demo_server, db_path, instance):
    server = demo_server(rows=ROWS, days_per_well=DAYS, bad_rows=0)
    defs = definitions(server.base_url, db_path)
    _, cursor, _ = tick_and_run(instance, defs, None)
    httpx.post(f"{server.admin_url}/delta/expire", timeout=30).raise_for_status()
    a_day_of_changes(server)

    result, cursor, syncs = tick_and_run(instance, defs, cursor)
    assert syncs and set(syncs) == {SYNC_RESYNC}
    assert stored_table(db_path) == expected_table(server)
    assert delta_link_state(db_path) == (True, 0)  # the re-sync's baseline became the delta link

    server.state.delete([{"WellCode": "WELL_002", "ProductionDate": "2023-01-03"}])
    _, cursor, syncs = tick_and_run(instance, defs, cursor)
    assert set(syncs) == {SYNC_DELTA}  # changes are read by delta again
    assert stored_table(db_path) == expected_table(server)


def test_a_failed_page_leaves_its_changes_staged_and_the_next_tick_applies_them(demo_server, db_path, instance,
                                                                              monkeypatch):
    server = demo_server(rows=ROWS, days_per_well=DAYS, bad_rows=0)
    defs = definitions(server.base_url, db_path)
    _, cursor, _ = tick_and_run(instance, defs, None)
    a_day_of_changes(server)

    original = page_write._insert_ledger

    def fail_page_two(con, row, *args):  # the database fails inside page 2's transaction
        if row["page"] == 2 and row["status"] == "succeeded":
            raise OSError("disk full (injected)")
        return original(con, row, *args)

    monkeypatch.setattr(page_write, "_insert_ledger", fail_page_two)
    result, cursor = sensor_tick(defs, instance, cursor)
    runs = execute(defs, instance, run_requests(result))
    assert not all(run.success for run in runs)
    has_link, staged = delta_link_state(db_path)
    assert has_link and staged > 0  # the link did not move on: page 2's changes wait
    assert stored_table(db_path) != expected_table(server)

    monkeypatch.setattr(page_write, "_insert_ledger", original)
    server.state.stats.reset()
    result, cursor, syncs = tick_and_run(instance, defs, cursor)
    assert set(syncs) == {SYNC_DELTA}
    assert [r.tags["dagster/asset_partition_range_start"] for r in result.run_requests] == ["00002"]
    assert requests_by_kind(server)["delta"] == 0  # applied from what was staged
    assert stored_table(db_path) == expected_table(server)
    assert delta_link_state(db_path) == (True, 0)


@pytest.mark.parametrize("change_tracking, service_tracks, has_link", [
    ("off", True, False),
    ("auto", False, False),
    ("auto", True, True),
])
def test_a_baseline_is_taken_only_when_asked_for_and_offered(demo_server, db_path, instance, change_tracking,
                                                             service_tracks, has_link):
    server = demo_server(rows=1000, days_per_well=DAYS, bad_rows=0, track_changes=service_tracks)
    defs = definitions(server.base_url, db_path, change_tracking)
    _, cursor, _ = tick_and_run(instance, defs, None)
    assert delta_link_state(db_path)[0] is has_link
    server.state.delete([{"WellCode": "WELL_001", "ProductionDate": "2023-01-02"}])
    _, cursor, syncs = tick_and_run(instance, defs, cursor)
    assert set(syncs) == ({SYNC_DELTA} if has_link else {None})  # without a link: counted page ranges
    assert stored_table(db_path) == expected_table(server)


def test_on_without_support_fails_the_run_naming_the_setting(demo_server, db_path, instance):
    server = demo_server(rows=1000, days_per_well=DAYS, bad_rows=0, track_changes=False)
    defs = definitions(server.base_url, db_path, "on")
    result, _ = sensor_tick(defs, instance, None)
    runs = execute(defs, instance, run_requests(result))
    assert runs and not any(run.success for run in runs)
    failure = next(e for e in runs[0].all_events if e.event_type_value == "STEP_FAILURE")
    assert "ODATA_CHANGE_TRACKING=on" in failure.step_failure_data.error.message
    assert query(db_path, "select count(*) from well_production") == [(0,)]  # nothing written


# A delta run in a process of its own that stops inside its first page's transaction
# (after the delta was read and staged) and waits to be killed.
KILLED_RUN = textwrap.dedent(
    """
    import pathlib, sys, time
    import dagster as dg
    from well_assets.defs.definitions import build_definitions
    from well_assets.defs.partitions import register_pages
    from well_assets.settings import Settings
    from well_assets.storage import page_write

    base_url, database, first, last, pages, marker = sys.argv[1:7]
    original = page_write._insert_ledger

    def stall(con, row, *args):
        if row["status"] == "succeeded":
            pathlib.Path(marker).write_text("in the transaction")
            time.sleep(600)
        return original(con, row, *args)

    page_write._insert_ledger = stall
    defs = build_definitions(Settings(base_url=base_url, page_size=%d, database=database))
    with dg.DagsterInstance.ephemeral() as instance:
        register_pages(instance, int(pages))
        tags = {"dagster/asset_partition_range_start": first, "dagster/asset_partition_range_end": last,
                "well_assets/sync": "delta"}
        defs.resolve_job_def("odata_import_job").execute_in_process(instance=instance, tags=tags)
    """
) % PAGE_SIZE


def test_a_run_killed_after_reading_the_delta_loses_no_change(demo_server, db_path, instance, tmp_path):
    server = demo_server(rows=ROWS, days_per_well=DAYS, bad_rows=0)
    defs = definitions(server.base_url, db_path)
    _, cursor, _ = tick_and_run(instance, defs, None)
    a_day_of_changes(server)
    result, cursor = sensor_tick(defs, instance, cursor)
    first_run = run_requests(result)[0].tags
    marker, script = tmp_path / "in-transaction", tmp_path / "killed_run.py"
    script.write_text(KILLED_RUN)
    child = subprocess.Popen([sys.executable, str(script), server.base_url, db_path,
                              first_run["dagster/asset_partition_range_start"],
                              first_run["dagster/asset_partition_range_end"], str(ROWS // PAGE_SIZE), str(marker)],
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while not marker.exists():
            assert child.poll() is None, child.communicate()[1][-3000:]
            assert time.monotonic() < deadline, "the run never reached its first page's transaction"
            time.sleep(0.05)
    finally:
        os.killpg(child.pid, signal.SIGKILL)
        child.wait(timeout=30)
    has_link, staged = delta_link_state(db_path)
    assert has_link and staged > 0  # read and staged, nothing applied, the link where it was
    assert query(db_path, "select count(*) from odata_page_log where read_by = 'delta'") == [(0,)]

    _, cursor, syncs = tick_and_run(instance, defs, cursor)  # the next tick: the staged pages
    assert set(syncs) == {SYNC_DELTA}
    assert stored_table(db_path) == expected_table(server)
    assert delta_link_state(db_path) == (True, 0)
    assert "no changes" in skip_message(sensor_tick(defs, instance, cursor)[0])


def test_on_without_support_stops_the_cli_import_before_anything_is_written(demo_server, db_path):
    from well_assets.cli.importer import ImportRequest, run_import
    from well_assets.errors import ChangeTrackingUnavailable

    server = demo_server(rows=1000, days_per_well=DAYS, bad_rows=0, track_changes=False)
    settings = Settings(base_url=server.base_url, page_size=PAGE_SIZE, database=db_path, change_tracking="on")
    with pytest.raises(ChangeTrackingUnavailable, match="ODATA_CHANGE_TRACKING=on"):
        run_import(ImportRequest(settings=settings))
    assert not os.path.exists(db_path) or query(db_path, "select count(*) from well_production") == [(0,)]


def test_the_bundled_service_started_per_run_is_not_tracked(db_path, instance):
    """Without ODATA_BASE_URL every run and tick starts its own bundled service, whose change
    history dies with it: no delta link is kept, and ticks count page ranges."""
    defs = build_definitions(Settings(base_url=None, demo_rows=1000, demo_bad_rows=0.0, page_size=PAGE_SIZE,
                                      database=db_path))
    _, cursor, syncs = tick_and_run(instance, defs, None)
    assert syncs == [None] and delta_link_state(db_path) == (False, 0)
    assert "source unchanged" in skip_message(sensor_tick(defs, instance, cursor)[0])
