"""PageStream against the real page fetcher and the bundled service: pages come out in
order, each is requested once, at most MAX_HELD_PAGES are held, and a stream stopped early
sends nothing more."""

from __future__ import annotations

import time

from well_assets.pages import stream as pages_module
from well_assets.odata import ClientConfig
from well_assets.pages.stream import PageStream


def _stream(fetcher, server, pages: range, prefetch: int = 2) -> PageStream:
    config = ClientConfig(base_url=server.base_url, page_size=100)
    return PageStream(fetcher=fetcher, client_config=config, pages=[(p, f"{p:05d}") for p in pages],
                      page_size=100, source="test", prefetch=prefetch)


def _page_requests(server) -> list[int]:
    return [r["skip"] or 0 for r in server.state.stats.recent_requests() if r.get("endpoint") == "collection"]


def _settled_count(server, deadline: float = 30.0) -> int:
    """The number of page requests once the server has answered every request sent (the
    stream sends only while the consumer asks for the next page, so it stops growing)."""
    end = time.monotonic() + deadline
    last, stable_since = -1, time.monotonic()
    while time.monotonic() < end:
        count = len(_page_requests(server))
        if count != last:
            last, stable_since = count, time.monotonic()
        elif time.monotonic() - stable_since > 0.3:
            return count
        time.sleep(0.02)
    return last


def test_pages_come_out_in_order_and_each_is_requested_once(demo_server, page_fetcher):
    server = demo_server(rows=1200, bad_rows=0.0)
    server.state.stats.reset()
    items = list(_stream(page_fetcher, server, range(12), prefetch=3))
    assert [item.page for item in items] == list(range(12))
    assert all(item.error is None and item.validated.valid.height == 100 for item in items)
    assert sorted(_page_requests(server)) == [100 * p for p in range(12)]


def test_a_stream_holds_at_most_max_held_pages(demo_server, page_fetcher, monkeypatch):
    monkeypatch.setattr(pages_module, "MAX_HELD_PAGES", 3)
    server = demo_server(rows=1000, bad_rows=0.0)
    server.state.stats.reset()
    ahead = []
    for item in _stream(page_fetcher, server, range(10), prefetch=2):
        # A slow writer: while it holds page k, whatever was sent is answered.
        ahead.append(_settled_count(server) - (item.page + 1))
    assert max(ahead) <= 3 and max(ahead) >= 1  # worked ahead, never past the bound
    assert sorted(_page_requests(server)) == [100 * p for p in range(10)]


def test_a_stream_stopped_early_sends_no_more_requests(demo_server, page_fetcher):
    server = demo_server(rows=1000, bad_rows=0.0)
    server.state.stats.reset()
    stream = iter(_stream(page_fetcher, server, range(10), prefetch=2))
    assert [next(stream).page, next(stream).page] == [0, 1]
    stream.close()  # the consumer stops (a failed run, a terminated step)
    assert _settled_count(server) <= 2 + 2
