"""End-to-end imports through Dagster against the bundled service over loopback HTTP."""

from __future__ import annotations

import httpx
import pytest

from well_assets.errors import ConfigError
from well_assets_tests.expected import expected_table, query, stored_table

FULL_ROWS = 150_000


def _bad_keys(server, kinds_excluded=("duplicate_key",)) -> set[tuple]:
    return {(b["WellCode"], b["ProductionDate"]) for b in server.state.bad_rows() if b["kind"] not in kinds_excluded}


def _assert_summary_adds_up(summary: dict, *, rows: int, pages: int) -> None:
    data = summary["data"]
    imp = data["import_summary"]
    assert summary["success"] is True
    assert data["batch_result"]["processed_items"] == rows
    assert imp["new_records"] + imp["updated_records"] + imp["duplicate_records"] + imp["error_records"] == rows
    assert data["batch_result"]["failed_items"] == imp["error_records"]
    assert data["pagination_summary"]["processed_pages"] == pages
    assert data["pagination_summary"]["failed_pages"] == 0


def test_full_import_lands_every_good_row_once_and_quarantines_every_bad_row(demo_server, run_import, db_path):
    server = demo_server(rows=FULL_ROWS, bad_rows=0.001)
    bad = server.state.bad_rows()
    summary = run_import(server)
    pages = -(-server.state.row_count // 1000)
    _assert_summary_adds_up(summary, rows=server.state.row_count, pages=pages)

    assert stored_table(db_path) == expected_table(server)
    rejected = {(r[0], r[1]) for r in query(db_path, "select well_code, production_date from well_production_rejects")}
    rejected_by_index = query(db_path, "select count(*), count(reason), count(raw_record) from well_production_rejects")[0]
    non_dup_bad = [b for b in bad if b["kind"] != "duplicate_key"]
    assert rejected_by_index == (len(non_dup_bad),) * 3
    for b in non_dup_bad:
        raw_key = (b["record"]["WellCode"], b["record"]["ProductionDate"])
        assert raw_key in rejected, b
    assert summary["data"]["import_summary"]["error_records"] == len(non_dup_bad)
    ledger = query(db_path, "select page, status, count(*) over (partition by page) from odata_page_log order by page")
    assert [r[0] for r in ledger] == list(range(pages))
    assert {r[1] for r in ledger} == {"succeeded"} and {r[2] for r in ledger} == {1}

    first_content = query(db_path, "select * from well_production order by all")
    second = run_import(server)
    imp = second["data"]["import_summary"]
    assert imp["new_records"] == 0 and imp["updated_records"] == 0
    assert imp["duplicate_records"] == server.state.row_count - len(non_dup_bad)
    assert query(db_path, "select * from well_production order by all") == first_content  # lineage included
    assert query(db_path, "select count(*) from well_production_rejects")[0][0] == len(non_dup_bad)


def test_source_update_between_imports_counts_as_one_update(demo_server, run_import, db_path):
    server = demo_server(rows=3000)
    run_import(server, page_size=500)
    record = dict(server.state.records()[1234])
    record["OilProduction"] = 4242.5
    httpx.post(f"{server.admin_url}/rows", json=[record]).raise_for_status()
    summary = run_import(server, page_size=500)
    imp = summary["data"]["import_summary"]
    assert (imp["new_records"], imp["updated_records"], imp["duplicate_records"]) == (0, 1, 2999)
    row = query(db_path, "select oil_production, source_page, imported_at < updated_at from well_production "
                         "where well_code = ? and production_date = ?",
                [record["WellCode"], record["ProductionDate"]])
    assert row == [(4242.5, 2, True)]


def test_failed_page_is_recorded_others_commit_and_rerun_completes(demo_server, run_import, db_path):
    server = demo_server(rows=2500, faults=[{"kind": "status", "status": 500, "skip": [1000]}])
    summary = run_import(server, page_size=500)
    assert summary["success"] is False
    failed = summary["data"]["failed_page_list"]
    assert [p["partition_key"] for p in failed] == ["00002"]
    assert failed[0]["error"].startswith("EXTERNAL_API_ERROR")
    assert query(db_path, "select count(*) from well_production")[0][0] == 2000
    assert query(db_path, "select page, status from odata_page_log order by page") == [
        (0, "succeeded"), (1, "succeeded"), (2, "failed"), (3, "succeeded"), (4, "succeeded")]

    httpx.put(f"{server.admin_url}/faults", json=[]).raise_for_status()
    rerun = run_import(server, page_size=500, start_page=2, max_pages=1)
    assert rerun["success"] is True
    assert rerun["data"]["import_summary"]["new_records"] == 500
    assert stored_table(db_path) == expected_table(server)


def test_malformed_page_fails_naming_the_column(demo_server, run_import, db_path):
    server = demo_server(rows=1500, faults=[{"kind": "rename", "from": "OilProduction", "to": "OilProd", "skip": [500]}])
    summary = run_import(server, page_size=500)
    failed = summary["data"]["failed_page_list"]
    assert [p["partition_key"] for p in failed] == ["00001"]
    assert "OilProduction" in failed[0]["error"] and "OilProd" in failed[0]["error"]
    assert failed[0]["error"].startswith("VALIDATION_ERROR")
    assert query(db_path, "select count(*) from well_production")[0][0] == 1000


def test_other_page_size_is_refused_before_anything_is_written(demo_server, run_import, db_path):
    server = demo_server(rows=2000)
    run_import(server, page_size=500)
    before = query(db_path, "select count(*) from odata_page_log")[0][0]
    with pytest.raises(ConfigError, match="ODATA_PAGE_SIZE"):
        run_import(server, page_size=400)
    assert query(db_path, "select count(*) from odata_page_log")[0][0] == before


def test_embedded_demo_service_is_used_when_no_base_url_is_set(db_path, monkeypatch):
    from well_assets.cli.importer import ImportRequest
    from well_assets.cli.importer import run_import as run
    from well_assets.settings import Settings

    monkeypatch.setenv("WELL_ASSETS_DEMO_ROWS", "1500")
    monkeypatch.setenv("WELL_ASSETS_DEMO_BAD_ROWS", "0")
    monkeypatch.setenv("ODATA_PAGE_SIZE", "500")
    monkeypatch.setenv("WELLS_DATABASE", db_path)
    settings = Settings.from_env()
    summary = run(ImportRequest(settings=settings))
    assert summary["success"] and summary["data"]["import_summary"]["new_records"] == 1500
    sources = query(db_path, "select distinct source from odata_page_log")
    assert sources == [("http://embedded-demo/odata/WellProduction",)]


def test_cli_runs_land_in_dagster_home_with_one_materialization_per_page(demo_server, db_path, dagster_home):
    import dagster as dg

    from well_assets.cli.main import main

    server = demo_server(rows=1500)
    assert main(["import", "--base-url", server.base_url, "--database", db_path, "--page-size", "500"]) == 0
    with dg.DagsterInstance.get() as instance:
        assert instance.get_dynamic_partitions("odata_pages") == ["00000", "00001", "00002"]
        records = instance.fetch_materializations(dg.AssetKey("well_production"), limit=10).records
        assert sorted(r.partition_key for r in records) == ["00000", "00001", "00002"]
        runs = instance.get_runs()
        assert len(runs) == 1 and runs[0].tags["dagster/asset_partition_range_end"] == "00002"


def test_ranged_runs_write_pages_and_only_the_last_runs_report_and_checks(demo_server, db_path, dagster_home,
                                                                          monkeypatch):
    import dagster as dg

    from well_assets.cli import plan
    from well_assets.cli.main import main

    monkeypatch.setattr(plan, "MAX_PAGES_PER_RUN", 2)
    server = demo_server(rows=2500, bad_rows=0.01)
    assert main(["import", "--base-url", server.base_url, "--database", db_path, "--page-size", "500"]) == 0
    assert stored_table(db_path) == expected_table(server)
    with dg.DagsterInstance.get() as instance:
        runs = sorted(instance.get_runs(), key=lambda r: r.tags["dagster/asset_partition_range_start"])
        assert [(r.tags["dagster/asset_partition_range_start"], r.tags["dagster/asset_partition_range_end"])
                for r in runs] == [("00000", "00001"), ("00002", "00003"), ("00004", "00004")]
        pages = instance.fetch_materializations(dg.AssetKey("well_production"), limit=10).records
        assert sorted(r.partition_key for r in pages) == ["00000", "00001", "00002", "00003", "00004"]
        reports = instance.fetch_materializations(dg.AssetKey("well_production_import_report"), limit=10).records
        assert [r.run_id for r in reports] == [runs[-1].run_id]
        evaluations = [
            e for r in runs for e in instance.all_logs(r.run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION)
        ]
        assert len(evaluations) == 3 and {e.run_id for e in evaluations} == {runs[-1].run_id}
        assert all(e.dagster_event.event_specific_data.passed for e in evaluations)


def test_writer_connection_is_reopened_between_pages_without_losing_any(demo_server, run_import, db_path, monkeypatch):
    from well_assets.defs import io_manager

    monkeypatch.setattr(io_manager, "REOPEN_EVERY_PAGES", 2)
    opened = []
    original = io_manager.DuckDBStore.open_writer
    monkeypatch.setattr(io_manager.DuckDBStore, "open_writer", lambda self, **kw: opened.append(1) or original(self, **kw))
    server = demo_server(rows=2500, bad_rows=0.01)
    summary = run_import(server, page_size=500)
    assert summary["success"] and len(opened) == 3  # pages 0-1, 2-3, 4
    assert stored_table(db_path) == expected_table(server)


@pytest.mark.parametrize("pages_per_run", [2, 500])
def test_every_page_is_requested_once(demo_server, run_import, db_path, monkeypatch, pages_per_run):
    from well_assets.cli import plan

    monkeypatch.setattr(plan, "MAX_PAGES_PER_RUN", pages_per_run)
    server = demo_server(rows=2500, bad_rows=0.01)
    server.state.stats.reset()
    summary = run_import(server, page_size=500)
    assert summary["success"] and stored_table(db_path) == expected_table(server)
    skips = [r["skip"] for r in server.state.stats.recent_requests() if r.get("endpoint") == "collection" and r["skip"]]
    assert sorted(skips) == [500, 1000, 1500, 2000]  # every page requested once (page 0 has no $skip)
