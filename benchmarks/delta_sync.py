"""Delta sync against a full re-sync, after a day of changes at a source that tracks changes.

    python benchmarks/delta_sync.py [--rows 1500000] [--changes 3000] [--latency SECONDS] [--out benchmarks/RESULTS-delta.md]

1. The bundled OData service (a separate process, as in run.py) with ``--rows`` rows.
2. A baseline: ``well-assets import`` into a fresh DuckDB file. It takes the source's delta
   link (the service applies ``odata.track-changes``).
3. ``--changes`` changes through the service's admin API: a third new rows (a new day for
   wells), a third corrected values, a third deletions.
4. Two copies of the baseline file, synced each way, each in a process of its own:
   - full re-sync: ``well-assets import`` on its copy (reads every page by its key range);
   - delta sync: one tick of ``odata_page_sensor`` and the runs it requests, executed in
     process on a throwaway Dagster instance (what the daemon does), on the other copy.
   Wall time (around the process: Python and Dagster start-up count) and the service's
   request count before and after each.
5. The two tables are compared row by row (EXCEPT both ways, values included) and with the
   source's count; the delta-synced copy's ledger must show no page read by offset or range.

Results go to stdout and to a markdown file (default benchmarks/RESULTS-delta.md).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import duckdb

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from run import DemoService, clean_env, machine_info, well_assets_cmd  # noqa: E402

# The delta sync as the daemon runs it: a sensor tick, then its runs (in this process).
DELTA_SYNC = """
import json, sys, time
began = time.perf_counter()
import dagster as dg
from well_assets.defs.definitions import build_definitions
from well_assets.defs.partitions import register_pages
from well_assets.settings import Settings
from well_assets import storage

base_url, database = sys.argv[1], sys.argv[2]
defs = build_definitions(Settings(base_url=base_url, database=database))
with storage.DuckDBStore(database).connection(read_only=True) as con:
    pages = len(storage.page_map(con, defs.resources["odata"].source_identity()))
with dg.DagsterInstance.ephemeral() as instance:
    register_pages(instance, pages)
    sensor = defs.resolve_sensor_def("odata_page_sensor")
    with dg.build_sensor_context(instance=instance, definitions=defs, resources=defs.resources) as context:
        result = sensor(context)
    requests = list(result.run_requests or []) if isinstance(result, dg.SensorResult) else []
    job = defs.resolve_job_def("odata_import_job")
    runs = [job.execute_in_process(instance=instance, tags=r.tags, raise_on_error=False) for r in requests]
print(json.dumps({"runs": len(runs), "success": all(r.success for r in runs) and bool(runs),
                  "pages": sum(int(r.tags["dagster/asset_partition_range_end"])
                               - int(r.tags["dagster/asset_partition_range_start"]) + 1 for r in requests),
                  "in_process_seconds": time.perf_counter() - began}))
"""


def _post(url: str, payload, method: str = "POST") -> dict:
    request = urllib.request.Request(url, data=json.dumps(payload).encode(), method=method,
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=300) as response:
        return json.loads(response.read() or b"{}")


def _get(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=300) as response:
        return json.loads(response.read())


def make_changes(service: DemoService, changes: int) -> dict:
    """A third new rows, a third corrected values, a third deletions, spread over the keys."""
    third = changes // 3
    step = max(service.rows // (2 * third + 1), 1)
    picked = []
    url = f"{service.base_url}/WellProduction?$orderby=WellCode,ProductionDate&$top=1&$skip="
    for i in range(2 * third):
        picked.extend(_get(url + str(i * step))["value"])
    corrected = [{**r, "OilProduction": 1234.5} for r in picked[:third]]
    deleted = [{"WellCode": r["WellCode"], "ProductionDate": r["ProductionDate"]} for r in picked[third:]]
    new = [{"WellCode": f"WELL_NEW{i // 100:04d}", "ProductionDate": (dt.date(2031, 1, 1) + dt.timedelta(days=i % 100)).isoformat(),
            "OilProduction": 1.0, "GasProduction": 2.0, "WaterProduction": 3.0} for i in range(changes - 2 * third)]
    _post(f"{service.admin_url}/rows", corrected + new)
    _post(f"{service.admin_url}/rows", deleted, method="DELETE")
    return {"new": len(new), "corrected": len(corrected), "deleted": len(deleted)}


def timed(argv: list[str], cwd: Path, service: DemoService) -> dict:
    before = service.stats()["requests"]
    began = time.perf_counter()
    done = subprocess.run(argv, cwd=cwd, env=clean_env(), capture_output=True, text=True, timeout=7200)
    wall = time.perf_counter() - began
    if done.returncode != 0:
        raise RuntimeError(f"{argv[:3]} failed ({done.returncode}): {done.stderr[-3000:]}")
    return {"wall": wall, "requests": service.stats()["requests"] - before, "stdout": done.stdout}


def table_facts(db: Path) -> dict:
    con = duckdb.connect(str(db), read_only=True)
    try:
        return {
            "rows": con.execute("SELECT count(*) FROM well_production").fetchone()[0],
            "deleted_kept": con.execute("SELECT count(*) FROM well_production_deleted").fetchone()[0],
            # pages read from the source after the baseline import (the first import in the ledger)
            "pages_read": con.execute("SELECT count(*) FROM odata_page_log WHERE read_by IN ('offset', 'range') AND "
                                      "import_id <> (SELECT import_id FROM odata_page_log ORDER BY log_id LIMIT 1)"
                                      ).fetchone()[0],
            "delta_pages": con.execute("SELECT count(*) FROM odata_page_log WHERE read_by = 'delta'").fetchone()[0],
        }
    finally:
        con.close()


def differing_rows(a: Path, b: Path) -> int:
    con = duckdb.connect()
    try:
        con.execute(f"ATTACH '{a}' AS a (READ_ONLY)")
        con.execute(f"ATTACH '{b}' AS b (READ_ONLY)")
        cols = "well_code, production_date, oil_production, gas_production, water_production"
        return con.execute(f"SELECT count(*) FROM ((SELECT {cols} FROM a.well_production EXCEPT SELECT {cols} FROM "
                           f"b.well_production) UNION ALL (SELECT {cols} FROM b.well_production EXCEPT SELECT {cols} "
                           f"FROM a.well_production))").fetchone()[0]
    finally:
        con.close()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=1_500_000)
    ap.add_argument("--changes", type=int, default=3000)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--latency", type=float, default=None,
                    help="the service's fixed latency per response, seconds (a remote source)")
    ap.add_argument("--out", default=str(HERE / "RESULTS-delta.md"))
    args = ap.parse_args(argv)
    started = dt.datetime.now(dt.UTC)
    work = Path(tempfile.mkdtemp(prefix="wa-delta-"))
    try:
        with DemoService(args.rows, seed=args.seed, workdir=work, latency=args.latency) as service:
            base = work / "base.duckdb"
            print(f"baseline import of {args.rows} rows ...", flush=True)
            baseline = timed([*well_assets_cmd(), "import", "--base-url", service.base_url, "--database", str(base),
                              "--json", "--no-progress"], work, service)
            made = make_changes(service, args.changes)
            served = service.stats()["rows"]
            full_db, delta_db = work / "full.duckdb", work / "delta.duckdb"
            shutil.copy(base, full_db)
            shutil.copy(base, delta_db)
            print(f"changes: {made}; full re-sync ...", flush=True)
            full = timed([*well_assets_cmd(), "import", "--base-url", service.base_url, "--database", str(full_db),
                          "--json", "--no-progress"], work, service)
            print("delta sync ...", flush=True)
            delta = timed([sys.executable, "-c", DELTA_SYNC, service.base_url, str(delta_db)], work, service)
            delta_out = json.loads(delta["stdout"].strip().splitlines()[-1])
            facts = {"full": table_facts(full_db), "delta": table_facts(delta_db)}
            differ = differing_rows(full_db, delta_db)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    ok = delta_out["success"] and differ == 0 and facts["delta"]["rows"] == served == facts["full"]["rows"]
    machine = machine_info()
    lines = [
        "# Delta sync against a full re-sync",
        "",
        f"Run {started:%Y-%m-%d %H:%M} UTC, `python benchmarks/delta_sync.py --rows {args.rows} --changes {args.changes}"
        + (f" --latency {args.latency:g}" if args.latency else "") + "`;"
        f" well-assets commit {machine.get('commit', '?')}; {machine.get('cpu', '')}, {machine.get('usable_cores')} cores",
        "",
        f"Baseline: `well-assets import` of {args.rows:,} rows in {baseline['wall']:.1f} s ({baseline['requests']} requests); "
        f"it took the source's delta link. Then at the source: {made['new']} new rows, {made['corrected']} corrected values, "
        f"{made['deleted']} deletions ({served:,} rows served after them).",
        "",
        "| sync | wall s (process) | requests | pages written | rows in table | deleted rows kept |",
        "|---|---:|---:|---:|---:|---:|",
        f"| full re-sync (`well-assets import` again) | {full['wall']:.1f} | {full['requests']} | "
        f"{facts['full']['pages_read']} read by range | {facts['full']['rows']:,} | {facts['full']['deleted_kept']} |",
        f"| delta sync (a sensor tick and its {delta_out['runs']} run(s)) | {delta['wall']:.1f} | {delta['requests']} | "
        f"{facts['delta']['delta_pages']} from the delta, {facts['delta']['pages_read']} read | {facts['delta']['rows']:,} | "
        f"{facts['delta']['deleted_kept']} |",
        "",
        f"Delta / full: wall **{delta['wall'] / full['wall']:.3f}x**, requests **{delta['requests'] / full['requests']:.4f}x**. "
        f"The two tables differ in {differ} row(s) (values included); both hold the source's {served:,} rows: "
        f"**{'exact' if ok else 'NOT EXACT'}**.",
        "",
    ]
    text = "\n".join(lines)
    print(text)
    Path(args.out).write_text(text)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
