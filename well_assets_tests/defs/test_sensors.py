"""`odata_page_sensor` against a real Dagster instance and the bundled demo service.

Ticks are evaluated with `dg.build_sensor_context(instance=..., definitions=...,
cursor=...)`; what the daemon would apply after a tick (the partition requests and the
cursor) is applied by hand, so a sequence of ticks behaves as it does in production.
"""

from __future__ import annotations

import datetime as dt
import json
import socket

import dagster as dg
import httpx
import pytest

from well_assets.defs.definitions import build_definitions
from well_assets.defs.partitions import odata_pages
from well_assets.defs.sensors import build_page_sensor, parse_cursor, plan_tick
from well_assets.errors import ConfigError
from well_assets.settings import Settings

odata_page_sensor = build_page_sensor(Settings(base_url=None))

ROWS = 5000
PAGE_SIZE = 1000
START = "dagster/asset_partition_range_start"
END = "dagster/asset_partition_range_end"


def keys(first: int, last: int) -> list[str]:
    return [f"{k:05d}" for k in range(first, last + 1)]


def definitions(base_url: str, tmp_path) -> dg.Definitions:
    return build_definitions(Settings(base_url=base_url, entity_set="WellProduction", page_size=PAGE_SIZE,
                                      filter=None, database=str(tmp_path / "wells.duckdb")))


def context_for(instance, defs, cursor):
    # Direct invocation takes the resources from `resources=` (the code server passes the
    # repository's top-level resources the same way).
    return dg.build_sensor_context(instance=instance, definitions=defs, cursor=cursor, resources=defs.resources)


def tick(instance, defs, cursor):
    """One evaluation, then what the daemon does with it; returns (result, new cursor)."""
    with context_for(instance, defs, cursor) as context:  # resources open for the tick, as in the code server
        result = odata_page_sensor(context)
    if isinstance(result, dg.SensorResult):
        for request in result.dynamic_partitions_requests or []:
            instance.add_dynamic_partitions(request.partitions_def_name, list(request.partition_keys))
        return result, (result.cursor if result.cursor is not None else cursor)
    return result, cursor


def skip_message(result) -> str:
    if isinstance(result, dg.SkipReason):
        return result.skip_message
    assert isinstance(result, dg.SensorResult) and not result.run_requests, result
    return result.skip_reason.skip_message


def new_wells(n_rows: int, prefix: str = "WELL_Z") -> list[dict]:
    """Records whose keys sort after every generated one (WELL_001..): they land at the end."""
    start = dt.date(2030, 1, 1)
    return [
        {"WellCode": f"{prefix}{i // 100:03d}", "ProductionDate": (start + dt.timedelta(days=i % 100)).isoformat(),
         "OilProduction": 1.5, "GasProduction": 2.5, "WaterProduction": 0.5}
        for i in range(n_rows)
    ]


@pytest.fixture
def instance():
    with dg.instance_for_test() as inst:
        yield inst


@pytest.fixture
def source(demo_server):
    return demo_server(rows=ROWS, days_per_well=500)


def test_first_tick_adds_all_pages_and_requests_one_run(instance, source, tmp_path):
    defs = definitions(source.base_url, tmp_path)
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


def test_unchanged_source_skips_with_reason(instance, source, tmp_path):
    defs = definitions(source.base_url, tmp_path)
    _, cursor = tick(instance, defs, None)
    result, cursor2 = tick(instance, defs, cursor)
    message = skip_message(result)
    assert message.startswith("source unchanged")
    assert "5000 rows" in message
    assert cursor2 == cursor
    # and again: the same work is never requested twice
    assert skip_message(tick(instance, defs, cursor2)[0]).startswith("source unchanged")


def test_growth_adds_new_pages_and_one_run_from_the_old_last_page(instance, source, tmp_path):
    defs = definitions(source.base_url, tmp_path)
    first, cursor = tick(instance, defs, None)
    # the source grows by 2.5 pages: 5000 -> 7500 rows, pages 00005..00007 are new
    response = httpx.post(f"{source.admin_url}/rows", json=new_wells(2500), timeout=120)
    response.raise_for_status()
    result, cursor2 = tick(instance, defs, cursor)
    assert isinstance(result, dg.SensorResult)
    [request] = result.dynamic_partitions_requests
    assert list(request.partition_keys) == keys(5, 7)
    [run] = result.run_requests
    assert (run.tags[START], run.tags[END]) == ("00004", "00007")
    assert run.run_key != first.run_requests[0].run_key
    assert json.loads(cursor2)["count"] == 7500
    assert instance.get_dynamic_partitions("odata_pages") == keys(0, 7)
    # nothing new afterwards
    assert skip_message(tick(instance, defs, cursor2)[0]).startswith("source unchanged")

    # half a page more: no new key, the partial last page again
    httpx.post(f"{source.admin_url}/rows", json=new_wells(300, prefix="WELL_ZZ"), timeout=120).raise_for_status()
    result, _ = tick(instance, defs, cursor2)
    assert not result.dynamic_partitions_requests
    [run] = result.run_requests
    assert (run.tags[START], run.tags[END]) == ("00007", "00007")


def test_unreachable_source_skips_with_the_error_and_adds_nothing(instance, tmp_path):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    defs = definitions(f"http://127.0.0.1:{port}/odata", tmp_path)
    result, cursor = tick(instance, defs, json.dumps({"count": 10, "page_size": PAGE_SIZE, "seq": 1}))
    message = skip_message(result)
    assert message.startswith("source unreachable: EXTERNAL_API_ERROR:")
    assert f"127.0.0.1:{port}" in message or "connect" in message.lower()
    assert instance.get_dynamic_partitions("odata_pages") == []
    assert json.loads(cursor)["count"] == 10  # cursor untouched


def test_server_error_is_reported(instance, source, tmp_path):
    httpx.put(f"{source.admin_url}/faults", json=[{"kind": "status", "status": 500}], timeout=10).raise_for_status()
    result, _ = tick(instance, definitions(source.base_url, tmp_path), None)
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

def test_plan_shrink_moves_the_cursor_without_a_run():
    plan = plan_tick({"count": 5000, "page_size": 1000, "source": "s", "seq": 3}, 4200, 1000, "s", keys(0, 4))
    assert plan.ranges == [] and plan.to_add == []
    assert "shrank from 5000 to 4200" in plan.reason
    assert plan.cursor["count"] == 4200 and plan.cursor["seq"] == 4


def test_plan_page_size_change_refuses_and_keeps_the_cursor():
    plan = plan_tick({"count": 5000, "page_size": 1000, "source": "s"}, 5000, 500, "s", keys(0, 4))
    assert plan.ranges == [] and plan.cursor is None
    assert "page size changed from 1000 to 500" in plan.reason


def test_plan_other_source_starts_over():
    plan = plan_tick({"count": 5000, "page_size": 1000, "source": "a"}, 3000, 1000, "b", keys(0, 4))
    assert plan.ranges == [(0, 2)]
    assert "source changed" in plan.reason


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


def test_run_keys_make_a_lost_cursor_harmless(instance, source, tmp_path):
    """If the daemon lost the cursor update, the repeated tick has the same run key,
    so Dagster drops the repeat instead of importing the pages again."""
    defs = definitions(source.base_url, tmp_path)
    with context_for(instance, defs, None) as context, context_for(instance, defs, None) as again:
        assert odata_page_sensor(context).run_requests[0].run_key == odata_page_sensor(again).run_requests[0].run_key


def test_partition_definition_name():
    assert odata_pages.name == "odata_pages"


def test_invalid_settings_are_reported_as_such(instance):
    from well_assets.defs.resources import ODataResource

    with dg.build_sensor_context(instance=instance, resources={"odata": ODataResource(base_url="ftp://nowhere")}) as context:
        message = skip_message(odata_page_sensor(context))
    assert message.startswith("invalid OData settings: invalid setting")
    assert instance.get_dynamic_partitions("odata_pages") == []
