"""What-if experiments: how much would each proposed package fix buy? (evidence, not a fix)

    python benchmarks/what_if.py --rows 150000 --variants base meta memlimit all --rounds 2

Runs `well-assets import` in a subprocess per variant (through `well_assets.cli.main`,
ephemeral instance, fresh DuckDB file) against one bundled OData service process, with
monkeypatches that imitate the fixes proposed in docs/benchmarks.md, alternating the
variants round by round. Prints wall, peak RSS (wait4) and the ledger sums per variant.

The patches target the package as of the commit noted in docs/benchmarks.md; once the
lead has applied (or rejected) the fixes this script is obsolete and may fail. They
never touch the package files: they are applied in the child process only.

Variants (combine with "+", e.g. meta+prefetch_validate):
  base               the package as is
  meta               add_asset_metadata validates the step's partition keys once per step
                     instead of re-reading every dynamic partition from the instance per page
  nometa             no per-page add_asset_metadata at all (upper bound of its cost)
  memlimit           read-only DuckDB connections (asset checks, report) get memory_limit=32MB, threads=1
  prefetch_validate  validate_page runs in the prefetch thread, overlapping the DuckDB write
                     and Dagster events of the previous page
  fastval            one Polars select decides whether a page has any failing cell; Pandera
                     runs only for pages that do (same rejects, same figures)
  gcfreeze           gc.freeze() after the imports and before exit (the interpreter's final
                     collection walks Dagster's object graph: ~1 s per process)
  reopen             the writer's DuckDB connection is closed and reopened every 100 committed
                     pages (DuckDB's memory for new rows/index nodes grows until it is closed)
  all                meta+memlimit+prefetch_validate+fastval+gcfreeze+reopen
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

ALL = ("meta", "memlimit", "prefetch_validate", "fastval", "gcfreeze", "reopen")


# ----------------------------------------------------------------------------- patches


def patch_meta() -> None:
    from dagster._core.execution.context.system import StepExecutionContext

    original = StepExecutionContext.add_asset_metadata
    cache: dict[int, frozenset] = {}

    def add_asset_metadata(self, metadata, asset_key=None, partition_key=None):
        if partition_key is None or asset_key is not None:
            return original(self, metadata, asset_key=asset_key, partition_key=partition_key)
        targeted = cache.get(id(self))
        if targeted is None:
            from dagster._core.definitions.partitions.context import partition_loading_context

            with partition_loading_context(dynamic_partitions_store=self.instance):
                targeted = frozenset(self.assets_def.partitions_def.get_partition_keys_in_range(
                    partition_key_range=self.partition_key_range))
            cache[id(self)] = targeted
        if partition_key not in targeted:
            return original(self, metadata, partition_key=partition_key)  # raises as before
        self._metadata_accumulator = self._metadata_accumulator.with_additional_asset_metadata(
            asset_key=self.assets_def.key, metadata=metadata, partition_key=partition_key)

    StepExecutionContext.add_asset_metadata = add_asset_metadata


def patch_nometa() -> None:
    from dagster._core.execution.context.system import StepExecutionContext

    StepExecutionContext.add_asset_metadata = lambda self, metadata, asset_key=None, partition_key=None: None


def patch_memlimit() -> None:
    from well_assets.storage import store

    original = store.DuckDBStore._connect

    def _connect(self, read_only):
        con = original(self, read_only)
        if read_only:
            con.execute("SET memory_limit = '32MB'")
            con.execute("SET threads = 1")
        return con

    store.DuckDBStore._connect = _connect


class _ReopeningConnection:
    """A DuckDB connection that closes and reopens itself after every `every` commits, so the
    memory DuckDB keeps for freshly written rows and index nodes is released as a run goes on."""

    def __init__(self, open_fn, every: int) -> None:
        self._open, self._every, self._commits = open_fn, every, 0
        self._con = open_fn()

    def execute(self, statement, *args, **kwargs):
        result = self._con.execute(statement, *args, **kwargs)
        if isinstance(statement, str) and statement.strip().upper() == "COMMIT":
            self._commits += 1
            if self._commits % self._every == 0:
                result = result.fetchall()
                self._con.close()
                self._con = self._open()
                return _Done(result)
        return result

    def __getattr__(self, name):
        return getattr(self._con, name)


class _Done:
    def __init__(self, rows) -> None:
        self._rows = rows

    def fetchall(self):
        return self._rows


def patch_reopen(every: int = 100) -> None:
    import duckdb

    from well_assets.storage import store

    original = store.DuckDBStore._connect

    def _connect(self, read_only):
        if read_only:
            return original(self, read_only)
        return _ReopeningConnection(lambda: original(self, read_only), every)

    store.DuckDBStore._connect = _connect
    del duckdb


def patch_prefetch_validate() -> None:
    from well_assets import pages

    original_put = pages._put

    def _put(q, item, stop):
        if isinstance(item, pages.PageItem) and not item.failed and item.validated is None:
            stream = _current_stream[0]
            if stream is not None:
                pages.PageStream._validate(stream, item)
        return original_put(q, item, stop)

    _current_stream: list = [None]
    original_iter = pages.PageStream.__iter__
    original_validate = pages.PageStream._validate

    def __iter__(self):
        _current_stream[0] = self
        return original_iter(self)

    def _validate(self, item):
        if item.validated is None and not item.failed:
            original_validate(self, item)

    pages._put = _put
    pages.PageStream.__iter__ = __iter__
    pages.PageStream._validate = _validate


def patch_fastval() -> None:
    import polars as pl

    from well_assets import schema

    original = schema._run_pandera

    def _run_pandera(frame, settings):
        mx = float(settings.max_daily_volume)
        checks = [
            (pl.col("well_code").is_null() | (pl.col("well_code").str.len_chars() < 1)).any(),
            pl.col("production_date").is_null().any(),
            *[((pl.col(c) < 0) | (pl.col(c) > mx)).any() for c in schema.VOLUME_COLUMNS],
        ]
        if frame.schema == schema.COLUMNS and not any(frame.select(checks).row(0)):
            return None
        return original(frame, settings)

    schema._run_pandera = _run_pandera
    try:  # validate_page moved to well_assets.validation, which imports _run_pandera by name
        from well_assets import validation
    except ImportError:
        return
    validation._run_pandera = _run_pandera


def patch_gcfreeze() -> None:
    """gc.freeze() once the heavy imports are done and again before exiting: the interpreter's
    final collection (and the periodic gen-2 ones) no longer walk Dagster's object graph."""
    import gc

    from well_assets import cli, importer  # noqa: F401  (the heavy imports)

    gc.freeze()
    original = cli.main

    def main(argv=None):
        try:
            return original(argv)
        finally:
            gc.freeze()

    cli.main = main


PATCHES = {"meta": patch_meta, "nometa": patch_nometa, "memlimit": patch_memlimit,
           "prefetch_validate": patch_prefetch_validate, "fastval": patch_fastval,
           "gcfreeze": patch_gcfreeze, "reopen": patch_reopen}


def expand(variant: str) -> list[str]:
    names = []
    for part in variant.split("+"):
        names += list(ALL) if part == "all" else ([] if part == "base" else [part])
    unknown = [n for n in names if n not in PATCHES]
    if unknown:
        raise SystemExit(f"unknown variant part(s): {unknown}")
    return names


def child(args) -> int:
    for name in expand(args.variant):
        PATCHES[name]()
    from well_assets import cli as _cli  # patched main, if any

    return _cli.main(["import", "--base-url", args.base_url, "--database", args.database, "--json", "--no-progress"])


# ------------------------------------------------------------------------------ driver


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=150_000)
    ap.add_argument("--variants", nargs="+", default=["base", "meta", "all"])
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--variant", help=argparse.SUPPRESS)
    ap.add_argument("--base-url", help=argparse.SUPPRESS)
    ap.add_argument("--database", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        return child(args)
    for v in args.variants:
        expand(v)

    from run import DemoService, clean_env, inspect_database

    results: dict[str, list[dict]] = {v: [] for v in args.variants}
    work = Path(tempfile.mkdtemp(prefix="wa-whatif-"))
    try:
        with DemoService(args.rows, seed=42, workdir=work) as service:
            for rnd in range(1, args.rounds + 1):
                for variant in args.variants:
                    rundir = work / f"r{rnd}-{variant}"
                    rundir.mkdir()
                    db = rundir / "wells.duckdb"
                    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", "--variant", variant,
                           "--base-url", service.base_url, "--database", str(db)]
                    began = time.perf_counter()
                    with open(rundir / "out", "wb") as out, open(rundir / "err", "wb") as err:
                        proc = subprocess.Popen(cmd, stdout=out, stderr=err, env=clean_env(), cwd=rundir)
                        _, status, usage = os.wait4(proc.pid, 0)
                    proc.returncode = os.waitstatus_to_exitcode(status)
                    wall = time.perf_counter() - began
                    rows, ledger, problem = inspect_database(db, ledger=True)
                    ok = proc.returncode == 0 and rows == args.rows and not problem
                    r = {"wall": wall, "rss": usage.ru_maxrss / 1024, "cpu": usage.ru_utime + usage.ru_stime,
                         "ok": ok, **{k: ledger.get(k) for k in ("validate_seconds", "db_seconds", "fetch_seconds",
                                                                  "page_span_seconds")}}
                    results[variant].append(r)
                    print(f"round {rnd} {variant:40s} wall {wall:7.2f}s rss {r['rss']:6.1f}MB cpu {r['cpu']:6.1f}s "
                          f"validate {r['validate_seconds'] or 0:6.2f} db {r['db_seconds'] or 0:6.2f} "
                          f"span {r['page_span_seconds'] or 0:6.2f} {'OK' if ok else 'WRONG ' + problem + (rundir / 'err').read_text()[-300:]}",
                          flush=True)
                    shutil.rmtree(rundir, ignore_errors=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"\nmedians, {args.rows:,} rows, {args.rounds} round(s):")
    print(f"{'variant':40s} {'wall s':>8s} {'peak RSS MB':>12s} {'CPU s':>7s} {'validate':>9s} {'db':>7s} {'page span':>10s}")
    for variant, rs in results.items():
        ok = [r for r in rs if r["ok"]]
        if not ok:
            print(f"{variant:40s} no correct run")
            continue
        m = {k: statistics.median([r[k] or 0 for r in ok]) for k in ("wall", "rss", "cpu", "validate_seconds",
                                                                     "db_seconds", "page_span_seconds")}
        print(f"{variant:40s} {m['wall']:8.2f} {m['rss']:12.1f} {m['cpu']:7.1f} {m['validate_seconds']:9.2f} "
              f"{m['db_seconds']:7.2f} {m['page_span_seconds']:10.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
