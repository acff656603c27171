"""The import benchmark: `well-assets import` against a plain reference loop, same machine, same source.

    python benchmarks/run.py [--sizes 150000 1500000] [--rounds 3] [--out benchmarks/RESULTS.md]
                             [--latency SECONDS] [--rate-limit PER_SECOND] [--concurrency N [N ...]]
                             [--baseline-bin PATH]

For every size N it starts the bundled OData service as a separate process on loopback
(N rows, no bad rows, the service's own max page size: 5000, like Dataverse; with
--latency / --rate-limit its knobs of the same names), waits until it answers, warms its
sorted view, then per round runs, each as a subprocess with a fresh DuckDB file:

  A  raw       python benchmarks/raw_loop.py --base-url URL --database FRESH
  B  import    well-assets import --base-url URL --database FRESH --json --no-progress
               (the CLI's default concurrency, 4)
  Cn import-cN B with --concurrency N, for every N of --concurrency other than 4
  P  before    B run by another installed version (--baseline-bin), so the change is
               measured against it in the same rounds, not across sittings
  S  resync    B's command again on B's database: the source unchanged, every page read
               again by its key range (the re-sync `well-assets import`, the sensor's runs and
               the nightly refresh do)
  F  floor     the same import with --max-pages 1 (fixed cost: start-up, Dagster, 1 page)

in the order A B Cn.. P S F A B Cn.. P S F ... . Wall time is measured around the process (so
Python and Dagster start-up count); CPU comes from os.wait4's rusage of that child (exact,
includes its own children). Peak RSS is the process tree's: the child's peak from wait4 plus
the largest sum of the peaks of its descendants alive together (the import's page fetcher
process, one per run), sampled every 50 ms from /proc; an upper bound, since the peaks
need not coincide. Every run is checked: exit status 0 and
well_production holding exactly the served number of rows (and every page in the ledger
succeeded, for the import). The import's own split comes from `odata_page_log`.

The service's /admin/stats, read before and after every run, gives the run's OData
requests and how many were answered 429; the achieved request rate is requests / the
page loop's span (first page start -> last commit, from the ledger) for an import, requests
/ the raw loop's own wall (its JSON wall_seconds) for raw. With --latency the sequential
floor is pages x latency: what a loop fetching one page at a time cannot beat.

Results go to stdout and to a markdown file (default benchmarks/RESULTS.md); `--json-out`
also writes the raw figures. See benchmarks/README.md for what each figure means.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
PAGE_SIZE = 1000
LARGE = 1_000_000  # sizes at or above this get the 1.0x target, smaller ones 1.5x
TARGET_RATIO_LARGE = 1.0
TARGET_RATIO_SMALL = 1.5
TARGET_RSS_OVER_FLOOR_MB = 150.0
TARGET_RSS_GROWTH = 1.2
DEFAULT_CONCURRENCY = 4  # the import CLI's default (ODATA_CONCURRENCY): the plain `import` kind
MAX_CONCURRENCY = 16
# With --latency: import wall / raw wall at these concurrencies (the kind's name, the bound).
TARGET_LATENCY_RATIOS = (("import", 4, 0.35), ("import-c8", 8, 0.25))
# With --rate-limit: each import's achieved rate at least this share of the limit, and
# fewer than this share of its requests answered 429.
TARGET_RATE_SHARE = 0.8
TARGET_429_SHARE = 0.05
# The memory target over the floor holds for these kinds (when run).
RSS_TARGET_KINDS = ("import", "import-c8")
CLK_TCK = os.sysconf("SC_CLK_TCK")
# Settings the import would otherwise pick up from the caller's environment.
SCRUB_ENV_PREFIXES = ("ODATA_", "WELLS_", "WELL_ASSETS_", "DAGSTER_HOME")


# --------------------------------------------------------------------------- processes


@dataclass
class ChildRun:
    kind: str  # raw | import | import-cN | resync | floor
    size: int
    round: int
    argv: list[str]
    exit_code: int = -1
    wall_seconds: float = 0.0
    peak_rss_mb: float = 0.0  # the process tree: the child's peak + each descendant's peak
    largest_process_rss_mb: float = 0.0  # os.wait4's ru_maxrss: the largest single process
    cpu_seconds: float = 0.0  # user + system of the child
    server_cpu_seconds: float = 0.0  # what the OData service burned meanwhile
    load_before: float = 0.0
    stored_rows: int | None = None
    expected_rows: int = 0
    ok: bool = False
    problem: str = ""
    output: dict | None = None  # raw loop JSON / import --json summary
    ledger: dict = field(default_factory=dict)
    # From the service's /admin/stats before and after the run (None: not readable).
    requests: int | None = None  # OData requests the service answered meanwhile
    answered_429: int | None = None  # of those, answered 429 (its rate limit)
    peak_in_flight: int | None = None  # the most of this run's requests in the service at once

    @property
    def rows_per_second(self) -> float:
        return self.expected_rows / self.wall_seconds if self.wall_seconds else 0.0

    @property
    def request_rate(self) -> float | None:
        """Requests per second of the page loop: over the ledger's page span (first page start
        -> last commit) for an import, whose process also starts Python and Dagster; over its
        own wall (after its imports: `$count` and the loop) for the raw loop."""
        if self.kind == "raw":
            span = (self.output or {}).get("wall_seconds") or self.wall_seconds
        else:
            span = self.ledger.get("page_span_seconds")
        return self.requests / span if self.requests is not None and span else None

    @property
    def share_429(self) -> float | None:
        return self.answered_429 / self.requests if self.requests and self.answered_429 is not None else None


def _proc_cpu_seconds(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime
    except (OSError, IndexError, ValueError):
        return float("nan")


def _proc_peak_rss_mb(pid: int) -> float | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def _descendants(pid: int) -> list[int]:
    found, todo = [], [pid]
    while todo:
        parent = todo.pop()
        try:
            tasks = os.listdir(f"/proc/{parent}/task")
        except OSError:
            continue
        for tid in tasks:
            try:
                with open(f"/proc/{parent}/task/{tid}/children") as f:
                    kids = [int(k) for k in f.read().split()]
            except (OSError, ValueError):
                continue
            found.extend(kids)
            todo.extend(kids)
    return found


class _TreeSampler(threading.Thread):
    """Every 50 ms, the peak RSS (VmHWM) of the descendants of ``pid`` alive at that moment
    (not ``pid`` itself, whose exact peak comes from wait4), summed; the largest such sum
    is added to the import's peak, so the figure is an upper bound of the tree's RSS. Each
    run of an import has a page fetcher process of its own, one after the other: summing
    only the ones alive together does not count a finished run's fetcher again."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid, self.largest, self._stop_flag = pid, 0.0, threading.Event()

    def run(self) -> None:
        while not self._stop_flag.wait(0.05):
            alive = (_proc_peak_rss_mb(child) for child in _descendants(self.pid))
            self.largest = max(self.largest, sum(mb for mb in alive if mb is not None))

    def stop(self) -> float:
        self._stop_flag.set()
        self.join()
        return self.largest


def run_child(run: ChildRun, *, env: dict, cwd: Path, timeout: float, server_pid: int | None) -> ChildRun:
    """Run argv to completion; fill wall time, exit code and the child's own rusage."""
    run.load_before = os.getloadavg()[0]
    out_path, err_path = cwd / f"{run.kind}.stdout", cwd / f"{run.kind}.stderr"
    server_cpu0 = _proc_cpu_seconds(server_pid) if server_pid else 0.0
    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        began = time.perf_counter()
        proc = subprocess.Popen(run.argv, stdout=out, stderr=err, env=env, cwd=cwd)
        sampler = _TreeSampler(proc.pid)
        sampler.start()
        timer = threading.Timer(timeout, proc.kill)
        timer.start()
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        finally:
            timer.cancel()
        run.wall_seconds = time.perf_counter() - began
        descendants_mb = sampler.stop()
    proc.returncode = run.exit_code = os.waitstatus_to_exitcode(status)
    run.largest_process_rss_mb = usage.ru_maxrss / 1024  # KiB on Linux
    run.peak_rss_mb = run.largest_process_rss_mb + descendants_mb
    run.cpu_seconds = usage.ru_utime + usage.ru_stime
    if server_pid:
        run.server_cpu_seconds = _proc_cpu_seconds(server_pid) - server_cpu0
    stdout = out_path.read_text(errors="replace")
    try:
        run.output = json.loads(stdout) if stdout.strip() else None
    except json.JSONDecodeError:
        run.output = None
    if run.exit_code != 0:
        lines = [ln for ln in (err_path.read_text(errors="replace") or stdout).splitlines() if ln.strip()]
        tail = " / ".join(ln.strip() for ln in lines[-3:])[-600:]
        run.problem = f"exit {run.exit_code}" + (" (killed: timeout)" if run.exit_code == -9 else "") + f": {tail}"
    return run


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def well_assets_cmd() -> list[str]:
    script = Path(sys.executable).parent / "well-assets"
    if script.exists():
        return [str(script)]
    found = shutil.which("well-assets")
    return [found] if found else [sys.executable, "-m", "well_assets.cli.main"]


def _get_json(url: str, timeout: float = 10.0) -> dict:
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        return json.loads(resp.read())


def _get_json_past_429(url: str, timeout: float, attempts: int = 10) -> dict:
    """_get_json, waiting out the service's rate limit (its Retry-After) when it answers 429."""
    for attempt in range(attempts):
        try:
            return _get_json(url, timeout)
        except urllib.error.HTTPError as exc:
            if exc.code != 429 or attempt == attempts - 1:
                raise
            time.sleep(float(exc.headers.get("Retry-After") or 1))
    raise AssertionError("unreachable")


def peak_overlap(requests: list[dict], since: float) -> int | None:
    """The most requests in the service at one moment, among those started at or after
    ``since`` (wall clock; the service logs each request's start and end)."""
    events = sorted(ev for r in requests if r.get("started") is not None and r["started"] >= since
                    and r.get("ended") is not None for ev in ((r["started"], 1), (r["ended"], -1)))
    if not events:
        return None
    peak = now = 0
    for _, step in events:  # at equal times an end (-1) sorts before a start (+1)
        now += step
        peak = max(peak, now)
    return peak


class DemoService:
    """The bundled OData service as a separate process on a free loopback port."""

    def __init__(self, rows: int, *, seed: int, workdir: Path, latency: float | None = None,
                 rate_limit: float | None = None, start_timeout: float = 300.0) -> None:
        self.rows, self.seed, self.workdir, self.start_timeout = rows, seed, workdir, start_timeout
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}/odata"
        self.admin_url = f"http://127.0.0.1:{self.port}/admin"
        # No --max-page-size: the service's own cap (5000, like Dataverse). The import's first
        # read of a page asks for one row more than a page, to learn where the next page
        # starts; a cap of exactly 1000 would cost a second, one-row request per page.
        self.argv = [*well_assets_cmd(), "demo-server", "--port", str(self.port), "--rows", str(rows),
                     "--bad-rows", "0", "--seed", str(seed)]
        if latency:
            self.argv += ["--latency", f"{latency:g}"]
        if rate_limit:
            self.argv += ["--rate-limit", f"{rate_limit:g}"]
        self.proc: subprocess.Popen | None = None
        self.start_seconds = 0.0
        self.peak_rss_mb: float | None = None
        self.served_rows = 0

    def __enter__(self) -> "DemoService":
        self._log = open(self.workdir / f"demo-server-{self.rows}.log", "wb")
        began = time.perf_counter()
        self.proc = subprocess.Popen(self.argv, stdout=self._log, stderr=subprocess.STDOUT, cwd=self.workdir)
        count_url = f"{self.base_url}/WellProduction?$count=true&$top=0"
        while True:
            if self.proc.poll() is not None:
                self._log.flush()
                tail = (self.workdir / f"demo-server-{self.rows}.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"demo server exited with {self.proc.returncode}: {tail}")
            try:
                self.served_rows = int(_get_json(count_url)["@odata.count"])
                break
            except Exception:
                if time.perf_counter() - began > self.start_timeout:
                    self.__exit__(None, None, None)
                    raise RuntimeError(f"demo server did not answer {count_url} within {self.start_timeout}s")
                time.sleep(0.2)
        self.start_seconds = time.perf_counter() - began
        if self.served_rows != self.rows:
            self.__exit__(None, None, None)
            raise RuntimeError(f"demo server reports {self.served_rows} rows, asked for {self.rows}")
        # Warm the sorted view both clients use (and the deepest page), so neither pays for it.
        for skip in (0, max(self.rows - PAGE_SIZE, 0)):
            _get_json_past_429(f"{self.base_url}/WellProduction?$skip={skip}&$top={PAGE_SIZE}"
                               f"&$orderby=WellCode,ProductionDate&$count=true", timeout=120)
        return self

    def stats(self) -> dict:
        """/admin/stats once it stops moving: the service counts a request just after sending
        its response, so a client that has exited may not be counted yet."""
        last = _get_json(f"{self.admin_url}/stats")
        for _ in range(20):
            time.sleep(0.05)
            now = _get_json(f"{self.admin_url}/stats")
            if now["requests"] == last["requests"]:
                return now
            last = now
        return last

    def recent_requests(self) -> list[dict]:
        """The service's log of its last 1000 OData requests (start and end wall clock)."""
        return _get_json(f"{self.admin_url}/requests")

    def __exit__(self, *exc) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.peak_rss_mb = _proc_peak_rss_mb(self.proc.pid)
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()


# --------------------------------------------------------------------------- checks


def inspect_database(path: Path, *, ledger: bool) -> tuple[int | None, dict, str]:
    """(rows in well_production, ledger figures, problem) read from a finished run's file."""
    import duckdb

    if not path.exists():
        return None, {}, f"database {path} was not created"
    with duckdb.connect(str(path), read_only=True) as con:
        rows = con.execute("SELECT count(*) FROM well_production").fetchone()[0]
        distinct = con.execute(
            "SELECT count(*) FROM (SELECT DISTINCT well_code, production_date FROM well_production)"
        ).fetchone()[0]
        problem = "" if distinct == rows else f"{rows - distinct} duplicate keys in well_production"
        figures: dict = {}
        if ledger:
            cols = {r[0] for r in con.execute(
                "SELECT column_name FROM information_schema.columns WHERE table_name = 'odata_page_log'"
            ).fetchall()}
            if not cols:
                return rows, {}, problem or "no odata_page_log table"
            # Timings and row counts of this run's import only: a re-sync's file also holds
            # the ledger of the import that wrote it.
            mine = ("odata_page_log WHERE import_id IS NOT DISTINCT FROM "
                    "(SELECT import_id FROM odata_page_log ORDER BY log_id DESC LIMIT 1)"
                    if {"import_id", "log_id"} <= cols else "odata_page_log")
            for name in ("fetch_seconds", "validate_seconds", "db_seconds", "throttle_seconds"):
                if name in cols:
                    figures[name] = float(con.execute(f"SELECT coalesce(sum({name}), 0) FROM {mine}").fetchone()[0])
            figures["ledger_rows"] = con.execute("SELECT count(*) FROM odata_page_log").fetchone()[0]
            if "status" in cols:
                figures["pages_succeeded"] = con.execute(
                    "SELECT count(DISTINCT page) FROM odata_page_log WHERE status = 'succeeded'").fetchone()[0]
                figures["pages_failed"] = con.execute(
                    "SELECT count(*) FROM odata_page_log WHERE status <> 'succeeded'").fetchone()[0]
            if {"started_at", "ended_at"} <= cols:
                span = con.execute(
                    f"SELECT epoch(max(ended_at)) - epoch(min(started_at)) FROM {mine}").fetchone()[0]
                figures["page_span_seconds"] = float(span) if span is not None else None
            for name in ("rows_new", "rows_rejected", "rows_duplicate"):
                if name in cols:
                    figures[name] = int(con.execute(f"SELECT coalesce(sum({name}), 0) FROM {mine}").fetchone()[0])
    return rows, figures, problem


def check(run: ChildRun, db: Path, expected_pages: int) -> None:
    run.stored_rows, run.ledger, problem = inspect_database(db, ledger=run.kind != "raw")
    problems = [run.problem] if run.problem else []
    if problem:
        problems.append(problem)
    if run.stored_rows != run.expected_rows:
        problems.append(f"well_production has {run.stored_rows} rows, expected {run.expected_rows}")
    if run.kind != "raw":
        if run.ledger.get("pages_succeeded") != expected_pages:
            problems.append(f"ledger: {run.ledger.get('pages_succeeded')} pages succeeded, expected {expected_pages}")
        if run.ledger.get("pages_failed"):
            problems.append(f"ledger: {run.ledger['pages_failed']} failed page rows")
        if not (run.output or {}).get("success"):
            problems.append("import summary: success is not true")
    run.ok = not problems
    run.problem = "; ".join(problems)


# --------------------------------------------------------------------------- one size


def clean_env() -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(SCRUB_ENV_PREFIXES)}
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def import_kinds(concurrency: list[int] | None) -> list[tuple[str, int | None]]:
    """(kind, --concurrency) of the fresh imports per round: `import` with the CLI's default,
    then `import-cN` for every other N asked for (the default's N is `import` itself)."""
    kinds: list[tuple[str, int | None]] = [("import", None)]
    for n in dict.fromkeys(concurrency or []):
        if n != DEFAULT_CONCURRENCY:
            kinds.append((f"import-c{n}", n))
    return kinds


def round_plan(concurrency: list[int] | None, skip: list[str] | None = None,
               baseline: bool = False) -> list[tuple[str, int | None, int | None]]:
    """(kind, --concurrency, --max-pages) in the order of a round: A B Cn.. P S F (less the
    skipped; P only with a baseline)."""
    plan = [("raw", None, None), *((kind, n, None) for kind, n in import_kinds(concurrency)),
            *([("before", None, None)] if baseline else []), ("resync", None, None), ("floor", None, 1)]
    return [step for step in plan if step[0] not in (skip or [])]


# The `well-assets` the import runs use (--import-bin: another installed version, measured
# against the same service and the same raw loop); the service always runs this one.
IMPORT_CMD: list[str] | None = None


def import_argv(base_url: str, db: Path, concurrency: int | None, max_pages: int | None,
                command: list[str] | None = None) -> list[str]:
    argv = [*(command or IMPORT_CMD or well_assets_cmd()), "import", "--base-url", base_url, "--database", str(db), "--json", "--no-progress"]
    if concurrency is not None:
        argv += ["--concurrency", str(concurrency)]
    if max_pages:
        argv += ["--max-pages", str(max_pages)]
    return argv


def count_requests(run: ChildRun, server: DemoService, before: dict, began_wall: float, log) -> None:
    """The run's requests, 429s and peak in flight from the service's counters around it
    (left n/a when unreadable: the counters describe the run, they do not judge it)."""
    try:
        after = server.stats()
        run.requests = after["requests"] - before["requests"]
        run.answered_429 = after["by_status"].get("429", 0) - before["by_status"].get("429", 0)
        # The service keeps its last 1000 requests: a longer run's peak is over its last 1000.
        run.peak_in_flight = peak_overlap(server.recent_requests(), began_wall)
    except (OSError, ValueError, KeyError) as exc:
        log(f"[{run.size}] round {run.round} {run.kind}: service stats unreadable: {exc}")


def bench_size(size: int, rounds: int, args, log) -> dict:
    env = clean_env()
    expected_pages = math.ceil(size / PAGE_SIZE)
    plan = round_plan(args.concurrency, args.skip, baseline=bool(args.baseline_bin))
    runs: list[ChildRun] = []
    workroot = Path(tempfile.mkdtemp(prefix=f"wa-bench-{size}-", dir=args.workdir))
    try:
        with DemoService(size, seed=args.seed, workdir=workroot, latency=args.latency,
                         rate_limit=args.rate_limit) as server:
            log(f"[{size}] demo server up on {server.base_url} in {server.start_seconds:.1f}s")
            for rnd in range(1, rounds + 1):
                for kind, concurrency, max_pages in plan:
                    rundir = workroot / f"r{rnd}-{kind}"
                    rundir.mkdir()
                    db = rundir / "wells.duckdb"
                    if kind == "resync":  # the database the import of this round just wrote
                        shutil.move(str(workroot / f"r{rnd}-import" / "wells.duckdb"), db)
                    if kind == "raw":
                        argv = [sys.executable, str(HERE / "raw_loop.py"), "--base-url", server.base_url,
                                "--database", str(db)]
                    else:
                        argv = import_argv(server.base_url, db, concurrency, max_pages,
                                           [args.baseline_bin] if kind == "before" else None)
                    run = ChildRun(kind=kind, size=size, round=rnd, argv=argv,
                                   expected_rows=min(size, PAGE_SIZE) if max_pages else size)
                    if args.rate_limit:
                        # The limit counts per wall-clock second: start every run in a second
                        # of its own, so it neither spends nor inherits another run's budget.
                        time.sleep(1.0)
                    before = server.stats()
                    began_wall = time.time()
                    run_child(run, env=env, cwd=rundir, timeout=args.timeout, server_pid=server.proc.pid)
                    count_requests(run, server, before, began_wall, log)
                    check(run, db, 1 if max_pages else expected_pages)
                    runs.append(run)
                    log(f"[{size}] round {rnd} {kind:9s} wall {run.wall_seconds:7.2f}s  "
                        f"{run.rows_per_second:9.0f} rec/s  peak RSS {run.peak_rss_mb:6.1f} MB  "
                        f"cpu {run.cpu_seconds:6.1f}s  server cpu {run.server_cpu_seconds:5.1f}s  "
                        f"requests {fmt(run.requests, 'd')} (429: {fmt(run.answered_429, 'd')}) "
                        f"{fmt(run.request_rate, '.1f')}/s  "
                        f"{'OK' if run.ok else 'WRONG: ' + run.problem[:400]}")
                    if not args.keep and kind != "import":
                        shutil.rmtree(rundir, ignore_errors=True)
        server_info = {"start_seconds": server.start_seconds, "peak_rss_mb": server.peak_rss_mb,
                       "argv": server.argv}
    finally:
        if not args.keep:
            shutil.rmtree(workroot, ignore_errors=True)
    return {"size": size, "rounds": rounds, "runs": runs, "server": server_info,
            "kinds": [kind for kind, _, _ in plan], "import_kinds": [kind for kind, _ in import_kinds(args.concurrency)],
            "latency": args.latency, "rate_limit": args.rate_limit}


# --------------------------------------------------------------------------- figures


def med(values):
    values = [v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    return statistics.median(values) if values else None


def summarize(result: dict) -> dict:
    runs: list[ChildRun] = result["runs"]
    kinds: list[str] = result["kinds"]
    by = {k: [r for r in runs if r.kind == k] for k in kinds}
    compared = [k for k in kinds if k not in ("raw", "floor")]  # import kinds and resync: / raw

    def per_round(kind: str) -> list[float | None]:
        out = []
        for rnd in range(1, result["rounds"] + 1):
            raw = next((r for r in by["raw"] if r.round == rnd), None)
            run = next((r for r in by[kind] if r.round == rnd), None)
            ok = raw and run and raw.ok and run.ok and raw.wall_seconds
            out.append(run.wall_seconds / raw.wall_seconds if ok else None)
        return out

    pages = math.ceil(result["size"] / PAGE_SIZE)
    latency, rate_limit = result.get("latency"), result.get("rate_limit")
    ratios = {kind: per_round(kind) for kind in compared}
    s = {
        "size": result["size"],
        "pages": pages,
        "kinds": kinds,
        "import_kinds": result["import_kinds"],
        "latency": latency,
        "rate_limit": rate_limit,
        "all_ok": all(r.ok for r in runs),
        "ok": {kind: bool(rs) and all(r.ok for r in rs) for kind, rs in by.items()},
        "ratios": ratios,
        "ratio_median": {kind: med(rs) for kind, rs in ratios.items()},
        "target_ratio": TARGET_RATIO_LARGE if result["size"] >= LARGE else TARGET_RATIO_SMALL,
        # What a loop reading one page after the other cannot beat: every page waits out the
        # latency; and what no client can beat under the limit (one request per page).
        "sequential_floor_seconds": pages * latency if latency else None,
        "rate_floor_seconds": pages / rate_limit if rate_limit else None,
        "by_kind": {},
    }
    for kind, rs in by.items():
        rs = [r for r in rs if r.ok]  # a wrong run's figures are not results
        counted = [r for r in rs if r.requests is not None]
        total = sum(r.requests for r in counted)
        s["by_kind"][kind] = {
            "wall_median": med([r.wall_seconds for r in rs]),
            "rps_median": med([r.rows_per_second for r in rs]),
            "rss_median": med([r.peak_rss_mb for r in rs]),
            "rss_max": max((r.peak_rss_mb for r in rs), default=None),
            "cpu_median": med([r.cpu_seconds for r in rs]),
            "server_cpu_median": med([r.server_cpu_seconds for r in rs]),
            "requests_median": med([r.requests for r in counted]),
            "answered_429_median": med([r.answered_429 for r in counted]),
            # pooled over the rounds: 429s of all its runs / requests of all its runs
            "share_429": sum(r.answered_429 for r in counted) / total if total else None,
            "rate_median": med([r.request_rate for r in rs]),
            "peak_in_flight_max": max((r.peak_in_flight for r in rs if r.peak_in_flight is not None), default=None),
        }
    ledger_keys = ("fetch_seconds", "validate_seconds", "db_seconds", "throttle_seconds", "page_span_seconds")
    s["ledger"] = {}
    for kind in compared:
        good = [r for r in by[kind] if r.ok]
        lg = {k: med([r.ledger.get(k) for r in good]) for k in ledger_keys}
        perf = [((r.output or {}).get("data") or {}).get("performance", {}) for r in good]
        lg["own_wall_seconds"] = med([p.get("total_execution_time_seconds") for p in perf])
        s["ledger"][kind] = lg
    floor = s["by_kind"].get("floor", {}).get("rss_median")
    s["rss_over_floor"] = {}
    for kind in result["import_kinds"]:
        peak = s["by_kind"][kind]["rss_max"]
        s["rss_over_floor"][kind] = peak - floor if floor is not None and peak else None
    return s


def fmt(value, spec=".2f", none="n/a") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return none
    return format(value, spec)


def fx(value) -> str:
    return "n/a" if value is None else f"{value:.2f}x"


def pass_miss(ok: bool | None) -> str:
    return "n/a" if ok is None else ("PASS" if ok else "MISS")


def compile_checkout() -> str:
    """This checkout's package as bytecode, as an installed package has it (pip compiles on
    install, Python caches on first import). An editable install run with
    PYTHONDONTWRITEBYTECODE set (this machine sets it for every process) never caches its
    bytecode: every process of every run would compile the package's modules from source,
    which users' runs do not (about 50 ms of the command's start-up here). The raw loop's
    libraries are installed packages with their bytecode already. -> what was done, for the
    report. The checkouts behind --import-bin and --baseline-bin are the caller's to compile
    (benchmarks/README.md)."""
    import compileall

    package = REPO / "well_assets"
    ok = compileall.compile_dir(str(package), quiet=1)
    flag = os.environ.get("PYTHONDONTWRITEBYTECODE")
    return (f"{package.relative_to(REPO)}/ compiled to bytecode before the runs"
            + ("" if ok else " (some modules failed to compile)")
            + (f"; PYTHONDONTWRITEBYTECODE={flag} in the environment" if flag else ""))


def machine_info() -> dict:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_gb = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_gb = int(line.split()[1]) / 1024 / 1024
    except OSError:
        pass
    cpu_max = None
    try:
        cpu_max = Path("/sys/fs/cgroup/cpu.max").read_text().strip()
    except OSError:
        pass
    from importlib import metadata

    versions = {}
    for dist in ("well-assets", "dagster", "duckdb", "polars", "pandera", "pyarrow", "httpx", "uvicorn",
                 "starlette"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[dist] = "not installed"
    try:
        commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--", "well_assets"],
                               capture_output=True, text=True).stdout.strip()
        commit += " (well_assets/ has uncommitted changes)" if dirty else ""
    except OSError:
        commit = "unknown"
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)),
        "cgroup_cpu_max": cpu_max,
        "memory_gb": mem_gb,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "versions": versions,
        "commit": commit,
        "load_at_start": os.getloadavg(),
    }


def render(summaries: list[dict], results: list[dict], machine: dict, args, started: dt.datetime,
           elapsed: float) -> str:
    L: list[str] = []
    add = L.append
    add("# well-assets import benchmark results")
    add("")
    add(f"Run {started.strftime('%Y-%m-%d %H:%M UTC')}, took {elapsed / 60:.1f} min, "
        f"`python benchmarks/run.py {' '.join(args.argv_echo)}`".rstrip())
    add("")
    add("## Machine")
    add("")
    add(f"- CPU: {machine['cpu']}, {machine['cores']} logical cores ({machine['usable_cores']} usable"
        + (f", cgroup cpu.max `{machine['cgroup_cpu_max']}`" if machine["cgroup_cpu_max"] else "") + ")")
    add(f"- Memory: {fmt(machine['memory_gb'], '.1f')} GiB; kernel {machine['kernel']}; "
        f"load average at start {', '.join(f'{x:.2f}' for x in machine['load_at_start'])}")
    add(f"- Python {machine['python']}; "
        + ", ".join(f"{k} {v}" for k, v in machine["versions"].items()))
    add(f"- well-assets commit {machine['commit']}")
    if machine.get("bytecode"):
        add(f"- Bytecode: {machine['bytecode']}")
    add("- Shared, noisy machine: ratios are taken within one round (A and B back to back), medians over rounds.")
    add("")
    add("## Commands")
    add("")
    add("Each run is a separate process with a fresh DuckDB file; the OData service is a separate")
    add("process too (it shares the machine's cores with the client being measured).")
    add("")
    knobs = [f"latency {args.latency:g} s per response" if args.latency else "no latency",
             f"rate limit {args.rate_limit:g} requests/s (429, Retry-After: 1, beyond it)" if args.rate_limit
             else "no rate limit"]
    add(f"Service: {', '.join(knobs)}; its own max page size (no `--max-page-size`).")
    add("")
    add("```")
    for res in results:
        add("service:   " + " ".join(res["server"]["argv"]).replace(str(Path(sys.executable).parent) + "/", ""))
    add("A raw:     python benchmarks/raw_loop.py --base-url URL --database FRESH.duckdb")
    add("B import:  well-assets import --base-url URL --database FRESH.duckdb --json --no-progress   "
        f"(default concurrency {DEFAULT_CONCURRENCY})")
    extra = import_kinds(args.concurrency)[1:]
    for kind, n in extra:
        add(f"C{n} {kind}: well-assets import --base-url URL --database FRESH.duckdb --json --no-progress "
            f"--concurrency {n}")
    if args.baseline_bin:
        add(f"P before:  {args.baseline_bin} import --base-url URL --database FRESH.duckdb --json --no-progress")
    add("S resync:  well-assets import --base-url URL --database B.duckdb --json --no-progress   (B's file, source unchanged)")
    add("F floor:   well-assets import --base-url URL --database FRESH.duckdb --json --no-progress --max-pages 1")
    add(f"order per round: {' '.join(['A', 'B', *(f'C{n}' for _, n in extra), *(['P'] if args.baseline_bin else []), 'S', 'F'])}; "
        "environment without DAGSTER_HOME (ephemeral instance) and without ODATA_*/WELLS_*"
        + ("; 1 s pause before each run (the rate limit counts per wall-clock second)" if args.rate_limit else ""))
    add("```")
    add("")
    for res, s in zip(results, summaries):
        render_size(add, res, s)
    add("## Targets")
    add("")
    add("| target | measured | result |")
    add("|---|---|---|")
    targets = evaluate_targets(summaries)
    for name, measured, ok in targets:
        add(f"| {name} | {measured} | {pass_miss(ok)} |")
    add("")
    wrong = [r for res in results for r in res["runs"] if not r.ok]
    if wrong:
        add(f"**{len(wrong)} run(s) were not correct**; their timings must not be read as results:")
        add("")
        for r in wrong:
            add(f"- {r.size} round {r.round} {r.kind}: {r.problem[:600]}")
        add("")
    return "\n".join(L) + "\n"


def render_size(add, res: dict, s: dict) -> None:
    size, kinds, bk = s["size"], s["kinds"], s["by_kind"]
    add(f"## {size:,} rows ({s['pages']} pages of {PAGE_SIZE}), {res['rounds']} round(s)")
    add("")
    add(f"Demo service: answered after {res['server']['start_seconds']:.1f} s, peak RSS "
        f"{fmt(res['server']['peak_rss_mb'], '.0f')} MB.")
    add("")
    add("| round | run | wall s | records/s | peak RSS MB (tree) | largest process MB | CPU s | service CPU s "
        "| x raw | requests | 429s | requests/s | peak in flight | correct |")
    add("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    for r in res["runs"]:
        ratio = s["ratios"].get(r.kind, [None] * r.round)[r.round - 1]
        add(f"| {r.round} | {r.kind} | {r.wall_seconds:.2f} | {r.rows_per_second:,.0f} | {r.peak_rss_mb:.1f} | "
            f"{r.largest_process_rss_mb:.1f} | "
            f"{r.cpu_seconds:.1f} | {r.server_cpu_seconds:.1f} | {fx(ratio) if ratio else ''} | "
            f"{fmt(r.requests, 'd')} | {fmt(r.answered_429, 'd')} | {fmt(r.request_rate, '.1f')} | "
            f"{fmt(r.peak_in_flight, 'd')} | "
            f"{'yes' if r.ok else 'NO: ' + r.problem[:200].replace('|', '/')} |")
    add("")
    add("Medians over the correct runs of each kind (x raw: median of the per-round ratios; 429 share: all")
    add("rounds' 429s / all rounds' requests; requests/s: over the page loop's span, the raw loop's own wall):")
    add("")
    add("| kind | wall s | x raw | records/s | peak RSS MB (max) | client CPU s | service CPU s "
        "| requests | 429s (share) | requests/s | peak in flight |")
    add("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for kind in kinds:
        k = bk[kind]
        share = f" ({k['share_429']:.1%})" if k["share_429"] is not None else ""
        add(f"| {kind}{' (1 page)' if kind == 'floor' else ''} | {fmt(k['wall_median'])} | "
            f"{fx(s['ratio_median'].get(kind)) if kind in s['ratio_median'] else ''} | "
            f"{fmt(k['rps_median'], ',.0f')} | {fmt(k['rss_median'], '.1f')} ({fmt(k['rss_max'], '.1f')}) | "
            f"{fmt(k['cpu_median'], '.1f')} | {fmt(k['server_cpu_median'], '.1f')} | "
            f"{fmt(k['requests_median'], '.0f')} | {fmt(k['answered_429_median'], '.0f')}{share} | "
            f"{fmt(k['rate_median'], '.1f')} | {fmt(k['peak_in_flight_max'], 'd')} |")
    add("")
    floors = []
    if s["sequential_floor_seconds"] is not None:
        floors.append(f"Sequential floor: {s['pages']} pages x {s['latency']:g} s latency = "
                      f"**{s['sequential_floor_seconds']:.1f} s** (a loop reading one page after the other "
                      f"cannot be faster; raw's median is {fmt(bk['raw']['wall_median'])} s).")
    if s["rate_floor_seconds"] is not None:
        floors.append(f"Rate floor: {s['pages']} pages / {s['rate_limit']:g} requests/s = "
                      f"**{s['rate_floor_seconds']:.1f} s** of page loop for any client.")
    if floors:
        add(" ".join(floors))
        add("")
    if "before" in s["ratios"]:
        vs = [a / b if a and b else None for a, b in zip(s["ratios"]["import"], s["ratios"]["before"])]
        add(f"- import/before per round (this checkout against --baseline-bin, same rounds): "
            f"{', '.join(fx(x) for x in vs)}; median **{fx(med(vs))}**.")
    for kind in s["ratios"]:
        add(f"- {kind}/raw per round: {', '.join(fx(x) for x in s['ratios'][kind])}; "
            f"median **{fx(s['ratio_median'][kind])}**"
            + (" (re-sync of the unchanged source)" if kind == "resync" else "")
            + (f"; peak RSS over floor **{fmt(s['rss_over_floor'][kind], '.1f')} MB** (max peak minus median floor)"
               if kind in s["rss_over_floor"] else "") + ".")
    add("")
    add("Import split from `odata_page_log` (medians over rounds, seconds, the run's own import only; fetch and")
    add("validation run in the page fetcher process and overlap the writes, so the sums can exceed the time they cover):")
    add("")
    add("| kind | process wall | import's own wall (--json) | first page start -> last commit | fetch | validate | db "
        "| throttle | wall - (fetch+validate+db+throttle) | wall - page span |")
    add("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for kind, lg in s["ledger"].items():
        sums = [lg.get(k) for k in ("fetch_seconds", "validate_seconds", "db_seconds", "throttle_seconds")]
        total = sum(x for x in sums if x is not None) if any(x is not None for x in sums) else None
        wall, span = bk[kind]["wall_median"], lg.get("page_span_seconds")
        add(f"| {kind} | {fmt(wall)} | {fmt(lg.get('own_wall_seconds'))} | {fmt(span)} | "
            f"{fmt(sums[0])} | {fmt(sums[1])} | {fmt(sums[2])} | {fmt(sums[3])} | "
            f"{fmt(wall - total if wall is not None and total is not None else None)} | "
            f"{fmt(wall - span if wall is not None and span is not None else None)} |")
    add("")
    raws = [r.output for r in res["runs"] if r.kind == "raw" and r.output]
    if raws:
        add(f"Raw loop split (median s): fetch {fmt(med([o.get('fetch_seconds') for o in raws]))}, "
            f"parse to Polars {fmt(med([o.get('parse_seconds') for o in raws]))}, "
            f"DuckDB upsert {fmt(med([o.get('db_seconds') for o in raws]))}, "
            f"in-process wall {fmt(med([o.get('wall_seconds') for o in raws]))}.")
        add("")


def _clean(s: dict, *kinds: str) -> bool:
    """Every run of these kinds at this size was correct (a target needs its runs right)."""
    return all(s["ok"].get(kind, False) for kind in kinds)


def _incorrect(ok: bool) -> str:
    return "" if ok else " (incorrect runs)"


def evaluate_targets(summaries: list[dict]) -> list[tuple[str, str, bool | None]]:
    out = []
    for s in summaries:
        r = s["ratio_median"]["import"]
        clean = _clean(s, "import", "raw")
        name = f"{s['size']:,} rows: import wall <= {s['target_ratio']:.1f}x raw (median of per-round ratios)"
        if s["latency"] or s["rate_limit"]:
            # The target is for a source answering at once: the loop's fixed costs against the import's.
            out.append((name + ", no latency or rate limit", fx(r) + " (latency/rate limit set)", None))
        else:
            out.append((name, fx(r) + _incorrect(clean), None if r is None else (r <= s["target_ratio"] and clean)))
    for s in summaries:
        if not s["latency"]:
            continue
        for kind, n, bound in TARGET_LATENCY_RATIOS:
            r = s["ratio_median"].get(kind)
            clean = _clean(s, kind, "raw")
            measured = "not run (--concurrency)" if kind not in s["ratio_median"] else fx(r) + _incorrect(clean)
            out.append((f"{s['size']:,} rows, {s['latency']:g} s latency: {kind} (concurrency {n}) wall <= "
                        f"{bound:.2f}x raw", measured, None if r is None else (r <= bound and clean)))
    for s in summaries:
        if not s["rate_limit"]:
            continue
        floor_rate = TARGET_RATE_SHARE * s["rate_limit"]
        for kind in s["import_kinds"]:
            k, clean = s["by_kind"][kind], _clean(s, kind)
            rate, share = k["rate_median"], k["share_429"]
            out.append((f"{s['size']:,} rows, limit {s['rate_limit']:g}/s: {kind} achieved rate >= "
                        f"{floor_rate:.1f} requests/s ({TARGET_RATE_SHARE:.0%} of the limit)",
                        f"{fmt(rate, '.1f')}/s" + _incorrect(clean), None if rate is None else (rate >= floor_rate and clean)))
            out.append((f"{s['size']:,} rows, limit {s['rate_limit']:g}/s: {kind} requests answered 429 "
                        f"< {TARGET_429_SHARE:.0%}",
                        f"{fmt(k['answered_429_median'], '.0f')} of {fmt(k['requests_median'], '.0f')} per run, "
                        f"{fmt(share, '.1%')}" + _incorrect(clean),
                        None if share is None else (share < TARGET_429_SHARE and clean)))
    for s in summaries:
        for kind in RSS_TARGET_KINDS:
            if kind not in s["rss_over_floor"]:
                continue
            d = s["rss_over_floor"][kind]
            if "floor" not in s["ok"]:
                out.append((f"{s['size']:,} rows: {kind} peak RSS - floor <= {TARGET_RSS_OVER_FLOOR_MB:.0f} MB",
                            "floor not run (--skip floor)", None))
                continue
            clean = _clean(s, kind, "floor")
            out.append((f"{s['size']:,} rows: {kind} peak RSS - floor <= {TARGET_RSS_OVER_FLOOR_MB:.0f} MB",
                        f"{fmt(d, '.1f')} MB" + _incorrect(clean),
                        None if d is None else (d <= TARGET_RSS_OVER_FLOOR_MB and clean)))
    if len(summaries) >= 2:
        small, large = min(summaries, key=lambda s: s["size"]), max(summaries, key=lambda s: s["size"])
        a, b = small["by_kind"]["import"]["rss_max"], large["by_kind"]["import"]["rss_max"]
        growth = b / a if a and b else None
        out.append((f"peak RSS {large['size']:,} / {small['size']:,} rows <= {TARGET_RSS_GROWTH:.1f}x",
                    f"{fmt(b, '.1f')} / {fmt(a, '.1f')} MB = {fx(growth)}",
                    None if growth is None else growth <= TARGET_RSS_GROWTH))
    return out


# --------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[150_000, 1_500_000], help="rows served (default 150000 1500000)")
    ap.add_argument("--rounds", type=int, nargs="+", default=None,
                    help="rounds: one number for every size, or one per size (default: 3; a median of 3 is a median)")
    ap.add_argument("--out", default=str(HERE / "RESULTS.md"), help="markdown report (default benchmarks/RESULTS.md)")
    ap.add_argument("--json-out", default=None, help="also write every run's figures as JSON here")
    ap.add_argument("--seed", type=int, default=42, help="demo data seed")
    ap.add_argument("--timeout", type=float, default=1200.0, help="seconds before a run is killed")
    ap.add_argument("--workdir", default=None, help="where the fresh databases go (default: system temp)")
    ap.add_argument("--keep", action="store_true", help="keep the databases and logs of every run")
    ap.add_argument("--latency", type=float, default=None, metavar="SECONDS",
                    help="the service delays every response by this much (its --latency; default none)")
    ap.add_argument("--rate-limit", type=float, default=None, metavar="PER_SECOND",
                    help="the service answers 429 beyond this many requests per second (its --rate-limit; default none)")
    ap.add_argument("--concurrency", type=int, nargs="+", default=None, metavar="N",
                    help=f"also run the import with --concurrency N each round, as kind import-cN "
                         f"(1..{MAX_CONCURRENCY}; {DEFAULT_CONCURRENCY} is the plain import)")
    ap.add_argument("--skip", nargs="+", choices=["resync", "floor"], default=None,
                    help="leave these kinds out of every round (e.g. to compare versions by raw and import only)")
    ap.add_argument("--import-bin", default=None, metavar="PATH",
                    help="the well-assets executable of the import runs (another installed version); "
                         "default: this environment's")
    ap.add_argument("--baseline-bin", default=None, metavar="PATH",
                    help="also run this well-assets executable (an earlier version) each round, as kind "
                         "`before`, right after the import: before and after in the same rounds")
    args = ap.parse_args(argv)
    args.argv_echo = argv
    global IMPORT_CMD
    IMPORT_CMD = [args.import_bin] if args.import_bin else None
    if args.rounds is None:
        rounds = [3 for _ in args.sizes]
    elif len(args.rounds) == 1:
        rounds = args.rounds * len(args.sizes)
    elif len(args.rounds) == len(args.sizes):
        rounds = args.rounds
    else:
        ap.error("--rounds takes one number or one per size")
    if any(r < 1 for r in rounds) or any(n < 1 for n in args.sizes):
        ap.error("sizes and rounds must be >= 1")
    if args.latency is not None and not 0 <= args.latency <= 600:
        ap.error("--latency takes seconds from 0 to 600")
    if args.rate_limit is not None and not args.rate_limit > 0:
        ap.error("--rate-limit takes a positive number of requests per second")
    if any(not 1 <= n <= MAX_CONCURRENCY for n in args.concurrency or []):
        ap.error(f"--concurrency takes whole numbers from 1 to {MAX_CONCURRENCY}")

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    started = dt.datetime.now(dt.timezone.utc)
    t0 = time.perf_counter()
    machine = machine_info()
    machine["bytecode"] = compile_checkout()
    log(f"machine: {machine['cpu']}, {machine['usable_cores']} cores, load {machine['load_at_start']}")
    results = [bench_size(n, r, args, log) for n, r in zip(args.sizes, rounds)]
    summaries = [summarize(res) for res in results]
    report = render(summaries, results, machine, args, started, time.perf_counter() - t0)
    print(report)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(report)
    log(f"wrote {args.out}")
    if args.json_out:
        payload = {"machine": machine, "summaries": summaries,
                   "results": [{**res, "runs": [{**asdict(r), "request_rate": r.request_rate, "share_429": r.share_429}
                                            for r in res["runs"]]} for res in results]}
        Path(args.json_out).write_text(json.dumps(payload, indent=2, default=str))
    return 0 if all(s["all_ok"] for s in summaries) else 1


if __name__ == "__main__":
    sys.exit(main())
