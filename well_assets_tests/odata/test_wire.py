"""ODataClient against a scripted loopback server: what goes on the wire, paging, retries, secrets.

These complement the demo-service tests with cases that need exact control over
responses (a link shape, a header) and observe raw request lines as received.
"""

from __future__ import annotations

import json
import logging
import time
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime

import pytest

from well_assets import __version__
from well_assets.errors import ExternalApiError, PaginationError
from well_assets.odata import ClientConfig, ODataClient, reset_throttles

try:  # works whether or not well_assets_tests is a package
    from well_assets_tests.odata_helpers import RecordingServer, free_port, json_response, make_rows, mini_odata
except ImportError:
    from odata_helpers import RecordingServer, free_port, json_response, make_rows, mini_odata

FAST = dict(backoff_base=0.01, backoff_cap=0.05, connect_timeout=2.0, read_timeout=5.0)
ROWS = make_rows(95)


@pytest.fixture(autouse=True)
def _fresh_throttles():
    reset_throttles()
    yield
    reset_throttles()


def client_for(srv: RecordingServer, **kw) -> ODataClient:
    return ODataClient(ClientConfig(**{"base_url": srv.base + "/odata", **FAST, **kw}))


def clean(rows):
    return [{k: v for k, v in r.items() if "@" not in k} for r in rows]


def test_query_on_the_wire_uses_percent_20_and_required_headers():
    with RecordingServer(mini_odata(ROWS)) as srv, client_for(
        srv, page_size=20, filter="WellCode eq 'WELL 001' and OilProduction gt 1+2", select="WellCode,OilProduction",
        run_id="run42",
    ) as client:
        client.fetch_page(3)
    (req,) = srv.requests
    assert req.raw_target == (
        "/odata/WellProduction?$skip=60&$top=21&$orderby=WellCode,ProductionDate"
        "&$filter=WellCode%20eq%20'WELL%20001'%20and%20OilProduction%20gt%201%2B2"
        "&$select=WellCode,OilProduction&$count=true"
    )
    assert "+" not in req.raw_target and " " not in req.raw_target
    h = {k.lower(): v for k, v in req.headers.items()}
    assert h["x-request-id"] == "run42-p00003-a1"
    assert h["odata-maxversion"] == "4.01"  # it reads 4.01 delta payloads
    assert h["accept"] == "application/json;odata.metadata=minimal"
    assert h["user-agent"] == f"well-assets/{__version__}"
    assert "authorization" not in h


@pytest.mark.parametrize("link_key", ["@odata.nextLink", "@nextLink"])
@pytest.mark.parametrize("count_key", ["@odata.count", "@count"])
def test_server_page_cap_is_followed_to_a_complete_exact_page(link_key, count_key):
    with RecordingServer(mini_odata(ROWS, cap=7, link_key=link_key, count_key=count_key)) as srv, client_for(
        srv, page_size=20, run_id="r"
    ) as client:
        page = client.fetch_page(2)
    assert page.records == clean(ROWS[40:60])
    assert (page.skip, page.top, page.source_count) == (40, 20, 95)
    assert page.first_key == ("WELL_005", "2023-01-01") and page.last_key == ("WELL_006", "2023-01-10")
    # one row more than the page: where the next page starts (the key after this page's last)
    assert page.next_key == tuple(ROWS[60][k] for k in ("WellCode", "ProductionDate"))
    assert page.request_ids == ["r-p00002-a1", "r-p00002-a1-h1", "r-p00002-a1-h2"]
    assert [r.headers["X-Request-ID"] for r in srv.requests] == page.request_ids
    assert srv.requests[1].raw_target == "/odata/WellProduction?$skiptoken=47-14"
    assert page.bytes > 0 and page.http_seconds > 0 and not page.from_cache


def test_last_page_short_without_link_and_beyond_the_end_empty():
    with RecordingServer(mini_odata(ROWS, cap=7)) as srv, client_for(srv, page_size=20) as client:
        assert client.fetch_page(4).records == clean(ROWS[80:95])
        assert client.fetch_page(5).records == []


def test_absolute_next_link_and_more_rows_than_needed_are_trimmed():
    base = {}

    def link(pos, top):  # the server ignores the remaining $top and sends bigger chunks
        return f"{base['url']}/odata/WellProduction?$skiptoken={pos}-50"

    with RecordingServer(mini_odata(ROWS, cap=8, next_link=link)) as srv, client_for(srv, page_size=10) as client:
        base["url"] = srv.base
        page = client.fetch_page(1)
    assert page.records == clean(ROWS[10:20])
    assert len(srv.requests) == 2


def test_short_page_with_link_is_not_the_end_even_after_empty_responses():
    """A nextLink to an empty response, then to more rows: rows must not be lost."""
    calls = {"n": 0}

    def handler(seen):
        calls["n"] += 1
        if calls["n"] == 1:
            return json_response({"value": ROWS[:3], "@odata.nextLink": "WellProduction?$skiptoken=a"})
        if calls["n"] == 2:
            return json_response({"value": [], "@odata.nextLink": "WellProduction?$skiptoken=b"})
        return json_response({"value": ROWS[3:20]})

    with RecordingServer(handler) as srv, client_for(srv, page_size=10) as client:
        page = client.fetch_page(0)
    assert page.records == clean(ROWS[:10])


def test_next_link_loop_is_a_pagination_error():
    def handler(seen):
        # Same link text each time, with parameters in another order than ours.
        return json_response({"value": ROWS[:3], "@odata.nextLink": "WellProduction?$top=3&$skip=3"})

    with RecordingServer(handler) as srv, client_for(srv, page_size=10) as client:
        with pytest.raises(PaginationError, match="loop") as info:
            client.fetch_page(0)
    assert len(srv.requests) == 2
    assert info.value.to_dict()["error"]["code"] == "PAGINATION_ERROR"
    assert info.value.to_dict()["error"]["details"]["page"] == 0


def test_endless_empty_next_links_are_capped():
    n = {"i": 0}

    def handler(seen):
        n["i"] += 1
        return json_response({"value": [], "@odata.nextLink": f"WellProduction?$skiptoken={n['i']}"})

    with RecordingServer(handler) as srv, client_for(srv, page_size=10) as client:
        with pytest.raises(PaginationError, match="hops"):
            client.fetch_page(0)
    assert 5 < len(srv.requests) <= 20


def test_foreign_next_link_is_refused_without_any_request_to_it():
    with RecordingServer() as foreign:
        def link(pos, top):
            return f"{foreign.base}/odata/WellProduction?$skiptoken={pos}-{top}"

        with RecordingServer(mini_odata(ROWS, cap=5, next_link=link)) as srv, client_for(
            srv, page_size=10, token="tok-SECRET-xyz"
        ) as client:
            with pytest.raises(PaginationError, match="another origin") as info:
                client.fetch_page(0)
        assert foreign.requests == [] and foreign.connections == 0
    assert len(srv.requests) == 1
    assert "SECRET" not in str(info.value) + json.dumps(info.value.to_dict())


def _scripted(responses):
    """A handler replaying (status, headers, body) tuples, then serving ROWS."""
    it = iter(responses)
    fallback = mini_odata(ROWS)

    def handler(seen):
        try:
            return next(it)
        except StopIteration:
            return fallback(seen)

    return handler


def _err(status, code, message="boom", headers=None):
    return json_response({"error": {"code": code, "message": message}}, status, headers)


def test_transient_failures_are_retried_and_counted():
    responses = [
        _err(503, "Unavailable"),
        (200, {"Content-Type": "application/json"}, b'{"value": [{"WellCode": "W'),  # truncated
        (200, {"Content-Type": "text/html"}, b"<html>proxy</html>"),
        _err(200, "InternalError"),  # 200 with an OData error body
        _err(502, "BadGateway"),
    ]
    with RecordingServer(_scripted(responses)) as srv, client_for(srv, page_size=10, run_id="r") as client:
        page = client.fetch_page(0)
    assert page.records == clean(ROWS[:10])
    assert page.retries == 5
    assert page.request_ids == [f"r-p00000-a{i}" for i in range(1, 7)]
    assert [r.headers["X-Request-ID"] for r in srv.requests] == page.request_ids


def test_retries_exhausted_raise_external_api_error_with_server_code():
    responses = [_err(500, "Db.Down", "database down")] * 3
    with RecordingServer(_scripted(responses)) as srv, client_for(srv, page_size=10, max_retries=2, run_id="r") as c:
        with pytest.raises(ExternalApiError) as info:
            c.fetch_page(4)
    e = info.value
    assert (e.status, e.odata_code, e.page, e.attempts, e.request_id) == (500, "Db.Down", 4, 3, "r-p00004-a3")
    assert "database down" in e.message
    assert e.to_dict()["error"]["code"] == "EXTERNAL_API_ERROR"
    assert len(srv.requests) == 3


@pytest.mark.parametrize("status", [400, 401, 403, 404])
def test_client_errors_are_not_retried(status):
    with RecordingServer(_scripted([_err(status, f"E{status}", "nope")])) as srv, client_for(srv, page_size=10) as c:
        with pytest.raises(ExternalApiError) as info:
            c.fetch_page(1)
    assert len(srv.requests) == 1
    assert (info.value.status, info.value.odata_code, info.value.page) == (status, f"E{status}", 1)
    assert info.value.request_id == "local-p00001-a1"


def test_retry_after_seconds_and_http_date_are_honoured():
    sent = []

    def handler(seen):
        if len(sent) == 0:
            sent.append(0.5)  # lenient decimal seconds
            return _err(429, "TooMany", headers={"Retry-After": "0.5"})
        if len(sent) == 1:
            # HTTP dates have 1 s resolution: now+2 s truncated leaves > 1 s to wait.
            when = datetime.now(timezone.utc) + timedelta(seconds=2)
            sent.append((when.replace(microsecond=0) - datetime.now(timezone.utc)).total_seconds())
            return _err(503, "Busy", headers={"Retry-After": format_datetime(when, usegmt=True)})
        return mini_odata(ROWS)(seen)

    with RecordingServer(handler) as srv, client_for(srv, page_size=10) as c:
        t0 = time.monotonic()
        page = c.fetch_page(0)
        elapsed = time.monotonic() - t0
    assert page.retries == 2 and page.records == clean(ROWS[:10])
    assert sent[1] > 0.9
    assert page.throttle_seconds >= sum(sent) - 0.05 and elapsed >= sum(sent) - 0.05


def test_retry_after_beyond_limit_fails_fast():
    responses = [_err(503, "Maintenance", headers={"Retry-After": "3600"})]
    with RecordingServer(_scripted(responses)) as srv, client_for(srv, page_size=10, max_retry_after=5) as c:
        t0 = time.monotonic()
        with pytest.raises(ExternalApiError) as info:
            c.fetch_page(0)
        assert time.monotonic() - t0 < 1.0
    assert (info.value.status, info.value.retry_after, info.value.odata_code) == (503, 3600.0, "Maintenance")
    assert len(srv.requests) == 1


def test_dropped_connections_are_retried():
    with RecordingServer(_scripted([None, None])) as srv, client_for(srv, page_size=10) as c:
        page = c.fetch_page(0)
    assert page.retries == 2 and page.records == clean(ROWS[:10])


def test_connection_refused_is_retried_then_reported():
    port = free_port()
    with ODataClient(ClientConfig(base_url=f"http://127.0.0.1:{port}/odata", max_retries=2, **FAST)) as c:
        with pytest.raises(ExternalApiError, match="connection error") as info:
            c.fetch_page(0)
    assert info.value.status is None and info.value.attempts == 3


def test_count_prefers_inline_count_then_falls_back():
    with RecordingServer(mini_odata(ROWS)) as srv, client_for(srv, filter="WellCode eq 'X'") as c:
        assert c.count() == 95
    assert len(srv.requests) == 1
    assert srv.requests[0].raw_target == "/odata/WellProduction?$count=true&$top=0&$filter=WellCode%20eq%20'X'"

    def no_count(seen):
        if seen.raw_target.startswith("/odata/WellProduction/$count"):
            return 200, {"Content-Type": "text/plain"}, b"95"
        return json_response({"value": []})  # ignores $count=true

    with RecordingServer(no_count) as srv, client_for(srv, filter="WellCode eq 'X'") as c:
        assert c.count() == 95
    assert [r.raw_target for r in srv.requests] == [
        "/odata/WellProduction?$count=true&$top=0&$filter=WellCode%20eq%20'X'",
        "/odata/WellProduction/$count?$filter=WellCode%20eq%20'X'",
    ]
    assert srv.requests[1].headers["Accept"] == "text/plain"

    def not_supported(seen):
        if seen.raw_target.startswith("/odata/WellProduction/$count"):
            return 200, {"Content-Type": "text/plain"}, b"95\n"
        return _err(400, "QueryOptionNotSupported")

    with RecordingServer(not_supported) as srv, client_for(srv) as c:
        assert c.count() == 95


def test_cache_hit_sends_no_request(tmp_path):
    with RecordingServer(mini_odata(ROWS, cap=4)) as srv:
        with client_for(srv, page_size=10, cache_dir=str(tmp_path)) as c:
            first = c.fetch_page(1)
        n = len(srv.requests)
        assert n == 3 and not first.from_cache
        with client_for(srv, page_size=10, cache_dir=str(tmp_path)) as c:
            second = c.fetch_page(1)
        assert len(srv.requests) == n
    assert second.from_cache and second.records == first.records and second.source_count == 95
    assert second.http_seconds == 0 and second.request_ids == []


def test_failed_responses_are_not_cached(tmp_path):
    responses = [(200, {"Content-Type": "application/json"}, b'{"value": [')]
    with RecordingServer(_scripted(responses)) as srv, client_for(srv, page_size=10, cache_dir=str(tmp_path)) as c:
        c.fetch_page(0)
    bodies = [p.read_bytes() for p in tmp_path.rglob("*.json")]
    assert len(bodies) == 1 and json.loads(bodies[0])["value"]


def test_secrets_never_in_logs_or_errors(caplog):
    token, password = "tok-SECRET-123", "pw-SECRET-456"
    rendered = []
    caplog.set_level(logging.DEBUG)
    for auth, secret in (({"token": token}, token), ({"username": "alice", "password": password}, password)):
        # A careless server echoing the credential in its error messages.
        responses = [_err(503, "Busy", f"echoing {secret}")] * 2 + [
            _err(401, "Unauthorized", f"bad credentials {secret}")]
        with RecordingServer(_scripted(responses)) as srv, client_for(srv, page_size=10, **auth) as c:
            with pytest.raises(ExternalApiError) as info:
                c.fetch_page(0)
            rendered += [str(info.value), repr(info.value), json.dumps(info.value.to_dict()), repr(c.config)]
            assert info.value.status == 401 and info.value.odata_code == "Unauthorized"
            sent = srv.requests[0].headers["Authorization"]
            assert sent.startswith("Bearer " if "token" in auth else "Basic ")
    logs = "\n".join(r.getMessage() for r in caplog.records)
    assert "request_id=local-p00000-a1" in logs and "retry 1/5" in logs  # logging did happen
    everything = logs + "\n".join(rendered)
    assert "SECRET" not in everything
    assert "YWxpY2U6cHctU0VDUkVULTQ1Ng" not in everything  # base64("alice:pw-SECRET-456")
