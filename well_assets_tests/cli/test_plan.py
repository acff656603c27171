"""The command's plan, made before Dagster starts: its client is the run's, and the pages it
reads early are the run's first pages, each read once."""

from __future__ import annotations

import dagster as dg
import pytest

from well_assets.cli import plan
from well_assets.defs.resources import resources_from_settings
from well_assets.settings import Settings
from well_assets_tests.expected import expected_table, stored_table


@pytest.mark.parametrize("secrets", [{}, {"ODATA_TOKEN": "t0ken"}, {"ODATA_USERNAME": "u", "ODATA_PASSWORD": "p"}])
def test_the_plans_client_is_the_one_the_run_reads_with(secrets, monkeypatch, tmp_path):
    for name, value in secrets.items():
        monkeypatch.setenv(name, value)
    settings = Settings.from_env({"ODATA_BASE_URL": "http://127.0.0.1:9/odata/", "ODATA_PAGE_SIZE": "250",
                                  "ODATA_CONCURRENCY": "8", "ODATA_MIN_INTERVAL": "0.5",
                                  "WELLS_DATABASE": str(tmp_path / "w.duckdb")})
    with dg.build_resources({"odata": resources_from_settings(settings)["odata"]}) as resources:
        assert resources.odata.client_config(run_id=plan.CLI_RUN_ID) == plan.source_config(settings)


def test_the_first_pages_are_read_while_dagster_starts_and_not_again(demo_server, db_path, monkeypatch):
    from well_assets.cli.main import main

    # Every response takes 0.2 s: the early reads are still in flight when the run asks for them.
    server = demo_server(rows=3000, bad_rows=0.0, faults=[{"kind": "latency", "seconds": 0.2}])
    monkeypatch.setattr(plan, "EARLY_PAGES_PER_FETCH", 2)
    server.state.stats.reset()
    assert main(["import", "--base-url", server.base_url, "--database", db_path, "--page-size", "250",
                 "--concurrency", "2", "--json"]) == 0
    assert stored_table(db_path) == expected_table(server)
    reads = [r for r in server.state.stats.recent_requests()
             if r.get("endpoint") == "collection" and "$top=0" not in r["query"].split("&")]
    assert sorted(r["skip"] or 0 for r in reads) == [250 * page for page in range(12)]  # each page once
    # the first four read early by the command (X-Request-ID cli-...), the rest by the run
    early = sorted(r["skip"] or 0 for r in reads if r["request_id"].startswith(f"{plan.CLI_RUN_ID}-"))
    assert early == [0, 250, 500, 750]
