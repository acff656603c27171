"""ODataClient over real loopback HTTP against the bundled demo service, one test per fault knob.

Every test asserts the exact rows returned (against the server's own data fetched
without faults) and the retries/waits the client reports.
"""

from __future__ import annotations

import json
import logging
import re
import time

import pytest

from well_assets.errors import ExternalApiError, PaginationError
from well_assets.odata import ClientConfig, ODataClient, reset_throttles

try:  # works whether or not well_assets_tests is a package
    from well_assets_tests.odata_helpers import RecordingServer, demo, set_faults, stats
except ImportError:
    from odata_helpers import RecordingServer, demo, set_faults, stats

import httpx

ROWS = 300
DEMO = dict(rows=ROWS, seed=7, days_per_well=50)  # 6 wells x 50 days
FAST = dict(backoff_base=0.01, backoff_cap=0.05, connect_timeout=2.0, read_timeout=10.0)
PAGE = 40  # 300 rows -> pages 0..6 full, page 7 has 20 rows, page 8 is empty


@pytest.fixture(scope="module")
def big():
    """The reference: generous server page cap, no faults."""
    with demo(max_page_size=1000, **DEMO) as srv:
        yield srv


@pytest.fixture(scope="module")
def capped():
    """Same data, server page cap (7) far below the client page size: server-driven paging."""
    with demo(max_page_size=7, **DEMO) as srv:
        yield srv


@pytest.fixture(scope="module")
def reference(big):
    with ODataClient(ClientConfig(base_url=big.base_url, page_size=5000)) as c:
        rows = c.fetch_page(0).records
    assert len(rows) == ROWS
    return rows


@pytest.fixture(autouse=True)
def _clean(request):
    reset_throttles()  # adaptive state from one test must not slow the next
    for name in ("big", "capped"):
        if name in request.fixturenames:
            set_faults(request.getfixturevalue(name), [])
    yield
    reset_throttles()


def client(srv, **kw) -> ODataClient:
    return ODataClient(ClientConfig(**{"base_url": srv.base_url, "page_size": PAGE, **FAST, **kw}))


def server_requests(srv) -> list[dict]:
    return httpx.get(f"{srv.admin_url}/requests", timeout=10).json()


def fetch_all(c: ODataClient, pages: int = 8) -> list[dict]:
    out: list[dict] = []
    for k in range(pages):
        out += c.fetch_page(k).records
    return out


# -- server-driven paging -----------------------------------------------------------


def test_page_cap_below_page_size_gives_complete_exact_pages(capped, reference):
    with client(capped, run_id="cap") as c:
        pages = [c.fetch_page(k) for k in range(9)]
    assert [len(p.records) for p in pages] == [40] * 7 + [20, 0]
    assert [r for p in pages for r in p.records] == reference
    assert pages[1].first_key == (reference[40]["WellCode"], reference[40]["ProductionDate"])
    assert pages[1].last_key == (reference[79]["WellCode"], reference[79]["ProductionDate"])
    assert all(p.source_count == ROWS for p in pages)
    # 40 rows at 7 per response: 6 responses per full page, all traced by hop.
    assert pages[0].request_ids == ["cap-p00000-a1"] + [f"cap-p00000-a1-h{h}" for h in range(1, 6)]
    assert pages[0].retries == 0


def test_trailing_empty_page_is_followed_and_nothing_lost(big, reference):
    set_faults(big, [{"kind": "trailing_empty_page"}])
    with client(big) as c:
        last = c.fetch_page(7)
        beyond = c.fetch_page(8)
        full = c.fetch_page(2)
    assert last.records == reference[280:300] and len(last.request_ids) == 2  # short page + empty page
    assert beyond.records == []
    assert full.records == reference[80:120] and len(full.request_ids) == 1  # full: link not needed


def test_annotations_401_spelling(capped, reference):
    set_faults(capped, [{"kind": "annotations_401"}])
    with client(capped) as c:
        page = c.fetch_page(3)
    assert page.records == reference[120:160]
    assert page.source_count == ROWS and len(page.request_ids) == 6
    assert not any(k.startswith("@") for r in page.records for k in r)


def test_decimals_as_strings_are_passed_through_unchanged(big, reference):
    set_faults(big, [{"kind": "decimals_as_strings"}])
    with client(big) as c:
        page = c.fetch_page(1)
    volumes = ("OilProduction", "GasProduction", "WaterProduction")
    strings = 0
    for got, ref in zip(page.records, reference[40:80], strict=True):
        assert {k: got[k] for k in ("WellCode", "ProductionDate")} == {
            k: ref[k] for k in ("WellCode", "ProductionDate")}
        for v in volumes:
            if isinstance(ref[v], float):
                assert isinstance(got[v], str) and float(got[v]) == pytest.approx(ref[v], abs=5e-4)
                strings += 1
            else:
                assert got[v] == ref[v]
    assert strings > 0


# -- retries -------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["seconds", "http-date"])
def test_429_retry_after_is_honoured_and_slows_the_throttle(big, reference, fmt, caplog):
    caplog.set_level(logging.WARNING, logger="well_assets.odata")
    set_faults(big, [{"kind": "rate_limit", "per_second": 0, "times": 1, "retry_after": 1 if fmt == "seconds" else 2,
                      "retry_after_format": fmt}])
    with client(big) as c:
        t0 = time.monotonic()
        page = c.fetch_page(2)
        elapsed = time.monotonic() - t0
        assert page.records == reference[80:120] and page.retries == 1
        asked = [float(m) for m in re.findall(r"retry_after=([0-9.]+)s", caplog.text)]
        assert len(asked) == 1
        # seconds: exactly 1; the HTTP date (now + 2 s, one-second resolution) leaves about 1..2 s.
        assert asked[0] == 1.0 if fmt == "seconds" else 0.9 < asked[0] <= 2.0
        # (the log rounds to ms, hence the 1 ms tolerance)
        assert page.throttle_seconds >= asked[0] - 1e-3 and elapsed >= asked[0] - 1e-3
        # Adaptive: the 429 raised the shared interval, so the next requests are spaced.
        assert c.throttle.interval > 0 and c.throttle.slowdowns >= 1
        nxt = [c.fetch_page(k) for k in (3, 4)]
        assert sum(p.throttle_seconds for p in nxt) > 0.02
        assert [r for p in nxt for r in p.records] == reference[120:200]


@pytest.mark.parametrize("status", [500, 502, 503, 504])
def test_transient_5xx_is_retried(big, reference, status):
    set_faults(big, [{"kind": "status", "status": status, "skip": [5 * PAGE], "times": 2}])
    with client(big, run_id=f"t{status}") as c:
        page = c.fetch_page(5)
    assert page.records == reference[200:240]
    assert page.retries == 2 and page.throttle_seconds > 0
    seen = [r for r in server_requests(big) if r["request_id"].startswith(f"t{status}-")]
    assert [(r["request_id"], r["status"]) for r in seen] == [
        (f"t{status}-p00005-a1", status), (f"t{status}-p00005-a2", status), (f"t{status}-p00005-a3", 200)]


@pytest.mark.parametrize("kind", ["truncate", "error_body", "drop"])
def test_broken_200_responses_and_drops_are_retried(capped, reference, kind):
    # On the capped server the fault also hits continuation requests of the same page.
    set_faults(capped, [{"kind": kind, "skip": [2 * PAGE], "times": 2}])
    with client(capped) as c:
        page = c.fetch_page(2)
    assert page.records == reference[80:120]
    assert page.retries == 2
    assert stats(capped)["faults"][0]["fired"] == 2


def test_retries_exhausted_raise_external_api_error(big):
    set_faults(big, [{"kind": "status", "status": 503, "code": "ServiceBusy", "message": "busy"}])
    with client(big, max_retries=2, run_id="ex") as c:
        with pytest.raises(ExternalApiError) as info:
            c.fetch_page(1)
    e = info.value
    assert (e.status, e.odata_code, e.page, e.attempts, e.request_id) == (503, "ServiceBusy", 1, 3, "ex-p00001-a3")
    assert e.to_dict()["error"]["details"]["odata_code"] == "ServiceBusy"


def test_retry_after_beyond_limit_fails_fast(big):
    set_faults(big, [{"kind": "status", "status": 503, "retry_after": 600}])
    with client(big, max_retry_after=30) as c:
        t0 = time.monotonic()
        with pytest.raises(ExternalApiError) as info:
            c.fetch_page(0)
        elapsed = time.monotonic() - t0
    assert elapsed < 2.0  # far below the 600 s asked for
    assert (info.value.status, info.value.retry_after, info.value.attempts) == (503, 600.0, 1)
    assert "max_retry_after" in info.value.message


# -- paging protocol violations ------------------------------------------------------


def test_looping_next_link_is_a_pagination_error(capped):
    set_faults(capped, [{"kind": "loop_next_link"}])
    with client(capped, run_id="loop") as c:
        with pytest.raises(PaginationError, match="loop") as info:
            c.fetch_page(1)
    assert info.value.to_dict()["error"]["code"] == "PAGINATION_ERROR"
    # The first request, then the link once; the same link again is refused, not requested.
    assert [r["request_id"] for r in server_requests(capped) if r["request_id"].startswith("loop-")] == [
        "loop-p00001-a1", "loop-p00001-a1-h1"]


def test_foreign_host_next_link_is_refused_without_contact(capped):
    with RecordingServer() as foreign:
        set_faults(capped, [{"kind": "foreign_next_link", "host": foreign.base}])
        with client(capped, token=None) as c:
            with pytest.raises(PaginationError, match="another origin") as info:
                c.fetch_page(0)
        assert foreign.connections == 0 and foreign.requests == []
    assert foreign.base.split("//")[1] in str(info.value)


# -- auth, secrets ---------------------------------------------------------------------


def test_wrong_token_is_401_not_retried_and_secret_never_leaks(caplog):
    caplog.set_level(logging.DEBUG)
    good, bad = "good-SECRET-token", "wrong-SECRET-token"
    with demo(token=good, **DEMO) as srv:
        with client(srv, token=good) as c:
            assert len(c.fetch_page(0).records) == PAGE
        set_faults(srv, [{"kind": "status", "status": 503, "times": 1}])  # exercise the retry log too
        with client(srv, token=good) as c:
            assert c.fetch_page(1).retries == 1
        with client(srv, token=bad, run_id="auth") as c:
            with pytest.raises(ExternalApiError) as info:
                c.fetch_page(2)
        e = info.value
        assert (e.status, e.odata_code, e.request_id, e.attempts) == (401, "Unauthorized", "auth-p00002-a1", 1)
        assert [r["status"] for r in server_requests(srv) if r["request_id"].startswith("auth-")] == [401]
    assert "request_id=" in caplog.text and "retry 1/" in caplog.text
    everything = caplog.text + str(e) + repr(e) + json.dumps(e.to_dict())
    assert "SECRET" not in everything


# -- count, cache, throttle, traceability, encoding ------------------------------------


def test_count_inline_and_fallback(big):
    with client(big, run_id="cnt") as c:
        assert c.count() == ROWS
        set_faults(big, [{"kind": "status", "status": 501, "skip": [0], "times": 1}])
        assert c.count() == ROWS
    reqs = [r for r in server_requests(big) if r["request_id"].startswith("cnt-")]
    assert [(r["path"], r["query"], r["status"]) for r in reqs] == [
        ("/odata/WellProduction", "$count=true&$top=0", 200),
        ("/odata/WellProduction", "$count=true&$top=0", 501),
        ("/odata/WellProduction/$count", "", 200),
    ]


def test_count_with_filter_uses_percent_20(big, reference):
    with client(big, filter="WellCode eq 'WELL_002'", run_id="flt") as c:
        n = c.count()
        page = c.fetch_page(0)
    expected = [r for r in reference if r["WellCode"] == "WELL_002"]
    assert n == len(expected) == 50
    assert page.records == expected[:PAGE]
    queries = [r["query"] for r in server_requests(big) if r["request_id"].startswith("flt-")]
    assert queries[1] == ("$skip=0&$top=41&$orderby=WellCode,ProductionDate"
                          "&$filter=WellCode%20eq%20'WELL_002'&$count=true")
    assert all("+" not in q and " " not in q for q in queries)


def test_cache_hit_sends_no_request(capped, reference, tmp_path):
    with client(capped, cache_dir=str(tmp_path)) as c:
        first = c.fetch_page(4)
    before = stats(capped)["requests"]
    with client(capped, cache_dir=str(tmp_path)) as c:
        again = c.fetch_page(4)
    assert stats(capped)["requests"] == before
    assert again.from_cache and not first.from_cache
    assert again.records == first.records == reference[160:200]
    assert again.http_seconds == 0 and again.request_ids == [] and again.source_count == ROWS


def test_min_interval_spaces_requests(big):
    with client(big, min_interval=0.1, adaptive_throttle=False) as c:
        t0 = time.monotonic()
        pages = [c.fetch_page(k) for k in range(5)]
        elapsed = time.monotonic() - t0
    assert elapsed >= 0.4
    assert pages[0].throttle_seconds < 0.05 and all(p.throttle_seconds > 0 for p in pages[1:])
    # Each gap between request starts (>= 0.1 s) is the previous request's time plus our wait.
    assert sum(p.throttle_seconds for p in pages) + sum(p.http_seconds for p in pages[:-1]) >= 0.4 * 0.95


def test_request_ids_seen_and_echoed_by_the_server(capped, caplog):
    caplog.set_level(logging.DEBUG, logger="well_assets.odata")
    with client(capped, run_id="dagster-run-1") as c:
        page = c.fetch_page(12)  # beyond the data: one empty response
        page2 = c.fetch_page(6)
    ids = page.request_ids + page2.request_ids
    pattern = re.compile(r"dagster-run-1-p\d{5}-a\d+(-h\d+)?")
    assert ids[0] == "dagster-run-1-p00012-a1" and all(pattern.fullmatch(i) for i in ids)
    seen = [r["request_id"] for r in server_requests(capped) if r["request_id"].startswith("dagster-run-1")]
    assert seen == ids
    # The server echoes X-Request-ID; the client logs an id mismatch, so there must be none.
    assert "server echoed" not in caplog.text and caplog.text.count("request_id=dagster-run-1") == len(ids)
    r = httpx.get(capped.base_url + "/WellProduction?$top=1", headers={"X-Request-ID": "probe-1"})
    assert r.headers["X-Request-ID"] == "probe-1"


def test_read_timeout_from_latency_is_retried(big, reference):
    set_faults(big, [{"kind": "latency", "seconds": 1.0, "skip": [3 * PAGE], "times": 1}])
    with client(big, read_timeout=0.3, run_id="slow") as c:
        t0 = time.monotonic()
        page = c.fetch_page(3)
        elapsed = time.monotonic() - t0
    assert page.records == reference[120:160] and page.retries == 1
    assert 0.3 <= elapsed < 1.0  # gave up on the slow response instead of waiting it out
    assert page.request_ids == ["slow-p00003-a1", "slow-p00003-a2"]


def test_renamed_property_is_passed_through_for_the_schema_to_reject(big, reference):
    # The client does not validate shape (schema.validate_page does); it must not drop or fix data.
    set_faults(big, [{"kind": "rename", "from": "OilProduction", "to": "OilProd", "skip": [0]}])
    with client(big) as c:
        page = c.fetch_page(0)
    assert page.records == [{("OilProd" if k == "OilProduction" else k): v for k, v in r.items()}
                            for r in reference[:PAGE]]


def test_seeded_fraction_of_500s_with_concurrent_fetches(capped, reference):
    """One client shared by threads (like the prefetching page stream) under random 5xx."""
    from concurrent.futures import ThreadPoolExecutor

    set_faults(capped, [{"kind": "status", "status": 500, "fraction": 0.2, "seed": 3}])
    with client(capped, max_retries=8) as c, ThreadPoolExecutor(4) as pool:
        pages = list(pool.map(c.fetch_page, range(8)))
    assert [r for p in pages for r in p.records] == reference
    assert sum(p.retries for p in pages) == stats(capped)["faults"][0]["fired"] > 0


# -- key ranges ------------------------------------------------------------------------


def test_key_ranges_partition_the_source_with_null_keys_first():
    """The ranges between consecutive page starts count every record exactly once, records
    with a null or unreadable key part included (OData orders null first): the sensor's
    group counts and its page counts agree."""
    with demo(rows=600, seed=3, days_per_well=50, bad_rows=0.05) as srv:  # every kind of bad record
        with client(srv, page_size=50, key=(("WellCode", "Edm.String"), ("ProductionDate", "Edm.Date"))) as c:
            total = c.count()
            bounds = [None]
            for k in range(1, 12):
                first = c.fetch_page(k).records[0]
                if first["WellCode"] is not None:
                    bounds.append((first["WellCode"], first["ProductionDate"]))
            bounds.append(None)
            per_range = [c.count_range(lo, hi) for lo, hi in zip(bounds, bounds[1:])]
            assert c.count_ranges(list(zip(bounds, bounds[1:]))) == per_range  # concurrently, in order
            assert sum(per_range) == total == c.count_range(None, None)
            assert c.count_range(bounds[0], bounds[4]) == sum(per_range[:4])
            # the records a range fetch returns are the ones its count counts
            assert len(c.fetch_range(2, bounds[2], bounds[3]).records) == per_range[2]
