"""PageStream: the pages of one run, fetched ahead and validated one at a time.

The asset returns a PageStream instead of a frame so that a run covering hundreds of
pages never holds more than a few of them: the page fetcher's process
(``fetch_worker.PageFetcher``, owned by the step's OData resource) fetches and validates
the next pages (the fetcher's ``concurrency`` in flight and ``prefetch`` more queued, at
most ``MAX_HELD_PAGES`` pages held besides the ones read early) while the consumer
commits page k. That overlap is where a large import wins its time. Pages are handed to the consumer in page order, so a
page's lower key is known before the page after it is committed (``pages.ranges``); a
page that comes back early waits in memory for the ones before it.

A page that fails to fetch or has the wrong shape does not stop the stream: it comes out
as a PageItem carrying the error, so the consumer can record it and go on.
"""

from __future__ import annotations

import shutil
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime
from typing import Callable, Iterator

from well_assets.odata import ClientConfig
from well_assets.odata.throttle import throttle_for
from well_assets.pages import fetcher as fetch_worker
from well_assets.pages.fetcher import PageFetcher, PageItem
from well_assets.validation.model import ValidationSettings

__all__ = ["PageItem", "PageStream"]  # PageItem is built by the page fetcher

# Fetched pages a stream may hold while the writer is busy (~70 KB of frames each): the
# fetcher keeps working through a slow write instead of idling. Pages the command read
# early for the run (cli.plan) come on top, once, at the start.
MAX_HELD_PAGES = 32


@dataclass
class PageStream:
    """Lazily fetches and validates the given pages in ascending order with ``fetcher``,
    with the OData client ``client_config`` describes."""

    fetcher: PageFetcher
    client_config: ClientConfig
    pages: list[tuple[int, str]]
    page_size: int
    source: str
    validation: ValidationSettings = field(default_factory=ValidationSettings)
    prefetch: int = 4
    cache_dir: str | None = None
    logger_name: str = "well_assets.odata"
    root_run_id: str | None = None  # the run group: its committed pages are not fetched again
    import_id: str | None = None  # the import the pages belong to (the ledger groups by it)
    run_started_at: datetime | None = None  # naive UTC start of the run
    # Pages whose key range is known: read by range [lower, upper), not by offset.
    ranges: dict[int, tuple[tuple | None, tuple | None]] = field(default_factory=dict)
    max_delete_fraction: float = 1.0
    # Registers page keys that a split of the last page creates (the asset's instance).
    register_keys: Callable[[list[str]], None] | None = None
    _skip: set[int] = field(default_factory=set)

    def discard_cache(self) -> None:
        """Every page committed: the run group's cached responses are no longer needed."""
        if self.cache_dir:
            shutil.rmtree(self.cache_dir, ignore_errors=True)

    def skip_pages(self, pages: set[int]) -> None:
        """Pages already committed by an earlier attempt of this run: neither fetched nor written."""
        self._skip = set(pages)

    def task(self, page: int, key: str, by_range: bool = False, lower: tuple | None = None,
             upper: tuple | None = None) -> fetch_worker.PageTask:
        return fetch_worker.PageTask(self.client_config, page, key, self.validation, self.logger_name,
                                     by_range=by_range, lower=lower, upper=upper)

    def tasks(self) -> list[fetch_worker.PageTask]:
        """The fetch tasks of the pending pages, in order (equal tasks = the same fetch)."""
        return [self.task(page, key, page in self.ranges, *self.ranges.get(page, (None, None)))
                for page, key in self.pending]

    def read_range(self, page: int, key: str, lower: tuple | None, upper: tuple | None) -> PageItem:
        """One key range, read and validated now (the writer waits for it)."""
        return self.fetcher.outcome(self.fetcher.submit(self.task(page, key, True, lower, upper)))

    @property
    def pending(self) -> list[tuple[int, str]]:
        return [(page, key) for page, key in self.pages if page not in self._skip]

    def __iter__(self) -> Iterator[PageItem]:
        todo = iter(self.tasks())
        in_flight: deque = deque()  # (future, read early), in page order
        ahead = self.fetcher.concurrency + max(0, self.prefetch)
        most = max(ahead, MAX_HELD_PAGES)

        def top_up() -> None:
            # Keep the fetcher's `concurrency` fetches running and `prefetch` more queued,
            # however many pages are already fetched and waiting (a fetcher faster than the
            # writer): the fetcher never idles while pages remain, and at most `most` pages
            # are held besides the ones read early (they are held already, and taking them
            # must not stop new fetches while the writer works through them).
            while (sum(not early for _, early in in_flight) < most
                   and sum(not future.done() for future, _ in in_flight) < ahead):
                task = next(todo, None)
                if task is None:
                    return
                early = self.fetcher.was_read_early(task)
                ready = sum(future.done() for future, _ in in_flight)
                in_flight.append((self.fetcher.submit(task, ready=ready), early))

        top_up()
        try:
            while in_flight:
                item = self.fetcher.outcome(in_flight.popleft()[0])
                if item.rate_cap is not None:
                    config = self.client_config
                    throttle_for(config.base_url, config.min_interval, config.adaptive_throttle,
                                 config.concurrency).learn_rate(item.rate_cap)
                top_up()  # keep the fetcher busy while this page is written
                yield item
        finally:
            for future, _ in in_flight:  # the consumer stopped early: drop what is queued
                future.cancel()
