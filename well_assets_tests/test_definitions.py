"""The code location as Dagster and the UI see it: names, descriptions, wiring, boundaries."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import dagster as dg

from well_assets.definitions import defs

PACKAGE = Path(__file__).resolve().parents[1] / "well_assets"
ROOT = PACKAGE.parent


def test_dagster_validates_the_workspace(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "DAGSTER_HOME"}
    out = subprocess.run([sys.executable, "-m", "dagster", "definitions", "validate", "-w", str(ROOT / "workspace.yaml")],
                         capture_output=True, text=True, cwd=ROOT, env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "Validation successful for code location well_assets" in out.stderr + out.stdout


def test_assets_carry_what_the_ui_shows():
    graph = defs.resolve_asset_graph()
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
    job = defs.resolve_job_def("odata_import_job")
    assert job.description
    check_names = {key.name for key in job.asset_layer.asset_graph.asset_check_keys}
    assert check_names == {"well_production_unique_keys", "well_production_schema", "well_production_reconciliation"}
    sensor = defs.resolve_sensor_def("odata_page_sensor")
    assert sensor.default_status == dg.DefaultSensorStatus.STOPPED and sensor.description
    schedule = defs.resolve_schedule_def("odata_nightly_refresh")
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


def test_client_and_asset_code_never_import_the_demo_service_and_the_client_no_dagster():
    pipeline = [*PACKAGE.glob("odata/*.py"), *PACKAGE.glob("storage/*.py"),
                *(PACKAGE / n for n in ("assets.py", "pages.py", "schema.py", "checks.py", "report.py", "sensors.py",
                                        "schedules.py", "jobs.py", "partitions.py", "metadata.py"))]
    for path in pipeline:
        assert not any(m.startswith("well_assets.demo_service") for m in _imported_modules(path)), path
    for path in PACKAGE.glob("odata/*.py"):
        assert not any(m == "dagster" or m.startswith("dagster") for m in _imported_modules(path)), path
