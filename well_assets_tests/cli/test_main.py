"""`well-assets import`: flags, JSON output, exit codes, errors before writing, progress bar."""

from __future__ import annotations

import gc
import json
import os
import pty
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from well_assets.cli.main import main
from well_assets.errors import ConfigError
from well_assets_tests.expected import query

SUMMARY_KEYS = {
    "batch_result": {"total_items", "processed_items", "failed_items", "success_rate", "memory_usage_mb"},
    "pagination_summary": {"total_pages", "processed_pages", "failed_pages", "page_size", "average_page_time_seconds"},
    "import_summary": {"new_records", "updated_records", "duplicate_records", "deleted_records", "error_records"},
    "performance": {"total_execution_time_seconds", "average_throughput_per_second", "api_request_time_seconds",
                    "database_time_seconds", "throttle_wait_seconds"},
}


@pytest.mark.parametrize(
    ("flags", "named", "allowed"),
    [
        (["--page-size", "0"], "--page-size", "1 to 5000"),
        (["--page-size", "5001"], "--page-size", "1 to 5000"),
        (["--page-size", "ten"], "--page-size", "1 to 5000"),
        (["--base-url", "ftp://example.com/odata"], "--base-url", "http:// or https://"),
        (["--entity-set", "Well Production;drop"], "--entity-set", "OData identifier"),
        (["--start-page", "-1"], "--start-page", ">= 0"),
        (["--max-pages", "0"], "--max-pages", ">= 1"),
        (["--database", "data/"], "--database", "file path"),
        (["--database", "."], "--database", "not a directory"),  # an existing directory
        (["--database", ""], "--database", "file path"),  # given, though empty
        (["--page-size", ""], "--page-size", "1 to 5000"),
        (["--concurrency", "0"], "--concurrency", "1 to 16"),
        (["--concurrency", "17"], "--concurrency", "1 to 16"),
        (["--concurrency", "four"], "--concurrency", "1 to 16"),
        (["--change-tracking", "sometimes"], "--change-tracking", "auto, on or off"),
        (["--change-tracking", ""], "--change-tracking", "auto, on or off"),
    ],
)
def test_bad_flags_are_refused_before_anything_is_written(flags, named, allowed, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    db = tmp_path / "wells.duckdb"
    args = ["import", "--json", *flags] + ([] if "--database" in flags else ["--database", str(db)])
    assert main(args) == 2
    error = json.loads(capsys.readouterr().out)["error"]
    assert error["code"] == "VALIDATION_ERROR"
    assert named in error["message"] and allowed in error["message"]
    assert not db.exists() and not (tmp_path / "data").exists()


@pytest.mark.parametrize(
    ("name", "value", "allowed"),
    [("ODATA_PAGE_SIZE", "9000", "1 to 5000"), ("ODATA_BASE_URL", "ftp://example.com/odata", "http:// or https://"),
     ("ODATA_CONCURRENCY", "32", "1 to 16"), ("ODATA_CHANGE_TRACKING", "yes", "auto, on or off")],
)
def test_bad_environment_setting_names_the_variable(name, value, allowed, tmp_path):
    # A fresh process: the definitions module must not have been imported already.
    out = subprocess.run([sys.executable, "-m", "well_assets.cli.main", "import", "--database", str(tmp_path / "w.duckdb")],
                         capture_output=True, text=True, cwd=tmp_path, timeout=120, env={**os.environ, name: value})
    assert out.returncode == 2, out.stderr[-2000:]
    assert name in out.stderr and allowed in out.stderr and "Traceback" not in out.stderr
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(("env", "flag", "expected"), [
    (None, None, "auto"), (" ON ", None, "on"), ("", None, "auto"), ("off", "auto", "auto"), (None, "Off", "off")])
def test_change_tracking_setting_reaches_the_client_config(env, flag, expected, monkeypatch, tmp_path):
    from well_assets.defs.resources import resources_from_settings

    if env is not None:
        monkeypatch.setenv("ODATA_CHANGE_TRACKING", env)
    seen = {}

    class NoFetcher:  # no fetcher process: the import stops before it would use one
        def __init__(self, **_): pass
        def __enter__(self): return self
        def __exit__(self, *exc): return False

    def stop_import(settings, *_args):  # where the import is planned, the settings are final
        seen["settings"] = settings
        raise ConfigError("stop", None, "nothing")

    monkeypatch.setattr("well_assets.pages.fetcher.PageFetcher", NoFetcher)
    monkeypatch.setattr("well_assets.cli.plan.plan_for_url", stop_import)
    flags = ["--change-tracking", flag] if flag is not None else []
    assert main(["import", "--json", "--base-url", "http://127.0.0.1:9/odata",
                 "--database", str(tmp_path / "w.duckdb"), *flags]) == 2
    settings = seen["settings"]
    assert settings.change_tracking == expected
    odata = resources_from_settings(settings)["odata"]
    assert odata.client_config().change_tracking == expected


def test_json_summary_shape_and_exit_code(demo_server, db_path, capsys):
    server = demo_server(rows=1200, bad_rows=0.01)
    code = main(["import", "--base-url", server.base_url, "--database", db_path, "--page-size", "500", "--json"])
    summary = json.loads(capsys.readouterr().out)
    assert code == 0 and summary["success"] is True
    assert gc.isenabled()  # off for the start-up only
    for section, keys in SUMMARY_KEYS.items():
        assert keys <= set(summary["data"][section])
    assert summary["data"]["pagination_summary"]["total_pages"] == 3
    assert summary["data"]["batch_result"]["processed_items"] == 1200
    assert query(db_path, "select count(*) from well_production")[0][0] + summary["data"]["import_summary"][
        "error_records"] + summary["data"]["import_summary"]["duplicate_records"] == 1200


def test_failed_page_gives_the_failure_envelope_and_exit_1(demo_server, db_path, capsys):
    server = demo_server(rows=1500, faults=[{"kind": "status", "status": 503, "skip": [500]}])
    code = main(["import", "--base-url", server.base_url, "--database", db_path, "--page-size", "500", "--json"])
    out = json.loads(capsys.readouterr().out)
    assert code == 1 and out["success"] is False
    assert out["error"]["code"] == "EXTERNAL_API_ERROR"
    assert [p["partition_key"] for p in out["error"]["details"]["failed_pages"]] == ["00001"]
    assert "00001" in out["error"]["message"]


def test_start_past_the_end_is_a_pagination_error(demo_server, db_path, capsys):
    server = demo_server(rows=1000)
    code = main(["import", "--base-url", server.base_url, "--database", db_path, "--start-page", "5", "--json"])
    out = json.loads(capsys.readouterr().out)
    assert code == 1 and out["error"]["code"] == "PAGINATION_ERROR"
    assert "pages 0..0" in out["error"]["message"]
    assert gc.isenabled()  # on again after a start-up that failed


def test_unreachable_source_is_an_external_api_error(db_path, capsys, monkeypatch):
    monkeypatch.setenv("ODATA_MAX_RETRIES", "1")
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    code = main(["import", "--base-url", f"http://127.0.0.1:{port}/odata", "--database", db_path, "--json"])
    out = json.loads(capsys.readouterr().out)
    assert code == 1 and out["error"]["code"] == "EXTERNAL_API_ERROR"


def test_progress_bar_on_a_terminal_and_subcommand_on_path(demo_server, tmp_path):
    server = demo_server(rows=1500)
    exe = shutil.which("well-assets") or str(Path(sys.executable).parent / "well-assets")
    args = [exe, "import", "--base-url", server.base_url, "--database", str(tmp_path / "w.duckdb"),
            "--page-size", "500"]
    pid, fd = pty.fork()
    if pid == 0:  # child: the CLI on a pseudo-terminal, as a person would run it
        os.environ["COLUMNS"] = "160"
        os.execv(exe, args)
    chunks = []
    while True:
        try:
            data = os.read(fd, 65536)
        except OSError:
            break
        if not data:
            break
        chunks.append(data)
    _, status = os.waitpid(pid, 0)
    screen = b"".join(chunks).decode("utf-8", "replace")
    assert os.waitstatus_to_exitcode(status) == 0, screen[-2000:]
    assert "page 3 of 3" in screen and "100%" in screen
    assert "1,500 records" in screen and "ETA" in screen
    assert "new_records" in screen


def test_cron_run_prints_no_progress_bar(demo_server, tmp_path):
    server = demo_server(rows=1000)
    out = subprocess.run([sys.executable, "-m", "well_assets.cli.main", "import", "--base-url", server.base_url,
                          "--database", str(tmp_path / "w.duckdb")], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "page 1 of 1" not in out.stderr and "ETA" not in out.stderr
    assert "Imported 1000 records" in out.stdout
