"""`odata_page_sensor` against a real Dagster instance and the bundled demo service.

Ticks are evaluated as the daemon does (``well_assets_tests.ticks``): the partition
requests and the cursor applied, and the requested runs executed with their tags.
"""

from __future__ import annotations

import datetime as dt
import json
import socket
import subprocess
import sys

import dagster as dg
import httpx
import pytest

from well_assets.defs.definitions import build_definitions
from well_assets.defs.partitions import odata_pages
from well_assets.defs.sensors import build_page_sensor, parse_cursor, plan_tick
from well_assets.errors import ConfigError
from well_assets.settings import Settings
from well_assets_tests.expected import expected_table, stored_table
from well_assets_tests.ticks import END, START, execute, page_keys, run_requests, sensor_tick, skip_message

odata_page_sensor = build_page_sensor(Settings(base_url=None))

ROWS = 5000
PAGE_SIZE = 1000
keys = page_keys


def definitions(base_url: str, db_path: str) -> dg.Definitions:
    return build_definitions(Settings(base_url=base_url, entity_set="WellProduction", page_size=PAGE_SIZE,
                                      filter=None, database=db_path))


def context_for(instance, defs, cursor):
    # Direct invocation takes the resources from `resources=` (the code server passes the
    # repository's top-level resources the same way).
    return dg.build_sensor_context(instance=instance, definitions=defs, cursor=cursor, resources=defs.resources)


def tick(instance, defs, cursor):
    return sensor_tick(defs, instance, cursor)


def tick_and_run(instance, defs, cursor):
    """A tick, then its runs (each must succeed): (result, cursor, the ranges run)."""
    result, cursor = sensor_tick(defs, instance, cursor)
    requests = run_requests(result)
    assert all(run.success for run in execute(defs, instance, requests))
    return result, cursor, [(r.tags[START], r.tags[END]) for r in requests]


def new_wells(n_rows: int, prefix: str = "WELL_Z") -> list[dict]:
    """Records whose keys sort after every generated one (WELL_001..): they land at the end."""
    start = dt.date(2030, 1, 1)
    return [
        {"WellCode": f"{prefix}{i // 100:03d}", "ProductionDate": (start + dt.timedelta(days=i % 100)).isoformat(),
         "OilProduction": 1.5, "GasProduction": 2.5, "WaterProduction": 0.5}
        for i in range(n_rows)
    ]


def keys_of(records: list[dict]) -> list[dict]:
    return [{"WellCode": r["WellCode"], "ProductionDate": r["ProductionDate"]} for r in records]


@pytest.fixture
def instance():
    with dg.instance_for_test() as inst:
        yield inst


@pytest.fixture
def source(demo_server):
    # bad records of every kind: the counts the sensor compares include them as the source does;
    # no change tracking: these ticks count page ranges (test_change_tracking covers delta links)
    return demo_server(rows=ROWS, days_per_well=500, bad_rows=0.003, track_changes=False)


@pytest.fixture
def imported(instance, source, db_path):
    """The source imported by the sensor's first tick and its run: (defs, cursor)."""
    defs = definitions(source.base_url, db_path)
    _, cursor, ranges = tick_and_run(instance, defs, None)
    assert ranges == [("00000", "00004")]
    return defs, cursor


def test_first_tick_adds_all_pages_and_requests_one_run(instance, source, db_path):
    defs = definitions(source.base_url, db_path)
    result, cursor = tick(instance, defs, None)
    assert isinstance(result, dg.SensorResult)
    [request] = result.dynamic_partitions_requests
    assert request.partitions_def_name == "odata_pages"
    assert list(request.partition_keys) == keys(0, 4)
    [run] = result.run_requests
    assert (run.tags[START], run.tags[END]) == ("00000", "00004")
    assert run.tags["well_assets/trigger"] == "sensor"
    assert run.run_key
    assert json.loads(cursor)["count"] == ROWS
    assert instance.get_dynamic_partitions("odata_pages") == keys(0, 4)
    # until its run has synced a page, the first import is not requested again
    again, cursor2 = tick(instance, defs, cursor)
    assert skip_message(again).startswith("first import already requested")
    assert cursor2 == cursor


def test_after_the_import_an_unchanged_source_costs_one_count_per_eight_pages(imported, instance, source, db_path):
    defs, cursor = imported
    assert stored_table(db_path) == expected_table(source)
    result, cursor2 = tick(instance, defs, cursor)
    assert skip_message(result) == "source unchanged: 5 page(s) checked with 1 count request(s)"
    assert cursor2 == cursor


def test_changes_inside_pages_request_exactly_those_pages(imported, instance, source, db_path):
    defs, cursor = imported
    records = source.state.records()
    httpx.request("DELETE", f"{source.admin_url}/rows", json=keys_of(records[3010:3013]), timeout=30
                  ).raise_for_status()
    # a new day for the first well: inside page 00000, shifting every later page by one row
    first = records[0]["WellCode"]
    last_day = max(r["ProductionDate"] for r in records if r["WellCode"] == first)
    httpx.post(f"{source.admin_url}/rows", timeout=30, json=[
        {"WellCode": first, "ProductionDate": (dt.date.fromisoformat(last_day) + dt.timedelta(days=1)).isoformat(),
         "OilProduction": 7.0, "GasProduction": 8.0, "WaterProduction": 9.0}]).raise_for_status()
    result, cursor, ranges = tick_and_run(instance, defs, cursor)
    assert ranges == [("00000", "00000"), ("00003", "00003")]
    assert stored_table(db_path) == expected_table(source)
    assert skip_message(tick(instance, defs, cursor)[0]).startswith("source unchanged")


def test_the_last_page_grown_by_two_and_a_half_pages_is_synced_and_split(imported, instance, source, db_path):
    defs, cursor = imported
    httpx.post(f"{source.admin_url}/rows", json=new_wells(2500), timeout=120).raise_for_status()
    result, cursor, ranges = tick_and_run(instance, defs, cursor)
    assert not result.dynamic_partitions_requests  # the run splits the page and adds the keys
    assert ranges == [("00004", "00004")]
    assert instance.get_dynamic_partitions("odata_pages") == keys(0, 7)
    assert stored_table(db_path) == expected_table(source)
    assert skip_message(tick(instance, defs, cursor)[0]).startswith("source unchanged: 8 page(s)")


def test_pages_a_partial_import_did_not_reach_are_imported(instance, source, db_path):
    defs = definitions(source.base_url, db_path)
    instance.add_dynamic_partitions("odata_pages", keys(0, 4))
    job = defs.resolve_job_def("odata_import_job")
    assert job.execute_in_process(instance=instance, tags={START: "00002", END: "00003"}).success
    _, _, ranges = tick_and_run(instance, defs, None)
    assert ranges == [("00000", "00001"), ("00004", "00004")]
    assert stored_table(db_path) == expected_table(source)


def test_a_tick_does_not_wait_for_a_database_a_run_is_writing(imported, instance, db_path):
    defs, cursor = imported
    holder = subprocess.Popen(
        [sys.executable, "-c", "import duckdb, sys; c = duckdb.connect(sys.argv[1]); print('held', flush=True); "
                               "sys.stdin.read()", db_path],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        result, cursor2 = tick(instance, defs, cursor)
        assert skip_message(result).startswith("the database cannot be read now (a run may be writing it)")
        assert cursor2 == cursor
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)


def test_unreachable_source_skips_with_the_error_and_adds_nothing(instance, db_path):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    defs = definitions(f"http://127.0.0.1:{port}/odata", db_path)
    result, cursor = tick(instance, defs, json.dumps({"count": 10, "page_size": PAGE_SIZE, "seq": 1}))
    message = skip_message(result)
    assert message.startswith("source unreachable: EXTERNAL_API_ERROR:")
    assert f"127.0.0.1:{port}" in message or "connect" in message.lower()
    assert instance.get_dynamic_partitions("odata_pages") == []
    assert json.loads(cursor)["count"] == 10  # cursor untouched


def test_server_error_is_reported(instance, source, db_path):
    httpx.put(f"{source.admin_url}/faults", json=[{"kind": "status", "status": 500}], timeout=10).raise_for_status()
    result, _ = tick(instance, definitions(source.base_url, db_path), None)
    message = skip_message(result)
    assert message.startswith("source unreachable: EXTERNAL_API_ERROR:")
    assert "500" in message
    assert instance.get_dynamic_partitions("odata_pages") == []


def test_sensor_is_off_by_default_with_a_one_line_description():
    assert odata_page_sensor.default_status == dg.DefaultSensorStatus.STOPPED
    assert odata_page_sensor.description and "\n" not in odata_page_sensor.description
    assert odata_page_sensor.job_name == "odata_import_job"
    assert odata_page_sensor.minimum_interval_seconds == 300


def test_sensor_interval_setting_is_validated_and_used():
    settings = Settings.from_env({"WELL_ASSETS_SENSOR_INTERVAL": "60"})
    assert build_page_sensor(settings).minimum_interval_seconds == 60
    for bad in ("0", "abc", "5", "1e3"):
        with pytest.raises(ConfigError, match="WELL_ASSETS_SENSOR_INTERVAL.*10 to 86400"):
            Settings.from_env({"WELL_ASSETS_SENSOR_INTERVAL": bad})


# -- plan_tick: the decisions, without I/O ----------------------------------------------

def test_plan_refuses_keys_out_of_insertion_order():
    registered = keys(5, 7) + keys(0, 4)  # someone added 00005.. before 00000
    plan = plan_tick({}, 8000, 1000, "s", registered)
    assert plan.ranges == [] and plan.cursor is None
    assert "not contiguous and in ascending page order" in plan.reason


def test_plan_splits_a_huge_first_import_like_a_backfill():
    plan = plan_tick({}, 1_200_000, 1000, "s", [], max_pages_per_run=500)
    assert plan.ranges == [(0, 499), (500, 999), (1000, 1199)]
    assert plan.to_add[0] == "00000" and plan.to_add[-1] == "01199"


def test_plan_empty_source():
    plan = plan_tick({}, 0, 1000, "s", [])
    assert plan.ranges == [] and plan.to_add == []
    assert "empty" in plan.reason and plan.cursor["count"] == 0


def test_parse_cursor_tolerates_garbage():
    assert parse_cursor(None) == {} and parse_cursor("not json") == {} and parse_cursor("[1]") == {}
    assert parse_cursor('{"count": 3}') == {"count": 3}


def test_run_keys_make_a_lost_cursor_harmless(instance, source, db_path):
    """If the daemon lost the cursor update, the repeated tick has the same run key,
    so Dagster drops the repeat instead of importing the pages again."""
    defs = definitions(source.base_url, db_path)
    with context_for(instance, defs, None) as context, context_for(instance, defs, None) as again:
        assert odata_page_sensor(context).run_requests[0].run_key == odata_page_sensor(again).run_requests[0].run_key


def test_partition_definition_name():
    assert odata_pages.name == "odata_pages"


def test_invalid_settings_are_reported_as_such(instance, db_path):
    from well_assets.defs.resources import ODataResource, WellsDatabase

    resources = {"odata": ODataResource(base_url="ftp://nowhere"), "wells_db": WellsDatabase(path=db_path)}
    with dg.build_sensor_context(instance=instance, resources=resources) as context:
        message = skip_message(odata_page_sensor(context))
    assert message.startswith("invalid OData settings: invalid setting")
    assert instance.get_dynamic_partitions("odata_pages") == []
