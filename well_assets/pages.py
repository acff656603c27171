"""PageStream: the pages of one run, fetched ahead and validated one at a time.

The asset returns a PageStream instead of a frame so that a run covering hundreds of
pages never holds more than a few of them: a background thread fetches and validates
page k+1 (at most ``prefetch`` pages ahead) while the consumer commits page k. That
overlap is where a large import wins its time.

A page that fails to fetch or has the wrong shape does not stop the stream: it comes out
as a PageItem carrying the error, so the consumer can record it and go on.
"""

from __future__ import annotations

import queue
import shutil
import threading
import time
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Callable, Iterator

from well_assets.errors import WellAssetsError
from well_assets.odata import ODataClient, PageResult
from well_assets.schema import ValidatedPage, ValidationSettings
from well_assets.validation import validate_page
from well_assets.storage.store import utc_now

_DONE = object()


@dataclass
class PageItem:
    """One page's outcome as it reaches the writer."""

    page: int
    partition_key: str
    started_at: datetime
    result: PageResult | None = None
    validated: ValidatedPage | None = None
    error: WellAssetsError | None = None
    fetch_wall_seconds: float = 0.0

    @property
    def failed(self) -> bool:
        return self.error is not None


@dataclass
class PageStream:
    """Lazily fetches and validates the given pages in ascending order.

    ``client_factory`` opens the OData client (a context manager); the stream owns it for
    the duration of the iteration and closes it on every path.
    """

    client_factory: Callable[[], AbstractContextManager[ODataClient]]
    pages: list[tuple[int, str]]
    page_size: int
    source: str
    validation: ValidationSettings = field(default_factory=ValidationSettings)
    prefetch: int = 2
    cache_dir: str | None = None
    _skip: set[int] = field(default_factory=set)

    def discard_cache(self) -> None:
        """Every page committed: the run group's cached responses are no longer needed."""
        if self.cache_dir:
            shutil.rmtree(self.cache_dir, ignore_errors=True)

    def skip_pages(self, pages: set[int]) -> None:
        """Pages already committed by an earlier attempt of this run: neither fetched nor written."""
        self._skip = set(pages)

    @property
    def pending(self) -> list[tuple[int, str]]:
        return [(page, key) for page, key in self.pages if page not in self._skip]

    def __iter__(self) -> Iterator[PageItem]:
        todo = self.pending
        if not todo:
            return
        fetched: queue.Queue = queue.Queue(maxsize=max(1, self.prefetch))
        stop = threading.Event()
        worker = threading.Thread(
            target=self._fetch_all, args=(todo, fetched, stop), name="odata-prefetch", daemon=True
        )
        worker.start()
        try:
            while True:
                item = fetched.get()
                if item is _DONE:
                    break
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            stop.set()
            # Unblock a producer waiting on a full queue so it can see the stop flag.
            while worker.is_alive():
                try:
                    fetched.get_nowait()
                except queue.Empty:
                    worker.join(timeout=0.05)

    def _fetch_all(self, todo, fetched: queue.Queue, stop: threading.Event) -> None:
        try:
            with self.client_factory() as client:
                for page, key in todo:
                    if stop.is_set():
                        return
                    item = PageItem(page=page, partition_key=key, started_at=utc_now())
                    began = time.perf_counter()
                    try:
                        item.result = client.fetch_page(page)
                    except WellAssetsError as exc:
                        item.error = exc
                    item.fetch_wall_seconds = time.perf_counter() - began
                    if not item.failed:
                        # Validating here too keeps the writer's thread for DuckDB, which
                        # releases the GIL while it executes: the two stages overlap.
                        self._validate(item)
                    if not _put(fetched, item, stop):
                        return
        except BaseException as exc:  # surfaced in the consumer thread, never swallowed
            _put(fetched, exc, stop)
            return
        _put(fetched, _DONE, stop)

    def _validate(self, item: PageItem) -> None:
        try:
            item.validated = validate_page(item.result.records, self.validation)
        except WellAssetsError as exc:
            item.error = exc
        # The raw records are no longer needed once validated; free them early.
        if item.result is not None:
            item.result.records = []


def _put(q: queue.Queue, item, stop: threading.Event) -> bool:
    while not stop.is_set():
        try:
            q.put(item, timeout=0.1)
            return True
        except queue.Full:
            continue
    return False
