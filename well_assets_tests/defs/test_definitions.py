"""The code location as Dagster and the UI see it: names, descriptions, wiring, boundaries."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import dagster as dg

from well_assets.defs.definitions import defs

DEFS = defs()  # what Dagster loads

PACKAGE = Path(__file__).resolve().parents[2] / "well_assets"
ROOT = PACKAGE.parent


def test_dagster_validates_the_workspace(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "DAGSTER_HOME"}
    out = subprocess.run([sys.executable, "-m", "dagster", "definitions", "validate", "-w", str(ROOT / "workspace.yaml")],
                         capture_output=True, text=True, cwd=ROOT, env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "Validation successful for code location well_assets" in out.stderr + out.stdout


def test_assets_carry_what_the_ui_shows():
    graph = DEFS.resolve_asset_graph()
    for name in ("well_production", "well_production_import_report"):
        node = graph.get(dg.AssetKey(name))
        assert node.description and len(node.description) > 40
        assert node.group_name == "well_production"
        assert node.owners == ["team:data-engineering"]
        assert "duckdb" in node.kinds
    production = graph.get(dg.AssetKey("well_production"))
    assert production.partitions_def.name == "odata_pages"
    assert production.pools == {"duckdb"}
    schema = production.metadata["dagster/column_schema"]
    assert [c.name for c in schema.columns][:5] == [
        "well_code", "production_date", "oil_production", "gas_production", "water_production"]


def test_job_sensor_schedule_and_checks_are_wired():
    job = DEFS.resolve_job_def("odata_import_job")
    assert job.description
    check_names = {key.name for key in job.asset_layer.asset_graph.asset_check_keys}
    assert check_names == {"well_production_unique_keys", "well_production_schema", "well_production_reconciliation"}
    sensor = DEFS.resolve_sensor_def("odata_page_sensor")
    assert sensor.default_status == dg.DefaultSensorStatus.STOPPED and sensor.description
    schedule = DEFS.resolve_schedule_def("odata_nightly_refresh")
    assert schedule.job_name == "odata_import_job" and schedule.description


def _imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def _modules(*folders: str) -> list[Path]:
    return [path for folder in folders for path in (PACKAGE / folder).glob("*.py")]


def test_the_libraries_know_nothing_of_dagster():
    """odata/, storage/, validation/, pages/ and reporting/ are plain libraries: only
    defs/ (the Dagster layer) and cli/ (a Dagster client) import Dagster."""
    libraries = _modules("odata", "storage", "validation", "pages", "reporting") + [
        PACKAGE / name for name in ("names.py", "settings.py", "errors.py")]
    assert len(libraries) > 20
    for path in libraries:
        assert not any(m == "dagster" or m.startswith(("dagster.", "dagster_")) for m in _imported_modules(path)), path


def test_nothing_but_the_resource_and_the_cli_starts_the_demo_service():
    for path in [*_modules("odata", "storage", "validation", "pages", "reporting", "defs")]:
        if path.name == "resources.py":
            continue  # the OData resource starts it when no ODATA_BASE_URL is set
        assert not any(m.startswith("well_assets.demo_service") for m in _imported_modules(path)), path


def test_importing_the_code_location_reads_and_starts_nothing(tmp_path):
    """Settings are read when Dagster calls defs(), not at import: a bad value does not
    stop the import, and nothing is started or written."""
    code = "import well_assets.defs.definitions as d; import threading; print(threading.active_count())"
    env = {**os.environ, "ODATA_PAGE_SIZE": "not a number", "WELLS_DATABASE": str(tmp_path / "db" / "w.duckdb")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, env=env, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "1"  # no server thread, no fetcher reader
    assert list(tmp_path.iterdir()) == []
