"""Credentials never reach logs, metadata, the event log, DuckDB, caches or errors."""

from __future__ import annotations

import json
from pathlib import Path

from well_assets.cli.main import main
from well_assets_tests.expected import expected_table, query

TOKEN = "s3cr3t-T0KEN-never-logged-7f1c"


def _files_containing(root: Path, needle: bytes) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file() and needle in p.read_bytes()]


def test_token_is_used_but_stored_nowhere(demo_server, dagster_home, tmp_path, monkeypatch, capsys, caplog):
    caplog.set_level("DEBUG")
    server = demo_server(rows=1500, token=TOKEN, bad_rows=0.01)
    monkeypatch.setenv("ODATA_TOKEN", TOKEN)
    db = tmp_path / "db" / "wells.duckdb"
    assert main(["import", "--base-url", server.base_url, "--database", str(db), "--page-size", "500"]) == 0
    out = capsys.readouterr()
    rejected = sum(1 for b in server.state.bad_rows() if b["kind"] != "duplicate_key")
    assert query(str(db), "select count(*) from well_production")[0][0] == len(expected_table(server)) == 1500 - rejected - sum(
        1 for b in server.state.bad_rows() if b["kind"] == "duplicate_key")
    assert TOKEN not in out.out + out.err + caplog.text
    for root in (dagster_home, db.parent, tmp_path / "odata-cache"):
        assert _files_containing(root, TOKEN.encode()) == [], root


def test_wrong_token_error_names_the_status_not_the_secret(demo_server, tmp_path, monkeypatch, capsys, caplog):
    caplog.set_level("DEBUG")
    server = demo_server(rows=500, token="the-right-one")
    monkeypatch.setenv("ODATA_TOKEN", TOKEN)
    code = main(["import", "--base-url", server.base_url, "--database", str(tmp_path / "w.duckdb"), "--json"])
    out = capsys.readouterr()
    error = json.loads(out.out)["error"]
    assert code == 1 and error["code"] == "EXTERNAL_API_ERROR"
    assert error["details"]["status"] == 401
    assert TOKEN not in out.out + out.err + caplog.text
