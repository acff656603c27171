"""The page fetcher: a process of its own that fetches one page (HTTP, JSON, paging,
retries, throttle, response cache) and validates it (Polars, Pandera), then hands the
frames back.

Why a process and not a thread: decoding JSON, building the frame and running Pandera hold
the GIL for most of a page's work (docs/benchmarks.md). In a thread next to the writer they stalled its DuckDB
statements, which need the GIL back between calls. In a process of its own this stage runs
on the other core and the writer never waits for it.

Who owns it: whoever opens a ``PageFetcher`` (a context manager) closes it, and closing
stops the process, waiting a little for a page in flight and then terminating it. In
Dagster that owner is the ``ODataResource`` of a step (its teardown closes the fetcher),
so the process never outlives the step, the run or the command that started it. Nothing
here is module-global in the calling process, and nothing is left for ``atexit`` (which a
multiprocessing child, such as a Dagster step worker, never runs). Belt and braces: the
process is a daemon (a multiprocessing parent terminates it at exit instead of waiting for
it), and it exits on its own when its parent goes away (its end of the pipe closes).

The worker's log records travel back with each page and are re-emitted under the same
logger names in the caller, so Dagster captures them as if they were logged there.

Nothing here imports Dagster or DuckDB: the worker stays small and quick to start.
"""

from __future__ import annotations

import concurrent.futures as cf
import dataclasses
import gc
import importlib
import itertools
import logging
import multiprocessing
import os
import queue
import resource
import sys
import threading
import time
import types
from collections import OrderedDict
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Iterator

from well_assets.errors import WellAssetsError

if TYPE_CHECKING:  # imported lazily: the caller's start-up must not pay for them
    from well_assets.odata import ClientConfig, ODataClient, PageResult
    from well_assets.validation.model import ValidationSettings
    from well_assets.validation.page import ParsedPage, ValidatedPage

log = logging.getLogger(__name__)

_MAX_CLIENTS = 4  # one per run group in flight; older ones are closed
STOP_GRACE_SECONDS = 2.0  # how long close() lets a page in flight finish before terminating
# Fetching threads beyond the requests allowed in flight: a thread decoding and validating
# the page it just received holds no place in the host's throttle, so the next request
# need not wait for that CPU work. The throttle, not the thread count, caps the requests.
EXTRA_THREADS = 2
# The most parsed pages judged by Pandera in one call (their frames are held together).
JUDGED_TOGETHER = 16
# The parse step and Pandera cost mostly per call (docs/benchmarks.md), and this process
# shares one GIL, so the judging thread gathers pages while more are being fetched: it
# waits up to GATHER_GAP for the next one (pages fetched back to back come closer than
# that; a slow source's pages farther apart, and are judged as they come). When the writer
# holds PATIENT_FROM pages ready to write it can wait longer: the thread then keeps
# gathering while the writer still holds PATIENT_UNTIL. Never longer than GATHER_SECONDS.
GATHER_GAP = 0.01
PATIENT_FROM = 12
PATIENT_UNTIL = 6
GATHER_SECONDS = 0.25


@dataclass(frozen=True)
class PageTask:
    """Everything the worker needs for one page (picklable; the config carries secrets only
    over the pipe to the worker, never into a log or an error)."""

    config: ClientConfig
    page: int
    partition_key: str
    validation: ValidationSettings
    logger_name: str = "well_assets.odata"
    # By key range [lower, upper) instead of by offset; keys as the source sends them.
    by_range: bool = False
    lower: tuple | None = None
    upper: tuple | None = None

    @property
    def read_key(self) -> PageTask:
        """This task without what only labels its requests (the run id in X-Request-ID) or
        says where a run group caches its responses: tasks with equal keys read the same."""
        return dataclasses.replace(self, config=dataclasses.replace(self.config, run_id="local", cache_dir=None))

    def read(self, client: ODataClient) -> PageResult:
        if self.by_range:
            return client.fetch_range(self.page, self.lower, self.upper)
        return client.fetch_page(self.page)


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
    # The keys at every page_size-th record after the first page's worth (a range read
    # that holds more than a page: where the pages it splits into would start).
    split_keys: list[tuple] = field(default_factory=list)
    worker_pid: int = 0
    worker_peak_rss_mb: float = 0.0
    # The request rate the worker's throttle of the source is capped at after a 429 (None:
    # not capped); the caller's own requests to the source keep to it (Throttle.learn_rate).
    rate_cap: float | None = None
    log_records: list[logging.LogRecord] = field(default_factory=list)
    # A page of delta changes: the keys to delete (see storage.PageWrite.gone); None otherwise.
    gone: list[tuple] | None = None

    @property
    def failed(self) -> bool:
        return self.error is not None


class FetcherClosed(WellAssetsError):
    """The page fetcher was closed or its process died before the page came back."""

    code = "EXTERNAL_API_ERROR"


# -------------------------------------------------------------- in the calling process


class PageFetcher:
    """Fetches and validates pages in a process of its own; use it as a context manager.

    ``submit(task)`` returns a future of the page's ``PageItem`` (a page's own errors are
    inside the item; the future fails only when the fetcher is closed or its process
    died). ``outcome(future)`` waits for it and re-emits the worker's log lines here.
    ``in_thread=True`` runs the same code in a thread of this process instead (for a
    machine that cannot start processes, and for tests that need no second process).
    """

    def __init__(self, *, concurrency: int = 1, in_thread: bool = False, name: str = "well-assets-page-fetcher") -> None:
        self.name = name
        self.concurrency = concurrency
        self._in_thread = in_thread
        self._lock = threading.Lock()
        self._send_lock = threading.Lock()
        self._pending: dict[int, cf.Future] = {}
        self._early: dict[PageTask, cf.Future] = {}  # read_key -> future, see read_early
        self._ids = itertools.count()
        self._process: multiprocessing.process.BaseProcess | None = None
        self._conn: Any = None
        self._reader: threading.Thread | None = None
        self._threads: cf.ThreadPoolExecutor | None = None
        self._closed = False
        self._peak_rss_mb = 0.0

    # -- lifecycle ----------------------------------------------------------------

    def start(self) -> PageFetcher:
        """Start the process now (its imports overlap whatever the caller does next)."""
        with self._lock:
            if self._closed:
                raise FetcherClosed("the page fetcher is closed")
            if self._process is not None or self._threads is not None:
                return self
            if not self._in_thread:
                try:
                    self._start_process()
                    return self
                except OSError as exc:
                    # Some locked-down containers cannot start processes: fetch in a thread.
                    # Correct, only slower (the GIL is shared with the writer).
                    log.warning("page fetcher process unavailable (%s); fetching pages in a thread instead", exc)
            self._threads = cf.ThreadPoolExecutor(max_workers=self.concurrency + EXTRA_THREADS,
                                                  thread_name_prefix=self.name)
        return self

    def _start_process(self) -> None:
        # spawn, not fork: the caller holds threads and locks (Dagster, uvicorn, DuckDB).
        context = multiprocessing.get_context("spawn")
        parent, child = context.Pipe(duplex=True)
        process = context.Process(target=_serve, args=(child, self.concurrency), name=self.name, daemon=True)
        try:
            with _without_main():
                process.start()
        finally:
            child.close()
        self._process, self._conn = process, parent
        self._reader = threading.Thread(target=self._read, name=f"{self.name}-reader", daemon=True)
        self._reader.start()

    def close(self, grace: float = STOP_GRACE_SECONDS) -> None:
        """Stop the fetcher: pages not yet back fail with FetcherClosed; a page in flight
        gets ``grace`` seconds, then the process is terminated. Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._early.clear()
            process, conn, reader, threads = self._process, self._conn, self._reader, self._threads
        if threads is not None:
            threads.shutdown(wait=False, cancel_futures=True)
        if process is not None:
            try:
                with self._send_lock:
                    conn.send(None)  # ask the worker to stop after the page in hand
            except (OSError, ValueError):
                pass  # already gone
            process.join(grace)
            if process.is_alive():
                process.terminate()
                process.join(grace)
            if process.is_alive():
                process.kill()
                process.join()
            conn.close()
            if reader is not None:
                reader.join(grace)
        self._fail_pending(FetcherClosed("the page fetcher was closed before the page came back"))

    def __enter__(self) -> PageFetcher:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def pid(self) -> int | None:
        """The worker process's pid (None in thread mode or before start)."""
        return self._process.pid if self._process is not None else None

    @property
    def peak_rss_mb(self) -> float:
        """The worker's peak RSS as last reported (0 before it served a page or in a thread)."""
        return self._peak_rss_mb

    # -- pages --------------------------------------------------------------------

    def read_early(self, tasks: list[PageTask]) -> None:
        """Start reading ``tasks`` before anyone asks for them: a later ``submit`` of a task
        with the same ``read_key`` gets the page read here instead of reading it again.
        For a caller that knows which pages will be read first and has other work to do
        meanwhile (the CLI, while Dagster starts its run). Pages never asked for are dropped
        when the fetcher closes."""
        for task in tasks:
            key = task.read_key
            with self._lock:
                if key in self._early:
                    continue
            future = self.submit(task)
            with self._lock:
                self._early[key] = future

    def was_read_early(self, task: PageTask) -> bool:
        """Whether ``submit(task)`` would hand over a page read early (see ``read_early``)."""
        with self._lock:
            return bool(self._early) and task.read_key in self._early

    def submit(self, task: PageTask, ready: int = 0) -> cf.Future:
        """Queue one page; the future yields its PageItem (see ``outcome``). ``ready``: how
        many fetched pages the caller holds that it has not written yet (how long it can
        wait for the next ones; see PATIENT_FROM). A page read early (``read_early``) is
        not read again: its future is handed over."""
        with self._lock:
            early = self._early.pop(task.read_key, None) if self._early else None
        if early is not None:
            return early
        self.start()
        if self._threads is not None:
            return self._threads.submit(run_page, task)
        future: cf.Future = cf.Future()
        task_id = next(self._ids)
        with self._lock:
            if self._closed:
                raise FetcherClosed("the page fetcher is closed")
            self._pending[task_id] = future
        try:
            with self._send_lock:
                self._conn.send((task_id, task, ready))
        except (OSError, ValueError) as exc:
            self._pending.pop(task_id, None)
            raise FetcherClosed(f"the page fetcher process is gone ({exc}); re-run the failed pages") from None
        return future

    def outcome(self, future: cf.Future) -> PageItem:
        """Wait for a page; its worker's log records are re-emitted here first."""
        item: PageItem = future.result()
        self._peak_rss_mb = max(self._peak_rss_mb, item.worker_peak_rss_mb)
        for record in item.log_records:
            logger = logging.getLogger(record.name)
            if logger.isEnabledFor(record.levelno):
                logger.handle(record)
        item.log_records = []
        return item

    def _read(self) -> None:
        """Reader thread: completes the futures as the worker's answers arrive."""
        conn = self._conn
        while True:
            try:
                task_id, item = conn.recv()
            except (EOFError, OSError, ValueError):
                break
            future = self._pending.pop(task_id, None)
            if future is not None and future.set_running_or_notify_cancel():
                future.set_result(item)
        if self._closed:
            error = FetcherClosed("the page fetcher was closed before the page came back")
        else:
            exit_code = self._process.exitcode if self._process is not None else None
            error = FetcherClosed(f"the page fetcher process ended (exit code {exit_code}) before the page "
                                  "came back; re-run the failed pages")
        self._fail_pending(error)

    def _fail_pending(self, error: Exception) -> None:
        with self._lock:
            pending, self._pending = self._pending, {}
        for future in pending.values():
            if future.set_running_or_notify_cancel():
                future.set_exception(error)


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


# ------------------------------------------------------------------ in the worker

_clients: OrderedDict = OrderedDict()  # ClientConfig -> open ODataClient (worker process only)
_clients_lock = threading.Lock()
_IN_WORKER = False  # set in the worker process only


def _serve(conn: Any, concurrency: int = 1) -> None:
    """The worker process: pages in, PageItems out, until told to stop or orphaned.

    Pages are fetched and parsed by ``concurrency`` (+ EXTRA_THREADS) threads, judged by
    one thread (the pages it gathers in one call; see GATHER_GAP), and a sender thread
    hands finished pages back, so a page waiting for the writer to take it never holds up
    the next fetch."""
    global _IN_WORKER
    _IN_WORKER = True
    gc.disable()  # the imports make long-lived objects only: no collections while they run
    importlib.import_module("well_assets.odata")
    importlib.import_module("well_assets.validation.page")
    from well_assets.validation.model import use_in_memory_engine, well_production_model

    use_in_memory_engine()  # this process only validates
    well_production_model()  # Pandera and the default model, before the first page needs them
    # Imports done: keep their objects out of every collection, the one at exit included.
    gc.freeze()
    gc.enable()
    outbox: queue.SimpleQueue = queue.SimpleQueue()

    def send() -> None:
        while (message := outbox.get()) is not None:
            try:
                conn.send(message)
            except (OSError, ValueError):
                return

    sender = threading.Thread(target=send, name="page-sender", daemon=True)
    sender.start()
    # Parsed pages wait here for the one judging thread, which takes the pages waiting and
    # those worth waiting for (up to JUDGED_TOGETHER; see GATHER_GAP) into one parse step
    # and one Pandera call.
    parsed_pages: queue.SimpleQueue = queue.SimpleQueue()
    writer_ready = [0]  # the pages the writer holds unwritten, as of its last request
    fetching = [0]  # pages received and not yet parsed (or failed)
    fetching_lock = threading.Lock()

    def gathered(first: tuple) -> list[tuple]:
        """``first`` and the parsed pages worth waiting for (see GATHER_GAP)."""
        batch = [first]
        patient = writer_ready[0] >= PATIENT_FROM
        until = time.monotonic() + GATHER_SECONDS
        while len(batch) < JUDGED_TOGETHER:
            coming = fetching[0] > 0 and time.monotonic() < until
            patient = patient and coming and writer_ready[0] >= PATIENT_UNTIL
            try:
                waiting = parsed_pages.get(timeout=GATHER_GAP) if coming else parsed_pages.get_nowait()
            except queue.Empty:
                if patient:
                    continue
                break
            if waiting is None:
                parsed_pages.put(None)
                break
            batch.append(waiting)
        return batch

    def judging() -> None:
        while (first := parsed_pages.get()) is not None:
            batch = gathered(first)
            try:
                judged = judge([entry for _, entry in batch])
            except Exception as exc:  # a bug must fail these pages, not leave them waiting
                judged = [_finished(item, error=_unexpected(exc)) for _, (item, _parsed, _s) in batch]
            for (task_id, _entry), item in zip(batch, judged):
                outbox.put((task_id, item))

    judge_thread = threading.Thread(target=judging, name="page-judge", daemon=True)
    judge_thread.start()

    def fetched(task_id: int, task: PageTask) -> None:
        try:
            item, parsed = fetch_and_parse(task)
        except Exception as exc:  # a bug must fail the page, not leave it waiting
            item, parsed = PageItem(page=task.page, partition_key=task.partition_key,
                                    started_at=datetime.now(UTC).replace(tzinfo=None), error=_unexpected(exc)), None
        if parsed is None:
            outbox.put((task_id, _finished(item)))
        else:
            parsed_pages.put((task_id, (item, parsed, task.validation)))
        with fetching_lock:
            fetching[0] -= 1

    pool = cf.ThreadPoolExecutor(max_workers=concurrency + EXTRA_THREADS, thread_name_prefix="page-fetch")
    try:
        while True:
            try:
                message = conn.recv()
            except (EOFError, OSError):
                break  # the parent is gone: nobody wants the pages any more
            if message is None:
                break
            task_id, task, writer_ready[0] = message
            with fetching_lock:
                fetching[0] += 1
            pool.submit(fetched, task_id, task)
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
        parsed_pages.put(None)
        judge_thread.join(STOP_GRACE_SECONDS)
        outbox.put(None)
        sender.join(STOP_GRACE_SECONDS)
        with _clients_lock:
            while _clients:
                _clients.popitem()[1].close()
        conn.close()
    # Everything is sent and closed: end here, as a forked worker would. The interpreter's
    # own shutdown would tear down what the imports and the pages built (Polars, DuckDB,
    # Pandera, the modules) while the import waits for this process to stop.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


class _Capture(logging.Handler):
    """The log records of one page: those its own thread emits."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []
        self.thread = threading.get_ident()
        self.addFilter(lambda record: record.thread == self.thread)

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

    with _clients_lock:
        client = _clients.get(config)
        if client is None:
            client = ODataClient(config, logger=logger).__enter__()
            _clients[config] = client
            while len(_clients) > _MAX_CLIENTS:
                _clients.popitem(last=False)[1].close()
        _clients.move_to_end(config)
        return client


def fetch_and_parse(task: PageTask) -> tuple[PageItem, ParsedPage | None]:
    """Fetch one page and parse its records (the part of a page that runs in a fetching
    thread). The ParsedPage is None when the page failed (the error is in the item)."""
    from well_assets.odata.paging import record_key
    from well_assets.validation.page import parse_page

    logger = logging.getLogger(task.logger_name)
    capture = _Capture()
    if _IN_WORKER:  # ship the records to the caller; in a thread they are logged directly
        logger.setLevel(logging.DEBUG)  # the caller's logger levels decide what is kept
        logger.propagate = False
        logger.addHandler(capture)
    # Naive UTC like storage.records.utc_now (not imported for it: the storage package loads
    # DuckDB, which a thread-mode caller's start-up need not pay for).
    out = PageItem(page=task.page, partition_key=task.partition_key,
                   started_at=datetime.now(UTC).replace(tzinfo=None))
    parsed = None
    began = time.perf_counter()
    try:
        try:
            if _IN_WORKER:
                client = _client(task.config, logger)
                try:
                    out.result = task.read(client)
                finally:
                    out.rate_cap = client.throttle.rate_cap
            else:  # a thread of the caller: a client of its own, closed with the page
                from well_assets.odata import ODataClient

                with ODataClient(task.config, logger=logger) as client:
                    out.result = task.read(client)
        except WellAssetsError as exc:
            out.error = exc
        out.fetch_wall_seconds = time.perf_counter() - began
        if out.error is None:
            records, size = out.result.records, task.config.page_size
            out.split_keys = [record_key(records[i], task.config.key_names) for i in range(size, len(records), size)]
            try:
                parsed = parse_page(records)
            except WellAssetsError as exc:
                out.error = exc
            out.result.records = []  # parsed: the raw records need not travel back
    finally:
        logger.removeHandler(capture)
    out.log_records = capture.records
    return out, parsed


def _finished(item: PageItem, validated: ValidatedPage | None = None, error: WellAssetsError | None = None) -> PageItem:
    item.validated = validated
    if error is not None:
        item.error = error
    item.worker_pid = os.getpid()
    if _IN_WORKER:  # in a thread, this process's peak is the caller's own
        item.worker_peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return item


def _unexpected(exc: Exception) -> WellAssetsError:
    return WellAssetsError(f"the page fetcher failed unexpectedly: {type(exc).__name__}: {exc}")


def judge(batch: list[tuple[PageItem, ParsedPage, ValidationSettings]]) -> list[PageItem]:
    """The Pandera model over parsed pages that wait together (pages validated with the
    same settings are judged in one call); a page whose judgement fails fails alone."""
    from well_assets.validation.page import judge_pages

    groups: dict[ValidationSettings, list[int]] = {}
    for n, (_item, _parsed, settings) in enumerate(batch):
        groups.setdefault(settings, []).append(n)
    outcome: dict[int, PageItem] = {}
    for settings, members in groups.items():
        try:
            judged = judge_pages([batch[n][1] for n in members], settings)
        except WellAssetsError:
            judged = None
        for position, n in enumerate(members):
            item, parsed, _settings = batch[n]
            if judged is not None:
                outcome[n] = _finished(item, judged[position])
                continue
            try:
                outcome[n] = _finished(item, judge_pages([parsed], settings)[0])
            except WellAssetsError as exc:
                outcome[n] = _finished(item, error=exc)
    items = [outcome[n] for n in range(len(batch))]
    _add_key_checksums([item.validated for item in items if item.validated is not None])
    return items


def _add_key_checksums(pages: list[ValidatedPage]) -> None:
    """Each page's key checksum, for the ledger (``storage.contents``): computed here, where
    the page fetcher's process has time to spare, not on the writer's thread (whose ledger
    statement then need not scan the page's rows). DuckDB loaded in this process costs it
    about 30 MB of memory of its own (docs/benchmarks.md)."""
    import duckdb

    from well_assets.storage.contents import key_checksums

    try:
        checksums = key_checksums([page.valid for page in pages])
    except duckdb.Error:  # the writer computes them itself
        return
    for page, checksum in zip(pages, checksums):
        page.key_checksum = checksum


def run_page(task: PageTask) -> PageItem:
    """Fetch and validate one page on its own (thread mode)."""
    item, parsed = fetch_and_parse(task)
    if parsed is None:
        return _finished(item)
    return judge([(item, parsed, task.validation)])[0]
