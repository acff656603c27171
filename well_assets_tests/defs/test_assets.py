"""The assets, checks and report as Dagster runs them: per-page metadata, checks, load_input."""

from __future__ import annotations

import dagster as dg
import polars as pl
import pytest

from well_assets.defs.definitions import build_definitions
from well_assets.defs.jobs import range_tags
from well_assets.defs.partitions import register_pages
from well_assets.settings import Settings
from well_assets_tests.expected import expected_table


@pytest.fixture
def instance():
    with dg.instance_for_test() as inst:
        yield inst


def _defs(server, db_path, page_size=500) -> dg.Definitions:
    return build_definitions(Settings(base_url=server.base_url, entity_set="WellProduction",
                                      page_size=page_size, filter=None, database=db_path))


def _run_pages(defs, instance, first, last, n_pages):
    register_pages(instance, n_pages)
    return defs.resolve_job_def("odata_import_job").execute_in_process(
        instance=instance, tags=range_tags(first, last), raise_on_error=False)


def test_ranged_run_records_per_page_metadata_checks_and_report(demo_server, db_path, instance):
    server = demo_server(rows=2000, bad_rows=0.01)
    result = _run_pages(_defs(server, db_path), instance, 0, 3, 4)
    assert result.success

    mats = [e.event_specific_data.materialization for e in result.all_events
            if e.event_type_value == "ASSET_MATERIALIZATION"]
    pages = {m.partition: m.metadata for m in mats if m.asset_key == dg.AssetKey("well_production")}
    assert sorted(pages) == ["00000", "00001", "00002", "00003"]
    rejected_per_page = {key: md["rows_rejected"].value for key, md in pages.items()}
    assert sum(rejected_per_page.values()) == sum(1 for b in server.state.bad_rows() if b["kind"] != "duplicate_key")
    for key, md in pages.items():
        assert md["page"].value == int(key)  # per-page figures, not one copy for the range
        assert md["rows_fetched"].value == 500
        assert md["dagster/row_count"].value == 500 - md["rows_rejected"].value
        assert md["status"].value == "succeeded"
        assert md["fetch_seconds"].value >= 0 and md["db_seconds"].value > 0
        assert "dagster/column_schema" not in md  # definition metadata, not per page

    report = next(m for m in mats if m.asset_key == dg.AssetKey("well_production_import_report"))
    summary = report.metadata["summary_json"].value
    assert summary["success"] is True
    assert summary["data"]["pagination_summary"]["processed_pages"] == 4
    assert summary["data"]["import_summary"]["error_records"] == sum(rejected_per_page.values())
    assert "| import_summary | new_records |" in report.metadata["summary"].value

    checks = {e.event_specific_data.asset_check_key.name: e.event_specific_data for e in result.all_events
              if e.event_type_value == "ASSET_CHECK_EVALUATION"}
    assert set(checks) == {"well_production_unique_keys", "well_production_schema", "well_production_reconciliation"}
    assert all(c.passed for c in checks.values())
    assert checks["well_production_reconciliation"].metadata["pages_checked"].value == 4


def test_reconciliation_fails_naming_the_pages_when_as_many_rows_are_missing_as_stale(demo_server, db_path, instance):
    import datetime as dt

    import duckdb

    server = demo_server(rows=2000, bad_rows=0.0)
    defs = _defs(server, db_path)
    assert _run_pages(defs, instance, 0, 3, 4).success
    con = duckdb.connect(db_path)
    # Five rows of page 00001 lost, five stale rows in page 00003: the total is unchanged.
    lost = con.execute("select well_code, production_date from well_production order by 1, 2 limit 5 offset 600").fetchall()
    con.executemany("delete from well_production where well_code = ? and production_date = ?", lost)
    last = con.execute("select max(well_code) from well_production").fetchone()[0]
    con.executemany("insert into well_production (well_code, production_date) values (?, ?)",
                    [(last, dt.date(2099, 1, d)) for d in range(1, 6)])
    assert con.execute("select count(*) from well_production").fetchone()[0] == 2000
    con.close()
    result = defs.resolve_job_def("odata_import_job").get_subset(
        asset_selection=set(), asset_check_selection={dg.AssetCheckKey(dg.AssetKey("well_production"),
                                                                       "well_production_reconciliation")}
    ).execute_in_process(instance=instance, raise_on_error=False)
    check = next(e.event_specific_data for e in result.all_events if e.event_type_value == "ASSET_CHECK_EVALUATION")
    assert check.passed is False
    assert check.severity == dg.AssetCheckSeverity.ERROR
    assert check.metadata["pages_differing"].value == ["00001", "00003"]


def _reconciliation(defs, instance):
    result = defs.resolve_job_def("odata_import_job").get_subset(
        asset_selection=set(), asset_check_selection={dg.AssetCheckKey(dg.AssetKey("well_production"),
                                                                       "well_production_reconciliation")}
    ).execute_in_process(instance=instance, raise_on_error=False)
    return next(e.event_specific_data for e in result.all_events if e.event_type_value == "ASSET_CHECK_EVALUATION")


def test_reconciliation_fails_naming_the_pages_the_source_changed_since_their_sync(demo_server, db_path, instance):
    import httpx

    server = demo_server(rows=2000, bad_rows=0.005)
    defs = _defs(server, db_path, page_size=200)  # 10 pages: counted in groups 00000..00007, 00008..00009
    assert _run_pages(defs, instance, 0, 9, 10).success
    assert _reconciliation(defs, instance).passed
    # two rows of page 00002 deleted at the source, two added after the last one: the total is unchanged
    records = server.state.records()
    httpx.request("DELETE", f"{server.admin_url}/rows", timeout=30, json=[
        {"WellCode": r["WellCode"], "ProductionDate": r["ProductionDate"]} for r in records[500:502]]
    ).raise_for_status()
    httpx.post(f"{server.admin_url}/rows", timeout=30, json=[
        {**records[0], "WellCode": "WELL_Z", "ProductionDate": day} for day in ("2030-01-01", "2030-01-02")]
    ).raise_for_status()
    check = _reconciliation(defs, instance)
    assert check.passed is False and check.severity == dg.AssetCheckSeverity.ERROR
    assert check.metadata["pages_behind_source"].value == ["00002", "00009"]
    assert check.metadata["pages_differing"].value == []  # the table still holds what each sync left
    assert "pages behind the source: 00002, 00009" in check.description


def test_downstream_asset_loads_the_table_through_the_io_manager(demo_server, db_path, instance):
    server = demo_server(rows=1000)
    defs = _defs(server, db_path)
    assert _run_pages(defs, instance, 0, 1, 2).success
    seen = {}

    @dg.asset(ins={"well_production": dg.AssetIn(partition_mapping=dg.AllPartitionMapping())},
              io_manager_key="mem")
    def production_per_well(well_production: pl.DataFrame) -> pl.DataFrame:
        seen["frame"] = well_production
        return well_production.group_by("well_code").len()

    downstream = dg.Definitions(
        assets=[production_per_well, *[a for a in defs.assets]],
        resources={**defs.resources, "mem": dg.InMemoryIOManager()},
    )
    result = downstream.resolve_implicit_global_asset_job_def().get_subset(
        asset_selection={dg.AssetKey("production_per_well")}
    ).execute_in_process(instance=instance)
    assert result.success
    frame = seen["frame"]
    assert frame.height == len(expected_table(server)) == 1000
    assert frame.columns[:5] == ["well_code", "production_date", "oil_production", "gas_production", "water_production"]


def test_reconciliation_warns_when_the_source_cannot_be_counted_and_the_table_matches_its_syncs(
        demo_server, db_path, instance):
    from well_assets_tests.odata_helpers import set_faults

    server = demo_server(rows=1000)
    defs = _defs(server, db_path, page_size=250)
    assert _run_pages(defs, instance, 0, 3, 4).success
    set_faults(server, [{"kind": "status", "status": 400}])  # not retried: every count fails at once
    check = _reconciliation(defs, instance)
    assert check.passed is False and check.severity == dg.AssetCheckSeverity.WARN
    assert check.metadata["source_error"].value.startswith("EXTERNAL_API_ERROR")
    assert check.metadata["pages_checked"].value == 4 and check.metadata["pages_differing"].value == []
    assert "the source could not be counted" in check.description
