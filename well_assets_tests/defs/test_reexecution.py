"""Dagster's re-execute from failure completes an import, reusing the run group's cache."""

from __future__ import annotations

import dagster as dg

from well_assets.defs.jobs import range_tags
from well_assets.defs.partitions import register_pages
from well_assets.storage import page_write
from well_assets_tests.expected import expected_table, query, stored_table
from well_assets_tests.reexecution_job import import_job


def test_reexecute_from_failure_after_a_database_failure(demo_server, db_path, dagster_home, tmp_path, monkeypatch):
    server = demo_server(rows=2000, bad_rows=0.01)
    monkeypatch.setenv("ODATA_BASE_URL", server.base_url)
    monkeypatch.setenv("ODATA_PAGE_SIZE", "500")
    monkeypatch.setenv("WELLS_DATABASE", db_path)
    original = page_write._insert_ledger

    def fail_page_two(con, row, *args):  # the database fails inside page 2's transaction
        if row["page"] == 2 and row["status"] == "succeeded":
            raise OSError("disk full (injected)")
        return original(con, row, *args)

    with dg.instance_for_test(temp_dir=str(dagster_home)) as instance:
        register_pages(instance, 4)
        monkeypatch.setattr(page_write, "_insert_ledger", fail_page_two)
        first = dg.execute_job(dg.reconstructable(import_job), instance, tags=range_tags(0, 3), raise_on_error=False)
        assert not first.success
        assert query(db_path, "select page, status from odata_page_log order by log_id") == [
            (0, "succeeded"), (1, "succeeded"), (2, "failed"), (3, "succeeded")]
        error = query(db_path, "select error from odata_page_log where status = 'failed'")[0][0]
        assert error.startswith("DATABASE_ERROR") and "disk full" in error
        requests_before = server.state.stats_snapshot()["requests"]

        monkeypatch.setattr(page_write, "_insert_ledger", original)
        options = dg.ReexecutionOptions.from_failure(first.run_id, instance)
        # Like the UI's "re-execute from failure", the new run keeps the parent's range tags.
        second = dg.execute_job(dg.reconstructable(import_job), instance, reexecution_options=options,
                                tags=range_tags(0, 3), raise_on_error=False)
        assert second.success
        # Only page 2 was done again, from the run group's response cache: no page requested;
        # the one request is the reconciliation check's count of the four pages' range.
        assert query(db_path, "select page, status, cache_hit, run_id from odata_page_log order by log_id")[4][:3] == (
            2, "succeeded", True)
        assert query(db_path, "select count(*) from odata_page_log")[0][0] == 5
        assert server.state.stats_snapshot()["requests"] == requests_before + 1
        assert stored_table(db_path) == expected_table(server)
        # Once every page is committed the run group's cached responses are deleted.
        assert list((tmp_path / "odata-cache").iterdir()) == []
