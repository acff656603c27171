"""The page fetcher's process: pages, errors and log lines cross the process boundary
intact, a worker that dies is a clear error, and closing the fetcher stops its process
(also one busy with a slow page)."""

from __future__ import annotations

import logging
import os
import signal
import time

import pytest

from well_assets.errors import ExternalApiError, ValidationError, WellAssetsError
from well_assets.odata import ClientConfig, ODataClient
from well_assets.pages import fetcher as fetch_worker
from well_assets.storage.contents import key_checksums
from well_assets.validation.model import ValidationSettings
from well_assets.validation.page import validate_page
from well_assets_tests.odata_helpers import set_faults


def _task(server, page: int = 0, **config) -> fetch_worker.PageTask:
    cfg = ClientConfig(base_url=server.base_url, page_size=500, backoff_base=0.01, backoff_cap=0.05, **config)
    return fetch_worker.PageTask(cfg, page, f"{page:05d}", ValidationSettings())


@pytest.fixture
def fetcher():
    with fetch_worker.PageFetcher() as fetcher:
        yield fetcher


def _fetch(fetcher, task: fetch_worker.PageTask) -> fetch_worker.PageItem:
    return fetcher.outcome(fetcher.submit(task))


def test_a_page_is_fetched_and_validated_in_another_process(demo_server, fetcher):
    server = demo_server(rows=1500, bad_rows=0.02, seed=7)
    task = _task(server, page=1)
    done = _fetch(fetcher, task)
    assert done.error is None and done.worker_pid not in (0, os.getpid())
    # The same page fetched and validated here gives the same frames.
    with ODataClient(task.config) as client:
        here = validate_page(client.fetch_page(1).records, task.validation)
    assert done.validated.valid.equals(here.valid) and done.validated.rejects.equals(here.rejects)
    assert done.validated.rejects.height > 0 and done.validated.in_page_duplicates == here.in_page_duplicates
    assert done.validated.valid.height + done.validated.rejects.height + done.validated.in_page_duplicates == 500
    assert done.result.records == []  # validated in the worker: raw records stay there
    assert done.result.first_key is not None and done.worker_peak_rss_mb > 0
    # the key checksum the ledger records, computed beside the validation
    assert done.validated.key_checksum == key_checksums([here.valid])[0] != 0
    assert done.worker_pid == fetcher.pid and fetcher.peak_rss_mb >= done.worker_peak_rss_mb


def test_worker_log_lines_are_re_emitted_here(demo_server, fetcher, caplog):
    server = demo_server(rows=600)
    set_faults(server, [{"kind": "status", "status": 503, "times": 1}])
    caplog.set_level(logging.INFO, logger="well_assets.odata")
    done = _fetch(fetcher, _task(server, run_id="logtest"))
    assert done.error is None and done.result.retries == 1
    retries = [r for r in caplog.records if r.name == "well_assets.odata" and "retry 1/" in r.getMessage()]
    assert retries and retries[0].levelno == logging.WARNING and "request_id=logtest" in retries[0].getMessage()


@pytest.mark.parametrize(
    ("fault", "error_type", "field", "value"),
    [
        ({"kind": "rename", "from": "OilProduction", "to": "OilProd"}, ValidationError, "missing", ["OilProduction"]),
        ({"kind": "status", "status": 404}, ExternalApiError, "status", 404),
    ],
)
def test_page_errors_cross_the_boundary_typed(demo_server, fetcher, fault, error_type, field, value):
    server = demo_server(rows=600)
    set_faults(server, [fault])
    done = _fetch(fetcher, _task(server))
    assert type(done.error) is error_type and done.validated is None
    assert done.error.details[field] == value and done.error.code == error_type.code


def test_the_secret_never_comes_back_in_an_error_or_a_log(demo_server, fetcher, caplog):
    server = demo_server(rows=600, token="right-token")
    caplog.set_level(logging.DEBUG)
    done = _fetch(fetcher, _task(server, token="s3cret-worker-token"))
    assert isinstance(done.error, ExternalApiError) and done.error.status == 401
    everything = caplog.text + str(done.error) + repr(done.error) + repr(done.error.to_dict())
    assert "s3cret-worker-token" not in everything


def test_a_killed_worker_fails_its_pages_clearly(demo_server, fetcher):
    server = demo_server(rows=1200)
    first = _fetch(fetcher, _task(server))
    set_faults(server, [{"kind": "latency", "seconds": 30}])
    slow = fetcher.submit(_task(server, page=1))
    os.kill(first.worker_pid, signal.SIGKILL)
    with pytest.raises(WellAssetsError, match="page fetcher process ended"):
        fetcher.outcome(slow)
    with pytest.raises(WellAssetsError, match="page fetcher process is gone"):
        fetcher.submit(_task(server, page=2))


def test_closing_stops_the_process_even_in_the_middle_of_a_slow_page(demo_server):
    import psutil

    server = demo_server(rows=1200)
    set_faults(server, [{"kind": "latency", "seconds": 30}])
    fetcher = fetch_worker.PageFetcher().start()
    slow = fetcher.submit(_task(server, page=1))
    worker = psutil.Process(fetcher.pid)
    began = time.monotonic()
    fetcher.close(grace=0.5)
    assert time.monotonic() - began < 10
    assert not worker.is_running() or worker.status() == psutil.STATUS_ZOMBIE
    with pytest.raises(WellAssetsError, match="closed before the page came back"):
        fetcher.outcome(slow)
    with pytest.raises(WellAssetsError, match="closed"):
        fetcher.submit(_task(server, page=2))


def test_a_worker_whose_parent_dies_exits_on_its_own(demo_server, tmp_path):
    """A parent killed with SIGKILL runs no cleanup at all; its worker must not linger."""
    import subprocess
    import sys
    import textwrap

    import psutil

    script = tmp_path / "parent.py"
    script.write_text(textwrap.dedent("""
        import sys, time
        from well_assets.pages.fetcher import PageFetcher
        fetcher = PageFetcher().start()
        print(fetcher.pid, flush=True)
        time.sleep(600)
    """))
    parent = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    worker = psutil.Process(int(parent.stdout.readline()))
    parent.kill()
    parent.wait(timeout=30)
    gone, alive = psutil.wait_procs([worker], timeout=30)
    assert worker in gone and not alive


def test_a_script_without_a_main_guard_is_not_re_run_in_the_worker(demo_server, tmp_path):
    """Spawn normally re-runs the caller's script in the child; the worker must not."""
    import subprocess
    import sys
    import textwrap

    server = demo_server(rows=600)
    marker = tmp_path / "runs.txt"
    script = tmp_path / "unguarded.py"
    script.write_text(textwrap.dedent(f"""
        from well_assets.pages import fetcher as fetch_worker
        from well_assets.odata import ClientConfig
        from well_assets.validation.model import ValidationSettings
        with open({str(marker)!r}, "a") as f:
            f.write("ran\\n")
        task = fetch_worker.PageTask(ClientConfig(base_url={server.base_url!r}, page_size=500), 1,
                                     "00001", ValidationSettings())
        with fetch_worker.PageFetcher() as fetcher:
            done = fetcher.outcome(fetcher.submit(task))
        print(done.validated.valid.height)
    """))
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120,
                          cwd=os.getcwd())
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "100" and marker.read_text() == "ran\n"


def test_without_process_support_pages_are_fetched_in_a_thread(demo_server, monkeypatch, caplog):
    """Where processes cannot be started (some locked-down containers), starting the
    worker raises OSError: the fetcher falls back to a thread, logs still reach the caller."""
    server = demo_server(rows=600)
    set_faults(server, [{"kind": "status", "status": 503, "times": 1}])

    def no_processes(self):
        raise OSError(38, "Function not implemented")

    monkeypatch.setattr(fetch_worker.multiprocessing.context.SpawnProcess, "start", no_processes)
    caplog.set_level(logging.INFO)
    with fetch_worker.PageFetcher() as fetcher:
        done = _fetch(fetcher, _task(server, page=1, run_id="threaded"))
        assert fetcher.pid is None
    assert done.error is None and done.worker_pid == os.getpid() and done.worker_peak_rss_mb == 0
    assert done.validated.valid.height == 100 and done.result.retries == 1
    assert done.validated.key_checksum == key_checksums([done.validated.valid])[0]
    assert "fetching pages in a thread instead" in caplog.text
    assert "request_id=threaded" in caplog.text and "retry 1/" in caplog.text
