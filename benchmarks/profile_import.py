"""Profile one `well-assets import` and print where the time goes.

    python benchmarks/profile_import.py [--rows 150000] [--tool py-spy|pyinstrument] [--rate 200]
                                        [--bad-rows 0.0] [--idle] [--top 25] [--out-dir DIR]

Starts the bundled OData service as a separate process (so its CPU is not in the profile),
then runs the import in ONE process through `well_assets.cli.main(["import", ...])` with a
fresh DuckDB file and no DAGSTER_HOME, exactly the code path of the console command.

--tool py-spy (default; `pip install py-spy`): samples every thread of the import process
  and of the page fetcher process it spawns, from outside (`py-spy record --threads
  --subprocesses --format raw`), so the page fetcher (HTTP +
  JSON) and the main thread (validation, DuckDB, Dagster) are both seen. Prints samples per
  thread, a breakdown by stage (rules below), and the top functions by self and by total
  time. Samples of idle threads (blocked in a socket read, a queue, a lock) are left out
  unless --idle, so the figures are CPU-ish seconds per thread.
--tool pyinstrument (`pip install pyinstrument`): in-process, main thread only, prints its
  call tree (good for a quick look at the consumer side).

The raw samples are kept in --out-dir (default: a temp dir, printed) for flamegraph.pl or
speedscope.
"""

from __future__ import annotations

import argparse
import collections
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

# Stage rules, first match wins, tested against the whole stack (root ... leaf) of a sample.
# Order matters: a JSON parse inside the OData client is "JSON parse", not "HTTP".
STAGES: list[tuple[str, re.Pattern]] = [
    ("Python imports / start-up", re.compile(r"_find_and_load|<frozen importlib")),
    ("Pandera validation", re.compile(r"(^|[;/ (])pandera/")),
    ("DuckDB write (storage/page_write.py, store.py)", re.compile(r"well_assets/storage/(page_write|store)\.py")),
    ("records -> Polars (validation.py)", re.compile(r"well_assets/(schema|validation)\.py")),
    ("JSON parse (OData client)", re.compile(r"well_assets/odata/.*(json/|orjson|_parse_collection)")),
    ("response cache (odata/cache.py)", re.compile(r"well_assets/odata/cache\.py")),
    ("HTTP (httpx/httpcore)", re.compile(r"(^|[;/ (])(httpx|httpcore|h11|anyio)/|socket\.py|ssl\.py")),
    ("OData client other (paging, annotations, retry)", re.compile(r"well_assets/odata/|tenacity/")),
    ("Dagster event log / storage / metadata",
     re.compile(r"dagster/_core/(events|storage|instance)|add_asset_metadata|well_assets/metadata\.py|sqlalchemy/|sqlite")),
    ("Dagster other (definitions, planning, execution)", re.compile(r"(^|[;/ (])dagster[a-z_]*/")),
    ("well_assets other (pipeline, report, cli)", re.compile(r"well_assets/")),
]
FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")


WAITING = re.compile(r"^(Condition\.wait|Event\.wait|Queue\.(get|put)|Thread\.join|sleep) ")


def classify(stack: str) -> str:
    leaf = stack.rsplit(";", 1)[-1]
    if WAITING.match(leaf):
        return "waiting (queue, lock, sleep: not work)"
    for name, pattern in STAGES:
        if pattern.search(stack):
            return name
    return "other"


def _short(file: str) -> str:
    for marker in ("site-packages/", "/work/main/", "lib/python3"):
        if marker in file:
            file = file.split(marker, 1)[1]
    return file


def analyse(raw_path: Path, rate: int, top: int) -> str:
    threads: collections.Counter = collections.Counter()
    stages: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    self_time: collections.Counter = collections.Counter()
    total_time: collections.Counter = collections.Counter()
    n = 0
    rows, names_of = [], {}
    for line in raw_path.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        # With --subprocesses every stack starts with "process PID:"cmdline"" frames
        # (the import, then the page fetcher it spawned), then "thread (TID): Name".
        proc = "import"
        while stack.startswith("process "):  # the command line is quoted and may hold ';'
            end = stack.find('";', stack.find('"') + 1)
            cmdline, stack = stack[:end + 1], stack[end + 2:]
            proc = ("fetcher" if "spawn_main" in cmdline
                    else "mp-tracker" if "resource_tracker" in cmdline else "import")
        head, _, rest = stack.partition(";")
        tid, _, tname = head.partition(":")
        tid = f"{proc} {tid.strip()}"
        if tname.strip():
            names_of[tid] = f"{proc} {tname.strip()}"
        rows.append((tid, rest, int(count)))
    for tid, stack, c in rows:
        n += c
        thread = names_of.get(tid, tid)
        threads[thread] += c
        stages[classify(stack)][thread] += c
        names = []
        for frame in stack.split(";"):
            m = FRAME.match(frame)
            names.append(f"{m['func']} ({_short(m['file'])})" if m else frame)
        if names:
            self_time[names[-1]] += c
            for name in set(names):
                total_time[name] += c
    sec = 1.0 / rate
    out = [f"{n} samples at {rate} Hz = {n * sec:.1f} thread-seconds (non-idle samples only unless --idle)", ""]
    out.append("samples per thread:")
    for t, c in threads.most_common():
        out.append(f"  {c * sec:8.2f} s  {t}")
    out.append("")
    cols = [t for t, _ in threads.most_common(3)]
    out.append("by stage (seconds" + "".join(f" | {t}" for t in cols) + " | all):")
    for name, counter in sorted(stages.items(), key=lambda kv: -sum(kv[1].values())):
        total = sum(counter.values())
        out.append(f"  {name:52s}" + "".join(f" {counter[t] * sec:8.2f}" for t in cols)
                   + f" {total * sec:8.2f}  {100 * total / max(n, 1):5.1f}%")
    out.append("")
    out.append(f"top {top} functions by self time:")
    for name, c in self_time.most_common(top):
        out.append(f"  {c * sec:8.2f} s {100 * c / max(n, 1):5.1f}%  {name}")
    out.append("")
    out.append(f"top {top} functions by total (inclusive) time:")
    for name, c in total_time.most_common(top):
        out.append(f"  {c * sec:8.2f} s {100 * c / max(n, 1):5.1f}%  {name}")
    return "\n".join(out)


def inner(args) -> int:
    """The profiled process: one import through the CLI's main()."""
    from well_assets.cli import main as cli

    began = time.perf_counter()
    argv = ["import", "--base-url", args.base_url, "--database", args.database, "--json", "--no-progress"]
    if args.max_pages:
        argv += ["--max-pages", str(args.max_pages)]
    code = cli.main(argv)
    print(json.dumps({"exit_code": code, "inner_wall_seconds": round(time.perf_counter() - began, 3)}),
          file=sys.stderr)
    return code


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=150_000)
    ap.add_argument("--bad-rows", type=float, default=0.0, help="fraction of salted bad rows served (default 0)")
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--tool", choices=("py-spy", "pyinstrument"), default="py-spy")
    ap.add_argument("--rate", type=int, default=200, help="py-spy samples per second")
    ap.add_argument("--idle", action="store_true", help="py-spy: also count idle (blocked) samples")
    ap.add_argument("--top", type=int, default=25)
    ap.add_argument("--max-pages", type=int, default=None)
    ap.add_argument("--out-dir", default=None, help="keep the raw profile here")
    ap.add_argument("--analyse", metavar="RAW", help="only analyse an existing py-spy raw file")
    ap.add_argument("--inner", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--base-url", help=argparse.SUPPRESS)
    ap.add_argument("--database", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.inner:
        return inner(args)
    if args.analyse:
        print(analyse(Path(args.analyse), args.rate, args.top))
        return 0

    from run import DemoService, clean_env

    out_dir = Path(args.out_dir) if args.out_dir else Path(tempfile.mkdtemp(prefix="wa-profile-"))
    out_dir.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="wa-profile-run-"))
    try:
        service = DemoService(args.rows, seed=args.seed, workdir=work)
        if args.bad_rows:
            i = service.argv.index("--bad-rows")
            service.argv[i + 1] = str(args.bad_rows)
        with service:
            db = work / "wells.duckdb"
            inner_argv = [sys.executable, str(Path(__file__).resolve()), "--inner", "--base-url", service.base_url,
                          "--database", str(db)] + (["--max-pages", str(args.max_pages)] if args.max_pages else [])
            env = clean_env()
            began = time.perf_counter()
            if args.tool == "py-spy":
                pyspy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
                raw = out_dir / f"import-{args.rows}.pyspy.txt"
                cmd = [pyspy, "record", "--format", "raw", "--threads", "--subprocesses", "--rate", str(args.rate),
                       "-o", str(raw)]
                cmd += ["--idle"] if args.idle else []
                proc = subprocess.run(cmd + ["--", *inner_argv], env=env, cwd=work, capture_output=True, text=True)
            else:
                cmd = [sys.executable, "-m", "pyinstrument", "-r", "text", "-o",
                       str(out_dir / f"import-{args.rows}.pyinstrument.txt"), *inner_argv[1:]]
                proc = subprocess.run(cmd, env=env, cwd=work, capture_output=True, text=True)
            wall = time.perf_counter() - began
            if proc.returncode != 0:
                print(proc.stdout[-3000:], proc.stderr[-3000:], sep="\n", file=sys.stderr)
                print(f"profiled import failed with exit {proc.returncode}", file=sys.stderr)
                return 1
            summary = {}
            start = proc.stdout.find("{\n")  # the import's --json output (py-spy adds its own lines)
            if start >= 0:
                try:
                    summary = json.JSONDecoder().raw_decode(proc.stdout[start:])[0]
                except json.JSONDecodeError:
                    pass
            perf = summary.get("data", {}).get("performance", {})
            inner_line = [ln for ln in proc.stderr.splitlines() if ln.startswith('{"exit_code"')]
            print(f"profiled import of {args.rows:,} rows: wall {wall:.1f} s under the profiler "
                  f"(inner {json.loads(inner_line[-1])['inner_wall_seconds'] if inner_line else '?'} s; "
                  f"import's own figures: total {perf.get('total_execution_time_seconds')} s, "
                  f"api {perf.get('api_request_time_seconds')} s, db {perf.get('database_time_seconds')} s)")
            print()
            if args.tool == "py-spy":
                print(analyse(raw, args.rate, args.top))
                print(f"\nraw samples: {raw}  (flamegraph.pl {raw.name} > flame.svg)")
            else:
                text = (out_dir / f"import-{args.rows}.pyinstrument.txt").read_text()
                print(text[:20000])
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
