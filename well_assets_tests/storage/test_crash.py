"""A run killed with SIGKILL in the middle of a page's transaction leaves nothing of that page."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from well_assets_tests.expected import expected_table, query, stored_table

# Runs the real CLI in a child process; the only change is that the page's transaction
# stops after its rows were upserted (before the ledger row and COMMIT) and waits to be
# killed, so the kill lands inside the transaction every time.
CHILD = textwrap.dedent(
    """
    import pathlib, sys, time
    from well_assets.storage import page_write

    kill_page, marker = int(sys.argv[1]), pathlib.Path(sys.argv[2])
    original = page_write._insert_ledger

    def stall(con, row, *args):
        if row["page"] == kill_page and row["status"] == "succeeded":
            rows = con.execute("select count(*) from well_production").fetchall()[0][0]
            marker.write_text(str(rows))
            time.sleep(600)
        return original(con, row, *args)

    page_write._insert_ledger = stall
    from well_assets.cli.main import main
    sys.exit(main(sys.argv[3:]))
    """
)


def test_sigkill_mid_page_then_rerun_gives_the_exact_table(demo_server, db_path, tmp_path):
    server = demo_server(rows=3000, bad_rows=0.01)
    marker = tmp_path / "in-transaction"
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    args = ["import", "--base-url", server.base_url, "--database", db_path, "--page-size", "500", "--json"]
    child = subprocess.Popen([sys.executable, str(script), "3", str(marker), *args],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while not marker.exists():
            assert child.poll() is None, child.communicate()
            assert time.monotonic() < deadline, "the child never reached page 3's transaction"
            time.sleep(0.05)
        rows_inside_transaction = int(marker.read_text())
        os.killpg(child.pid, signal.SIGKILL)
    finally:
        if child.poll() is None:
            os.killpg(child.pid, signal.SIGKILL)
        child.wait(timeout=30)
    assert child.returncode == -signal.SIGKILL

    # Inside the transaction page 3 had been upserted; after the kill none of it is there.
    pages_done = query(db_path, "select page from odata_page_log where status = 'succeeded' order by page")
    assert pages_done == [(0,), (1,), (2,)]
    committed = query(db_path, "select count(*), max(source_page) from well_production")[0]
    assert committed[1] == 2 and rows_inside_transaction > committed[0]
    assert query(db_path, "select count(*) from well_production where source_page = 3")[0][0] == 0

    rerun = subprocess.run([sys.executable, "-m", "well_assets.cli.main", *args], capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert stored_table(db_path) == expected_table(server)
    assert Path(db_path).exists()
