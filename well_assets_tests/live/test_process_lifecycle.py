"""Nothing outlives its owner. A developer's `dagster dev` with the bundled demo service
(no ODATA_BASE_URL), the sensor ticking and a run from the UI, then Ctrl-C (SIGINT): 30
seconds later no process of the stack is left (code servers, run workers, step workers,
page fetchers); while it runs, the demo service a sensor tick starts in the code server
is stopped when the tick ends. And the session's webserver and daemon, after every live
test ran on them: Ctrl-C of both leaves nothing either.
"""

from __future__ import annotations

import time

import psutil
import pytest

from well_assets_tests.live_stack import Stack, table_rows, wait_for

pytestmark = pytest.mark.slow

DEMO_ROWS = 3000  # 3 pages of 1000


def listening_ports(process: psutil.Process) -> set[int]:
    try:
        return {c.laddr.port for c in process.net_connections(kind="tcp") if c.status == psutil.CONN_LISTEN}
    except psutil.Error:
        return set()


def code_servers(stack: Stack) -> list[psutil.Process]:
    found = []
    for process in stack.track():
        try:
            if "api grpc" in " ".join(process.cmdline()):
                found.append(process)
        except psutil.Error:
            continue
    return found


def test_ctrl_c_of_dagster_dev_leaves_no_process(tmp_path):
    stack = Stack(tmp_path, base_url=None, page_size=1000,
                  extra_env={"WELL_ASSETS_DEMO_ROWS": str(DEMO_ROWS), "WELL_ASSETS_DEMO_BAD_ROWS": "0",
                             "WELL_ASSETS_SENSOR_INTERVAL": "10"})
    try:
        stack.start_dev()
        sensor = stack.start_sensor()
        # The sensor's first tick registers the demo source's pages and imports them; its
        # run uses the bundled service too, started in the run's own process.
        runs = wait_for("a sensor run", lambda: stack.runs({"well_assets/trigger": "sensor"}), 180,
                        on_timeout=stack.logs)
        assert stack.wait(runs[0]["runId"])["status"] == "SUCCESS", stack.logs()
        assert len(table_rows(stack.database)) == DEMO_ROWS
        run = stack.wait(stack.materialize_partition("00001"))  # the UI's Materialize
        assert run["status"] == "SUCCESS", stack.logs()
        stack.assert_runs_left_nothing()
        # Between ticks no code server holds a demo service open (each tick stops its own).
        servers = code_servers(stack)
        assert servers
        wait_for("no demo service listening in a code server",
                 lambda: not any(listening_ports(p) for p in servers), 30, interval=0.2)
        stack.stop_sensor(sensor)

        stack.interrupt()  # Ctrl-C
        began = time.monotonic()
        wait_for("every process of the stack gone", lambda: not stack.leftovers(), 30,
                 on_timeout=lambda: "\n".join(stack.leftovers()) + "\n" + stack.logs())
        assert time.monotonic() - began <= 30
    finally:
        stack.stop()


@pytest.mark.stops_live_stack
def test_ctrl_c_of_the_webserver_and_the_daemon_leaves_no_process(live_stack):
    """Runs last (conftest orders it): the session's stack, with every run it served, stops."""
    live_stack.assert_runs_left_nothing()
    live_stack.interrupt()  # Ctrl-C in both terminals
    wait_for("every process of the stack gone", lambda: not live_stack.leftovers(), 30,
             on_timeout=lambda: "\n".join(live_stack.leftovers()) + "\n" + live_stack.logs())
