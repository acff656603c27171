"""Nothing outlives its owner: a developer's stack with the bundled demo service (no
ODATA_BASE_URL), the sensor ticking and a run from the UI, then Ctrl-C (SIGINT) of
`dagster dev`, or of the webserver and the daemon: 30 seconds later no process of the
stack is left (code servers, run workers, step workers, page fetchers). While it runs,
the demo service a sensor tick starts in the code server is stopped when the tick ends.
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


@pytest.mark.parametrize("how", ["dagster dev", "webserver and daemon"])
def test_ctrl_c_leaves_no_process_of_the_stack(tmp_path, how):
    stack = Stack(tmp_path, base_url=None, page_size=1000,
                  extra_env={"WELL_ASSETS_DEMO_ROWS": str(DEMO_ROWS), "WELL_ASSETS_DEMO_BAD_ROWS": "0",
                             "WELL_ASSETS_SENSOR_INTERVAL": "10"})
    try:
        stack.start_dev() if how == "dagster dev" else stack.start()
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
