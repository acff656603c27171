"""The table stays an exact copy of a source that changes: through the sensor's next tick
and its runs, the nightly refresh's runs, and `well-assets import`; also when rows are
deleted while an import reads the source. Over real HTTP against the bundled service
(30,000 rows, 60 wells, pages of 1000), comparing the table with the source's own rows,
values included, and the deletions with well_production_deleted.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import random

import dagster as dg
import httpx
import pytest

from well_assets.cli.importer import ImportRequest, run_import
from well_assets.defs.definitions import build_definitions
from well_assets.settings import Settings
from well_assets_tests import ticks
from well_assets_tests.expected import expected_table, query, stored_table

ROWS, WELLS, PAGE_SIZE = 30_000, 60, 1000


@pytest.fixture
def source(demo_server):
    # Without change tracking: the sensor finds changes by counting page ranges, as with a
    # source that offers no delta links (test_change_tracking covers the delta path).
    return demo_server(rows=ROWS, days_per_well=ROWS // WELLS, bad_rows=0.0, track_changes=False)


@pytest.fixture
def settings(source, db_path, dagster_home) -> Settings:
    return Settings(base_url=source.base_url, page_size=PAGE_SIZE, database=db_path)


def import_all(settings: Settings) -> dict:
    return run_import(ImportRequest(settings=settings))


def differences(source, db_path) -> tuple[int, int, int]:
    """(rows missing from the table, stale rows kept, rows with other values)."""
    expected, stored = expected_table(source), stored_table(db_path)
    missing = len(expected.keys() - stored.keys())
    stale = len(stored.keys() - expected.keys())
    other = sum(1 for key in expected.keys() & stored.keys() if expected[key] != stored[key])
    return missing, stale, other


# -- what changes at the source ------------------------------------------------------------


def one_new_day_for_every_well(source) -> list[dict]:
    last = {}
    for record in source.state.records():
        last[record["WellCode"]] = max(last.get(record["WellCode"], ""), record["ProductionDate"])
    new = [{"WellCode": well, "ProductionDate": (dt.date.fromisoformat(day) + dt.timedelta(days=1)).isoformat(),
            "OilProduction": 11.5, "GasProduction": 22.25, "WaterProduction": 3.0} for well, day in sorted(last.items())]
    httpx.post(f"{source.admin_url}/rows", json=new, timeout=60).raise_for_status()
    return new


def delete_rows(source, n: int, seed: int = 7, among: slice = slice(None)) -> list[dict]:
    records = source.state.records()[among]
    keys = [{"WellCode": r["WellCode"], "ProductionDate": r["ProductionDate"]}
            for r in random.Random(seed).sample(records, n)]
    httpx.request("DELETE", f"{source.admin_url}/rows", json=keys, timeout=60).raise_for_status()
    return keys


def correct_values(source, n: int, seed: int = 3) -> list[dict]:
    changed = [{**r, "OilProduction": 999.5} for r in random.Random(seed).sample(source.state.records(), n)]
    httpx.post(f"{source.admin_url}/rows", json=changed, timeout=60).raise_for_status()
    return changed


def deleted_keys(db_path) -> set[tuple[str, str]]:
    return {(code, day) for code, day in query(
        db_path, "select well_code, strftime(production_date, '%Y-%m-%d') from well_production_deleted")}


def sensor_tick(defs, instance, cursor):
    """A tick and its runs, as the daemon would launch them."""
    result, cursor = ticks.sensor_tick(defs, instance, cursor)
    return result, ticks.execute(defs, instance, ticks.run_requests(result)), cursor


def nightly_refresh(defs, instance) -> list[dg.ExecuteInProcessResult]:
    return ticks.execute(defs, instance, ticks.refresh(defs, instance))


# -- the table after each kind of change -------------------------------------------------------


def test_the_sensor_takes_in_a_new_day_for_every_well_and_deletions(source, settings, db_path):
    assert import_all(settings)["success"]
    defs = build_definitions(settings)
    with dg.DagsterInstance.get() as instance:
        first, _, cursor = sensor_tick(defs, instance, None)
        assert isinstance(first, dg.SkipReason) and "source unchanged: 30 page(s)" in first.skip_message

        one_new_day_for_every_well(source)  # 60 rows, in the middle of the order
        result, runs, cursor = sensor_tick(defs, instance, cursor)
        assert runs and all(run.success for run in runs)
        assert differences(source, db_path) == (0, 0, 0)

        gone = delete_rows(source, 28)
        result, runs, cursor = sensor_tick(defs, instance, cursor)
        assert runs and all(run.success for run in runs)
        assert differences(source, db_path) == (0, 0, 0)
        assert deleted_keys(db_path) == {(k["WellCode"], k["ProductionDate"]) for k in gone}

        quiet, runs, _ = sensor_tick(defs, instance, cursor)
        assert not runs and "source unchanged" in quiet.skip_message


def test_the_nightly_refresh_takes_in_inserts_deletions_and_corrected_values(source, settings, db_path):
    assert import_all(settings)["success"]
    defs = build_definitions(settings)
    one_new_day_for_every_well(source)
    gone = delete_rows(source, 28)
    correct_values(source, 10)
    with dg.DagsterInstance.get() as instance:
        runs = nightly_refresh(defs, instance)
    assert runs and all(run.success for run in runs)
    assert differences(source, db_path) == (0, 0, 0)
    assert deleted_keys(db_path) == {(k["WellCode"], k["ProductionDate"]) for k in gone}


def test_well_assets_import_again_makes_the_table_equal_the_changed_source(source, settings, db_path):
    assert import_all(settings)["success"]
    one_new_day_for_every_well(source)
    delete_rows(source, 28)
    correct_values(source, 10)
    summary = import_all(settings)
    assert summary["success"]
    imported = summary["data"]["import_summary"]
    assert (imported["new_records"], imported["deleted_records"], imported["updated_records"]) == (60, 28, 10)
    assert differences(source, db_path) == (0, 0, 0)
    # every page was read by its key range this time
    assert query(db_path, "select distinct read_by from odata_page_log where import_id = "
                          "(select import_id from odata_page_log order by log_id desc limit 1)") == [("range",)]


@pytest.mark.parametrize("concurrency", [1, 4])
def test_rows_deleted_near_the_start_while_the_import_reads_are_neither_lost_nor_kept(source, settings, db_path,
                                                                                      concurrency):
    # When page 00014 is requested, 30 rows of pages 00000..00002 disappear: every later
    # offset page starts 30 rows later than it did when the import began.
    early = [{"WellCode": r["WellCode"], "ProductionDate": r["ProductionDate"]}
             for r in random.Random(1).sample(source.state.records()[:3000], 30)]
    fault = {"kind": "change", "skip": [14 * PAGE_SIZE], "times": 1, "delete": early}
    httpx.put(f"{source.admin_url}/faults", json=[fault], timeout=30).raise_for_status()
    summary = import_all(dataclasses.replace(settings, concurrency=concurrency))
    assert summary["success"]
    assert len(source.state.records()) == ROWS - 30  # the change happened
    assert differences(source, db_path) == (0, 0, 0)
    imported = summary["data"]["import_summary"]
    archived = deleted_keys(db_path)
    early_keys = {(k["WellCode"], k["ProductionDate"]) for k in early}
    if concurrency == 1:
        # one request at a time: pages 00000..00002 were read (and their rows stored) before the change
        assert imported["repaired_records"] >= 30 and imported["deleted_records"] == 30  # the drift, reported
        assert archived == early_keys
    else:
        # several in flight: a page of the three may still be in flight when the change comes, and
        # then never holds the rows; every row that was stored and is gone is archived and counted
        assert imported["repaired_records"] > 0 and archived <= early_keys
        assert imported["deleted_records"] == len(archived) > 0


def test_a_page_that_comes_back_empty_fails_and_the_table_keeps_every_row(source, settings, db_path):
    assert import_all(settings)["success"]
    before = stored_table(db_path)
    page_3 = source.state.records()[3 * PAGE_SIZE:4 * PAGE_SIZE]
    httpx.request("DELETE", f"{source.admin_url}/rows", timeout=60,
                  json=[{"WellCode": r["WellCode"], "ProductionDate": r["ProductionDate"]} for r in page_3]
                  ).raise_for_status()
    summary = import_all(settings)
    assert not summary["success"]
    [failed] = summary["data"]["failed_page_list"]
    assert failed["partition_key"] == "00003"
    assert "ODATA_MAX_DELETE_FRACTION=0.5" in failed["error"] and "1000 of the 1000 rows" in failed["error"]
    assert stored_table(db_path) == before  # nothing deleted
    assert deleted_keys(db_path) == set()


def test_the_last_page_grown_past_a_page_is_split_into_new_pages(source, settings, db_path):
    assert import_all(settings)["success"]
    defs = build_definitions(settings)
    start = dt.date(2030, 1, 1)
    new = [{"WellCode": f"WELL_Z{i // 500:02d}", "ProductionDate": (start + dt.timedelta(days=i % 500)).isoformat(),
            "OilProduction": 1.0, "GasProduction": 2.0, "WaterProduction": 3.0} for i in range(2500)]
    httpx.post(f"{source.admin_url}/rows", json=new, timeout=60).raise_for_status()
    with dg.DagsterInstance.get() as instance:
        _, runs, _ = sensor_tick(defs, instance, None)
        assert runs and all(run.success for run in runs)
        assert differences(source, db_path) == (0, 0, 0)
        keys = instance.get_dynamic_partitions("odata_pages")
        assert keys[-3:] == ["00030", "00031", "00032"]  # 1000 + 2500 rows after page 00029's start
        materialized = instance.get_materialized_partitions(dg.AssetKey("well_production"))
        assert {"00029", "00030", "00031", "00032"} <= materialized


def test_a_key_repeated_across_a_page_boundary_lands_once_and_leaves_no_page_behind(demo_server, db_path,
                                                                                  dagster_home):
    # Salted bad rows include repeated keys; pick a page size that puts a repeat on a boundary.
    source = demo_server(rows=3000, bad_rows=0.02, seed=5, track_changes=False)
    served = httpx.get(f"{source.base_url}/WellProduction", timeout=60, params={
        "$orderby": "WellCode,ProductionDate", "$top": "3000", "$select": "WellCode,ProductionDate"}).json()["value"]
    keys = [(r["WellCode"], r["ProductionDate"]) for r in served]
    page_size = next(size for size in range(100, 400)
                     if any(keys[k - 1] == keys[k] and keys[k] != (None, None) for k in range(size, len(keys), size)))
    settings = Settings(base_url=source.base_url, page_size=page_size, database=db_path)
    assert import_all(settings)["success"]
    assert stored_table(db_path) == expected_table(source)
    with dg.DagsterInstance.get() as instance:
        # The first import's counts are the source's, page by page: nothing to re-sync.
        quiet, runs, _ = sensor_tick(build_definitions(settings), instance, None)
        assert not runs and "source unchanged" in quiet.skip_message
