"""The import report: it describes the latest import with the figures the CLI printed for
it (memory included), and charts the per-page figures of every page across pages."""

from __future__ import annotations

import base64
import json
import re

import dagster as dg
import pytest

from well_assets.cli.main import main
from well_assets.reporting import summary as report


def _report_materializations(instance) -> list[dg.AssetMaterialization]:
    records = instance.fetch_materializations(dg.AssetKey("well_production_import_report"), limit=10).records
    return [r.asset_materialization for r in records]


def test_the_report_says_what_the_cli_printed_for_the_same_import(demo_server, db_path, dagster_home, capsys):
    server = demo_server(rows=2500, bad_rows=0.01)
    first = ["import", "--base-url", server.base_url, "--database", db_path, "--page-size", "500", "--json"]
    assert main([*first, "--max-pages", "2"]) == 0  # an earlier, smaller import
    capsys.readouterr()
    assert main(first) == 0
    printed = json.loads(capsys.readouterr().out)
    with dg.DagsterInstance.get() as instance:
        latest = _report_materializations(instance)[0]
    in_report = latest.metadata["summary_json"].value
    assert in_report == printed  # every figure, timings and memory included
    performance, batch = printed["data"]["performance"], printed["data"]["batch_result"]
    assert printed["data"]["pagination_summary"]["processed_pages"] == 5  # this import, not the earlier one
    assert batch["memory_usage_mb"] > 50  # a Python process with Dagster, Polars and DuckDB
    # The wall time runs from the start of the import's run to its last commit.
    assert 0 < performance["total_execution_time_seconds"] < 120
    assert performance["average_throughput_per_second"] == pytest.approx(
        batch["processed_items"] / performance["total_execution_time_seconds"], rel=0.01)


def _svgs(markdown: str) -> list[str]:
    return [base64.b64decode(data).decode() for data in re.findall(r"\(data:image/svg\+xml;base64,([^)]+)\)", markdown)]


def test_the_report_charts_every_page_across_pages(demo_server, db_path, dagster_home):
    server = demo_server(rows=2500, bad_rows=0.01)
    assert main(["import", "--base-url", server.base_url, "--database", db_path, "--page-size", "500",
                 "--no-progress"]) == 0
    with dg.DagsterInstance.get() as instance:
        pages = _report_materializations(instance)[0].metadata["pages"].value
    svgs = _svgs(pages)
    assert [re.search(r"font-weight=\"bold\">([^<]+)<", svg).group(1) for svg in svgs] == [
        f"{title} (5 pages)" for title, _ in report.PAGE_CHARTS]
    seconds, rows, _ = svgs
    assert seconds.count("<polyline") == 4 and rows.count("<polyline") == 5
    assert ">00000<" in rows and ">00004<" in rows  # the x axis runs over the page keys


def test_charts_list_the_failed_pages(demo_server, db_path):
    import duckdb

    from well_assets.storage import latest_page_status

    server = demo_server(rows=2500, faults=[{"kind": "status", "status": 400, "skip": [1000]}])
    assert main(["import", "--base-url", server.base_url, "--database", db_path, "--page-size", "500",
                 "--no-progress"]) == 1
    with duckdb.connect(db_path, read_only=True) as con:
        pages = report.page_charts(latest_page_status(con))
    assert len(_svgs(pages)) == 3 and pages.endswith("Failed pages: 00002")


def test_charts_of_an_empty_ledger_say_so():
    import polars as pl

    assert report.page_charts(pl.DataFrame()) == "No page has been imported yet."
