"""PageStream against the real page fetcher and the bundled service: pages come out in
order, each is requested once, at most MAX_HELD_PAGES are held ahead of the writer, and a
stream stopped early sends nothing more."""

from __future__ import annotations

import concurrent.futures

import pytest

from well_assets.odata import ClientConfig
from well_assets.pages import stream as stream_module
from well_assets.pages.fetcher import PageFetcher
from well_assets.pages.stream import PageStream
from well_assets_tests.odata_helpers import wait_until


class CountingFetcher(PageFetcher):
    """The real fetcher, noting which pages the stream hands it (in order)."""

    def __init__(self, concurrency: int = 1) -> None:
        super().__init__(concurrency=concurrency)
        self.submitted: list[int] = []
        self.ready: list[int] = []
        self.futures: list = []

    def submit(self, task, ready=0):
        self.submitted.append(task.page)
        self.ready.append(ready)
        future = super().submit(task, ready=ready)
        self.futures.append(future)
        return future


@pytest.fixture(params=[1, 4], ids=["one-in-flight", "four-in-flight"])
def fetcher(request):
    with CountingFetcher(concurrency=request.param) as fetcher:
        yield fetcher


def _stream(fetcher, server, pages: range, prefetch: int = 2) -> PageStream:
    config = ClientConfig(base_url=server.base_url, page_size=100)
    return PageStream(fetcher=fetcher, client_config=config, pages=[(p, f"{p:05d}") for p in pages],
                      page_size=100, source="test", prefetch=prefetch)


def _page_requests(server) -> list[int]:
    return sorted(r["skip"] or 0 for r in server.state.stats.recent_requests() if r.get("endpoint") == "collection")


def test_pages_come_out_in_order_and_each_is_requested_once(demo_server, fetcher):
    server = demo_server(rows=1200, bad_rows=0.0)
    server.state.stats.reset()
    items = list(_stream(fetcher, server, range(12), prefetch=3))
    assert [item.page for item in items] == list(range(12))
    assert all(item.error is None and item.validated.valid.height == 100 for item in items)
    assert fetcher.submitted == list(range(12))
    assert _page_requests(server) == [100 * p for p in range(12)]


def test_a_writer_with_pages_in_hand_gets_every_page_in_order_once(demo_server, fetcher):
    """A writer slower than the fetcher holds pages, and tells the fetcher how many (with
    enough in hand, the fetcher gathers pages to judge them together): still every page
    comes out, in order, whole, requested once."""
    server = demo_server(rows=6000, bad_rows=0.01)
    server.state.stats.reset()
    items = []
    for item in _stream(fetcher, server, range(60), prefetch=4):
        items.append(item)
        # The writer is busy with each page until the service has answered every page sent.
        assert wait_until(lambda: len(_page_requests(server)) >= len(fetcher.submitted), timeout=30)
    assert [item.page for item in items] == list(range(60))
    assert all(item.error is None for item in items)
    assert sum(item.validated.valid.height + item.validated.rejects.height + item.validated.in_page_duplicates
               for item in items) == 6000
    assert max(fetcher.ready) > 0  # the writer said it held pages
    assert fetcher.submitted == list(range(60))
    assert _page_requests(server) == [100 * p for p in range(60)]


def test_the_fetcher_works_ahead_but_holds_at_most_max_held_pages(demo_server, fetcher, monkeypatch):
    monkeypatch.setattr(stream_module, "MAX_HELD_PAGES", 3)
    server = demo_server(rows=1000, bad_rows=0.0)
    ahead = []
    for item in _stream(fetcher, server, range(10), prefetch=2):
        # The stream sends fetches only while the writer asks for the next page, so what
        # was sent while it holds page k is fixed: pages after k, fetched or in flight.
        ahead.append(len(fetcher.submitted) - (item.page + 1))
    assert ahead[:8] and min(ahead[:8]) >= 1  # never idle while pages remain
    assert max(ahead) <= max(3, fetcher.concurrency + 2)
    assert fetcher.submitted == list(range(10))


def test_pages_read_early_are_taken_over_without_holding_up_new_fetches(demo_server, fetcher, monkeypatch):
    monkeypatch.setattr(stream_module, "MAX_HELD_PAGES", 3)
    server = demo_server(rows=2000, bad_rows=0.0)
    server.state.stats.reset()
    stream = _stream(fetcher, server, range(20), prefetch=2)
    fetcher.read_early(stream.tasks()[:8])  # what the command does while Dagster starts
    concurrent.futures.wait(fetcher.futures, timeout=30)  # read and judged before the run asks
    fetcher.submitted.clear()
    pages = iter(stream)
    assert next(pages).page == 0
    # Holding page 0, the stream took the eight early pages over (more than it may hold of
    # its own) and still sent new fetches beyond them.
    assert fetcher.submitted[:8] == list(range(8)) and len(fetcher.submitted) > 8
    assert [item.page for item in pages] == list(range(1, 20))
    assert _page_requests(server) == [100 * p for p in range(20)]  # each page read once


def test_a_stream_stopped_early_sends_no_more_requests(demo_server, fetcher):
    server = demo_server(rows=8000, bad_rows=0.0)
    server.state.stats.reset()
    pages = iter(_stream(fetcher, server, range(80), prefetch=2))
    assert [next(pages).page, next(pages).page] == [0, 1]
    pages.close()  # the consumer stops (a failed run, a terminated step)
    sent = list(fetcher.submitted)
    # the two taken and at most the held pages more (fetched, in flight or queued)
    assert len(sent) <= 2 + max(stream_module.MAX_HELD_PAGES, fetcher.concurrency + 2) < 80
    assert wait_until(lambda: _page_requests(server) == [100 * p for p in sent], timeout=30)
