"""PageStream against the real page fetcher and the bundled service: pages come out in
order, read-ahead fetches are taken instead of repeated, and the worker is kept busy."""

from __future__ import annotations

import time

from well_assets import fetch_worker
from well_assets.odata import ClientConfig
from well_assets.pages import PageStream


def _stream(server, pages: range, prefetch: int = 2) -> PageStream:
    config = ClientConfig(base_url=server.base_url, page_size=100)
    return PageStream(client_config=config, pages=[(p, f"{p:05d}") for p in pages], page_size=100,
                      source="test", prefetch=prefetch)


def test_read_ahead_pages_are_taken_and_the_worker_stays_busy(demo_server, submitted_pages):
    server = demo_server(rows=1200, bad_rows=0.0)
    stream = _stream(server, range(12), prefetch=2)
    fetch_worker.plan_read_ahead(stream.tasks()[:6])
    fetch_worker.start_read_ahead()
    for future in list(fetch_worker._read_ahead.values()):
        future.result(timeout=30)  # pages 0-5 are fetched before the run asks for them

    submitted_pages.clear()  # count only what the stream sends
    pages = iter(stream)
    first = next(pages)
    # The six pages already fetched do not count against `prefetch`: two more fetches
    # were queued at once instead of waiting until page 4 is written.
    assert first.page == 0 and submitted_pages == [6, 7]
    rest = list(pages)
    assert [item.page for item in [first, *rest]] == list(range(12))
    assert sorted(submitted_pages) == list(range(6, 12))  # nothing fetched twice
    assert all(item.validated.valid.height == 100 for item in [first, *rest])
    assert not fetch_worker._read_ahead


def test_a_stream_holds_at_most_read_ahead_pages(demo_server, submitted_pages, monkeypatch):
    monkeypatch.setattr(fetch_worker, "READ_AHEAD_PAGES", 3)
    server = demo_server(rows=1000, bad_rows=0.0)
    held = []
    for item in _stream(server, range(10), prefetch=2):
        held.append(len(submitted_pages) - (item.page + 1))  # fetched or queued beyond this page
        time.sleep(0.2)  # a slow writer: every queued fetch is done before the next pull
    # Done fetches no longer count against `prefetch` (2), but at most 3 pages are held.
    assert max(held) == 3
    assert submitted_pages == list(range(10))
