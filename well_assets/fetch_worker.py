"""The page fetcher's own process: fetch one page (HTTP, JSON, paging, retries, throttle,
response cache) and validate it (Polars, Pandera), then hand the frames back.

Why a process and not a thread: decoding JSON, building the frame and running Pandera hold
the GIL for 15-20 ms per page. In a thread next to the writer they stalled its DuckDB
statements, which need the GIL back between calls (measured: writing a page takes 15 ms
alone and 32 ms next to a busy prefetch thread). In a process of its own this stage runs on
the other core and the writer never waits for it.

One worker per importing process, kept for the process's life: so one HTTP connection pool,
one throttle (politeness is per source, not per run) and one sequential stream of requests.
``prewarm()`` starts it early so that its imports (Polars, Pandera, httpx: no Dagster)
overlap the caller's own start-up. The worker's log records travel back with each page and
are re-emitted under the same logger names here, so Dagster captures them as before.

Nothing here imports Dagster or DuckDB: the worker stays small and quick to start.
"""

from __future__ import annotations

import atexit
import concurrent.futures as cf
import gc
import importlib
import logging
import multiprocessing
import os
import resource
import sys
import threading
import time
import types
from collections import OrderedDict
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Iterator

from well_assets.errors import WellAssetsError

if TYPE_CHECKING:  # imported lazily: prewarm() must cost the caller nothing
    from well_assets.odata import ClientConfig, ODataClient, PageResult
    from well_assets.schema import ValidatedPage, ValidationSettings

_MAX_CLIENTS = 4  # one per run group in flight; older ones are closed


@dataclass(frozen=True)
class PageTask:
    """Everything the worker needs for one page (picklable; the config carries secrets only
    over the pipe to the worker, never into a log or an error)."""

    config: ClientConfig
    page: int
    partition_key: str
    validation: ValidationSettings
    logger_name: str = "well_assets.odata"


@dataclass
class PageItem:
    """One page's outcome as it reaches the writer (built in the worker)."""

    page: int
    partition_key: str
    started_at: datetime
    result: PageResult | None = None
    validated: ValidatedPage | None = None
    error: WellAssetsError | None = None
    fetch_wall_seconds: float = 0.0
    worker_pid: int = 0
    worker_peak_rss_mb: float = 0.0
    log_records: list[logging.LogRecord] = field(default_factory=list)

    @property
    def failed(self) -> bool:
        return self.error is not None


# -------------------------------------------------------------- in the calling process

_lock = threading.Lock()
_executor: cf.ProcessPoolExecutor | None = None


def _pool() -> cf.ProcessPoolExecutor:
    global _executor
    with _lock:
        if _executor is None:
            try:
                # spawn, not fork: the caller may hold threads and locks (Dagster, uvicorn).
                executor = cf.ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn"))
                with _without_main():
                    executor.submit(_ready)  # start the process (and its imports) now
            except (OSError, NotImplementedError) as exc:
                # No process-shared semaphores here (some locked-down containers): fetch in a
                # thread instead. Correct, only slower (the GIL is shared with the writer).
                logging.getLogger(__name__).warning(
                    "page fetcher process unavailable (%s); fetching pages in a thread instead", exc
                )
                executor = cf.ThreadPoolExecutor(max_workers=1, thread_name_prefix="page-fetcher")
            _executor = executor
        return _executor


@contextmanager
def _without_main() -> Iterator[None]:
    """Spawn re-runs the caller's ``__main__`` in the child unless it looks like an
    interactive session. The worker needs nothing from it, and a script without a
    ``__main__`` guard would start a second import inside the worker."""
    saved = sys.modules.get("__main__")
    sys.modules["__main__"] = types.ModuleType("__main__")
    try:
        yield
    finally:
        if saved is not None:
            sys.modules["__main__"] = saved


def prewarm() -> None:
    """Start the worker now, so it is ready when the first page is wanted."""
    _pool()


# Read-ahead across runs: a caller that knows which pages come next (the CLI knows the
# next ranged run's pages and run id) plans them; they are queued when the worker would
# otherwise idle (at start-up, and while Dagster logs a finished run's events), and the
# run that asks for the same task later gets the future that is already done.
READ_AHEAD_PAGES = 128  # ~70 KB of frames each; enough to cover a run's event logging
_planned: list[PageTask] = []
_read_ahead: dict[PageTask, cf.Future] = {}


def plan_read_ahead(tasks: list[PageTask]) -> None:
    """The tasks to queue at the next ``start_read_ahead()`` (replaces the previous plan;
    at most READ_AHEAD_PAGES are kept)."""
    _planned[:] = tasks[:READ_AHEAD_PAGES]


def start_read_ahead() -> None:
    """Queue the planned tasks now (the worker has nothing else to do)."""
    tasks, _planned[:] = list(_planned), []
    for task in tasks:
        if task not in _read_ahead:
            _read_ahead[task] = _submit(task)


def drop_read_ahead() -> None:
    """Forget planned and queued read-ahead that no run asked for (results are dropped)."""
    _planned.clear()
    while _read_ahead:
        _read_ahead.popitem()[1].cancel()


def submit(task: PageTask) -> cf.Future:
    """Queue one page, or take its read-ahead future; the future yields a PageItem (errors
    of the page inside it)."""
    future = _read_ahead.pop(task, None)
    return future if future is not None else _submit(task)


def _submit(task: PageTask) -> cf.Future:
    executor = _pool()
    try:
        future = executor.submit(run_page, task)
    except cf.process.BrokenProcessPool:
        _discard(executor)
        executor = _pool()
        future = executor.submit(run_page, task)
    future.wa_executor = executor  # so a failure discards this pool, not a newer one
    return future


def outcome(future: cf.Future) -> PageItem:
    """The page's outcome, its worker's log records re-emitted here first."""
    try:
        result: PageItem = future.result()
    except cf.process.BrokenProcessPool as exc:
        _discard(getattr(future, "wa_executor", None))
        raise WellAssetsError(f"the page fetcher process died ({exc}); re-run the failed pages") from None
    _note_peak(result.worker_peak_rss_mb)
    for record in result.log_records:
        logger = logging.getLogger(record.name)
        if logger.isEnabledFor(record.levelno):
            logger.handle(record)
    result.log_records = []
    return result


_last_peak_mb = 0.0


def worker_peak_rss_mb() -> float:
    """The worker's peak RSS as last reported (0 before it served a page)."""
    return _last_peak_mb


def _note_peak(mb: float) -> None:
    global _last_peak_mb
    _last_peak_mb = max(_last_peak_mb, mb)


def shutdown() -> None:
    """Stop the worker (it is restarted on next use)."""
    _discard(_executor)


# Stopped before the interpreter tears modules down (a pool collected later logs noise).
atexit.register(shutdown)


def _discard(executor: cf.ProcessPoolExecutor | None) -> None:
    global _executor
    if executor is None:
        return
    with _lock:
        if _executor is executor:
            _executor = None
    executor.shutdown(wait=True, cancel_futures=True)  # quick: the worker is idle or dead


# ------------------------------------------------------------------ in the worker

_clients: OrderedDict = OrderedDict()  # ClientConfig -> open ODataClient


_IN_WORKER = False  # set in the worker process only


def _ready() -> bool:
    global _IN_WORKER
    _IN_WORKER = True
    # The worker's imports, done before page one.
    importlib.import_module("well_assets.odata")
    importlib.import_module("well_assets.validation")
    from well_assets.schema import use_in_memory_engine_for_process

    use_in_memory_engine_for_process()  # this process only validates
    # Imports done: keep their objects out of every collection, the one at exit included
    # (which otherwise makes stopping the worker take ~0.3 s).
    gc.freeze()
    return True


class _Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        # Render now: arguments and tracebacks need not survive pickling.
        record.msg = record.getMessage()
        record.args = None
        if record.exc_info:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
            record.exc_info = None
        self.records.append(record)


def _client(config: ClientConfig, logger: logging.Logger) -> ODataClient:
    from well_assets.odata import ODataClient

    client = _clients.get(config)
    if client is None:
        client = ODataClient(config, logger=logger).__enter__()
        _clients[config] = client
        while len(_clients) > _MAX_CLIENTS:
            _clients.popitem(last=False)[1].close()
    _clients.move_to_end(config)
    return client


def run_page(task: PageTask) -> PageItem:
    """Fetch and validate one page (runs in the worker)."""
    from well_assets.validation import validate_page

    logger = logging.getLogger(task.logger_name)
    capture = _Capture()
    if _IN_WORKER:  # ship the records to the caller; in a thread they are logged directly
        logger.setLevel(logging.DEBUG)  # the caller's logger levels decide what is kept
        logger.propagate = False
        logger.addHandler(capture)
    # Naive UTC like storage.records.utc_now, which this module cannot import: the storage
    # package imports Dagster, which the worker must not load.
    out = PageItem(page=task.page, partition_key=task.partition_key,
                   started_at=datetime.now(UTC).replace(tzinfo=None))
    began = time.perf_counter()
    try:
        try:
            out.result = _client(task.config, logger).fetch_page(task.page)
        except WellAssetsError as exc:
            out.error = exc
        out.fetch_wall_seconds = time.perf_counter() - began
        if out.error is None:
            try:
                out.validated = validate_page(out.result.records, task.validation)
            except WellAssetsError as exc:
                out.error = exc
            out.result.records = []  # validated: the raw records need not travel back
    finally:
        logger.removeHandler(capture)
    out.log_records = capture.records
    out.worker_pid = os.getpid()
    if _IN_WORKER:  # in a thread, this process's peak is the caller's own
        out.worker_peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return out
