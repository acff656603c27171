"""Each fault knob of the demo service produces exactly the fault it names and nothing else."""

from __future__ import annotations

import email.utils
import json
import time
from urllib.parse import urljoin

import httpx
import pytest

ROWS = 3000
PAGE = 1000


@pytest.fixture
def client():
    with httpx.Client(timeout=30) as c:
        yield c


def page_url(srv, skip: int | None = None, extra: str = "") -> str:
    q = [f"$skip={skip}"] if skip is not None else []
    q += [extra] if extra else []
    return f"{srv.base_url}/WellProduction" + ("?" + "&".join(q) if q else "")


def assert_normal_page(r: httpx.Response, srv, skip: int = 0, size: int = PAGE) -> dict:
    """A correct, unmodified page of the natural order starting at `skip`."""
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["value"] == srv.state.records()[skip : skip + size]
    assert body["@odata.context"] == "$metadata#WellProduction"
    if skip + size < ROWS:
        assert body["@odata.nextLink"].startswith("WellProduction?$skiptoken=")
    else:
        assert "@odata.nextLink" not in body
    return body


def follow(client, first: str, key: str = "@odata.nextLink", limit: int = 20):
    pages, next_url = [], first
    while next_url and len(pages) < limit:
        r = client.get(next_url)
        assert r.status_code == 200, r.text
        body = r.json()
        pages.append(body)
        link = body.get(key)
        next_url = urljoin(str(r.request.url), link) if link else None
    return pages


def set_faults(client, srv, rules) -> httpx.Response:
    return client.put(f"{srv.admin_url}/faults", json=rules)


# -- status ------------------------------------------------------------------------------


def test_status_rule_fires_times_only_on_its_skip(demo_server, client):
    rule = {"kind": "status", "status": 503, "skip": [1000], "times": 2, "retry_after": "1"}
    srv = demo_server(rows=ROWS, max_page_size=1000, faults=[rule])
    assert_normal_page(client.get(page_url(srv, 0)), srv, 0)
    for _ in range(2):
        r = client.get(page_url(srv, 1000))
        assert r.status_code == 503
        assert r.headers["Retry-After"] == "1"
        assert set(r.json()) == {"error"} and r.json()["error"]["message"]
    assert_normal_page(client.get(page_url(srv, 1000)), srv, 1000)  # exhausted after 2
    assert_normal_page(client.get(page_url(srv, 2000)), srv, 2000)
    assert client.get(f"{srv.admin_url}/stats").json()["by_status"] == {"200": 3, "503": 2}


def test_status_without_retry_after_and_http_date_form(demo_server, client):
    srv = demo_server(rows=ROWS, max_page_size=1000, faults=[{"kind": "status", "status": 500, "times": 1},
                                         {"kind": "status", "status": 503, "retry_after": 2,
                                          "retry_after_format": "http-date", "times": 1}])
    r = client.get(page_url(srv))
    assert r.status_code == 500 and "Retry-After" not in r.headers
    r = client.get(page_url(srv))
    assert r.status_code == 503
    when = email.utils.parsedate_to_datetime(r.headers["Retry-After"]).timestamp()
    assert time.time() - 1 <= when <= time.time() + 3
    assert_normal_page(client.get(page_url(srv)), srv)


def test_continuation_requests_match_the_original_skip(demo_server, client):
    srv = demo_server(rows=ROWS, max_page_size=1000)
    first = client.get(page_url(srv, 0)).json()
    next_url = urljoin(page_url(srv, 0), first["@odata.nextLink"])
    assert set_faults(client, srv, [{"kind": "status", "status": 500, "skip": [0], "times": 1}]).status_code == 200
    assert client.get(next_url).status_code == 500  # continuation of the skip=0 request
    assert_normal_page(client.get(page_url(srv, 1000)), srv, 1000)  # a fresh skip=1000 is not matched
    assert_normal_page(client.get(next_url), srv, 1000)


def test_fraction_is_deterministic_for_a_seed(demo_server, client):
    def statuses(seed: int) -> list[int]:
        srv = demo_server(rows=ROWS, max_page_size=1000, faults=[{"kind": "status", "status": 500, "fraction": 0.3, "seed": seed}])
        out = []
        for i in range(40):
            r = client.get(page_url(srv, 0, "$top=5"))
            if r.status_code == 200:
                assert r.json()["value"] == srv.state.records()[:5]
            out.append(r.status_code)
        return out

    a, b, c = statuses(7), statuses(7), statuses(8)
    assert a == b
    assert a != c
    assert set(a) == {200, 500}
    assert 4 <= a.count(500) <= 22


# -- rate limit --------------------------------------------------------------------------


class FakeClock:
    """The demo service's rate-limit clock, moved by the test."""

    def __init__(self, now: float = 1_000_000.25) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize("fmt", ["seconds", "http-date"])
def test_rate_limit_answers_429_with_retry_after(demo_server, client, fmt):
    srv = demo_server(rows=ROWS, max_page_size=1000, faults=[{"kind": "rate_limit", "per_second": 3, "retry_after": 2,
                                          "retry_after_format": fmt}])
    srv.state.faults.clock = clock = FakeClock()
    rs = [client.get(page_url(srv, 0, "$top=2")) for _ in range(6)]  # six within one second
    assert [r.status_code for r in rs] == [200, 200, 200, 429, 429, 429]
    for r in rs[:3]:
        assert r.json()["value"] == srv.state.records()[:2]
    retry_after = rs[3].headers["Retry-After"]
    if fmt == "seconds":
        assert retry_after == "2"
    else:
        when = email.utils.parsedate_to_datetime(retry_after).timestamp()
        assert time.time() <= when <= time.time() + 3
    assert rs[3].json()["error"]["code"]
    clock.now += 1  # a new second: allowed again
    assert client.get(page_url(srv, 0, "$top=2")).status_code == 200


# -- latency -----------------------------------------------------------------------------


def test_latency_adds_measurable_delay_only_where_matched(demo_server, client):
    srv = demo_server(rows=ROWS, max_page_size=1000, faults=[{"kind": "latency", "seconds": 0.4, "skip": [1000]}])
    client.get(page_url(srv, 0))  # warm the connection and view
    t = time.perf_counter()
    assert_normal_page(client.get(page_url(srv, 0)), srv, 0)
    fast = time.perf_counter() - t
    t = time.perf_counter()
    assert_normal_page(client.get(page_url(srv, 1000)), srv, 1000)
    slow = time.perf_counter() - t
    assert slow >= 0.4
    assert slow - fast > 0.25  # the unmatched page is not delayed


# -- broken bodies and connections ----------------------------------------------------------


def test_truncate_gives_200_with_half_a_body(demo_server, client):
    srv = demo_server(rows=ROWS, max_page_size=1000, faults=[{"kind": "truncate", "skip": [1000], "times": 1}])
    cut = client.get(page_url(srv, 1000))
    assert cut.status_code == 200
    with pytest.raises(json.JSONDecodeError):
        json.loads(cut.content)
    full = client.get(page_url(srv, 1000))
    assert_normal_page(full, srv, 1000)
    assert cut.content == full.content[: len(full.content) // 2]
    assert int(cut.headers["content-length"]) == len(cut.content)
    assert_normal_page(client.get(page_url(srv, 0)), srv, 0)


def test_error_body_gives_200_with_odata_error(demo_server, client):
    srv = demo_server(rows=ROWS, max_page_size=1000, faults=[{"kind": "error_body", "skip": [2000], "times": 1}])
    r = client.get(page_url(srv, 2000))
    assert r.status_code == 200
    assert set(r.json()) == {"error"} and r.json()["error"]["code"] and r.json()["error"]["message"]
    assert_normal_page(client.get(page_url(srv, 2000)), srv, 2000)


def test_drop_closes_the_connection_without_a_response(demo_server, client):
    srv = demo_server(rows=ROWS, max_page_size=1000, faults=[{"kind": "drop", "skip": [1000], "times": 1}])
    assert_normal_page(client.get(page_url(srv, 0)), srv, 0)
    with pytest.raises((httpx.RemoteProtocolError, httpx.ConnectError, httpx.ReadError)):
        client.get(page_url(srv, 1000))
    assert_normal_page(client.get(page_url(srv, 1000)), srv, 1000)
    assert client.get(f"{srv.admin_url}/stats").json()["by_status"] == {"200": 2, "dropped": 1}


# -- next links ----------------------------------------------------------------------------


def test_loop_next_link_points_back_to_the_same_page(demo_server, client):
    srv = demo_server(rows=ROWS, max_page_size=1000, faults=[{"kind": "loop_next_link"}])
    first = client.get(page_url(srv, 0)).json()
    assert first["value"] == srv.state.records()[:PAGE]
    again = client.get(urljoin(page_url(srv, 0), first["@odata.nextLink"])).json()
    assert again["value"] == first["value"]
    third = client.get(urljoin(page_url(srv, 0), again["@odata.nextLink"])).json()
    assert third["value"] == first["value"] and third["@odata.nextLink"] == again["@odata.nextLink"]
    last = client.get(page_url(srv, 2000)).json()  # no nextLink where there is no next page
    assert "@odata.nextLink" not in last and last["value"] == srv.state.records()[2000:]


def test_foreign_next_link_points_to_another_host(demo_server, client):
    srv = demo_server(rows=ROWS, max_page_size=1000, faults=[{"kind": "foreign_next_link", "host": "http://127.0.0.2:9"}])
    body = client.get(page_url(srv, 0)).json()
    assert body["value"] == srv.state.records()[:PAGE]
    link = body["@odata.nextLink"]
    assert link.startswith("http://127.0.0.2:9/odata/WellProduction?$skiptoken=")
    # the token itself is valid: served on the real host it continues correctly
    token = link.split("$skiptoken=", 1)[1]
    assert client.get(page_url(srv, extra=f"$skiptoken={token}")).json()["value"] == srv.state.records()[PAGE : 2 * PAGE]


def test_trailing_empty_page(demo_server, client):
    srv = demo_server(rows=ROWS, max_page_size=1000, faults=[{"kind": "trailing_empty_page"}])
    pages = follow(client, page_url(srv))
    assert [len(p["value"]) for p in pages] == [1000, 1000, 1000, 0]
    assert "@odata.nextLink" not in pages[-1]
    pages = follow(client, page_url(srv, 0, "$top=1500"))
    assert [len(p["value"]) for p in pages] == [1000, 500, 0]
    set_faults(client, srv, [])
    assert [len(p["value"]) for p in follow(client, page_url(srv))] == [1000, 1000, 1000]


# -- payload shape ---------------------------------------------------------------------------


def test_rename_makes_a_malformed_page_only_where_matched(demo_server, client):
    srv = demo_server(rows=ROWS, max_page_size=1000, faults=[{"kind": "rename", "from": "OilProduction", "to": "OilProd", "skip": [1000]}])
    body = client.get(page_url(srv, 1000)).json()
    expected = srv.state.records()[1000:2000]
    assert [list(r) for r in body["value"]][0] == ["WellCode", "ProductionDate", "OilProd", "GasProduction", "WaterProduction"]
    assert [r["OilProd"] for r in body["value"]] == [r["OilProduction"] for r in expected]
    assert all("OilProduction" not in r for r in body["value"])
    assert_normal_page(client.get(page_url(srv, 0)), srv, 0)


def test_decimals_as_strings(demo_server, client):
    srv = demo_server(rows=ROWS, max_page_size=1000, faults=[{"kind": "decimals_as_strings"}])
    body = client.get(page_url(srv, 0, "$top=50")).json()
    expected = srv.state.records()[:50]
    for got, exp in zip(body["value"], expected, strict=True):
        assert got["WellCode"] == exp["WellCode"] and got["ProductionDate"] == exp["ProductionDate"]
        for c in ("OilProduction", "GasProduction", "WaterProduction"):
            assert isinstance(got[c], str) and float(got[c]) == exp[c]
    assert body["@odata.context"] == "$metadata#WellProduction"


def test_annotations_401_drop_the_odata_prefix(demo_server, client):
    srv = demo_server(rows=ROWS, max_page_size=1000, faults=[{"kind": "annotations_401"}])
    body = client.get(page_url(srv, 0, "$count=true")).json()
    assert set(body) == {"@context", "@count", "value", "@nextLink"}
    assert body["@count"] == ROWS and body["value"] == srv.state.records()[:PAGE]
    pages = follow(client, page_url(srv), key="@nextLink")
    assert sum(len(p["value"]) for p in pages) == ROWS
    assert not any(k.startswith("@odata.") for p in pages for k in p)


# -- configuration ---------------------------------------------------------------------------


def test_runtime_fault_admin_replace_get_validate_and_reset(demo_server, client):
    srv = demo_server(rows=ROWS, max_page_size=1000)
    rules = [{"kind": "status", "status": 502, "times": 1}, {"kind": "latency", "seconds": 0.01}]
    assert set_faults(client, srv, rules).json() == rules
    assert client.get(f"{srv.admin_url}/faults").json() == rules
    assert client.get(page_url(srv)).status_code == 502
    for bad in ([{"kind": "nope"}], [{"kind": "status"}], [{"kind": "status", "status": 503, "skp": [1]}],
                {"kind": "drop"}, [{"kind": "rename", "from": "Oil", "to": "X"}], [{"kind": "drop", "fraction": 2}]):
        r = set_faults(client, srv, bad)
        assert r.status_code == 400 and r.json()["error"]["message"], bad
    assert client.get(f"{srv.admin_url}/faults").json() == rules  # unchanged by invalid updates
    assert client.post(f"{srv.admin_url}/reset").status_code == 200
    assert client.get(f"{srv.admin_url}/faults").json() == []
    assert_normal_page(client.get(page_url(srv)), srv)


def test_no_matcher_applies_to_every_odata_request_but_not_admin(demo_server, client):
    srv = demo_server(rows=ROWS, max_page_size=1000, faults=[{"kind": "status", "status": 503}])
    for path in ("", "/", "/$metadata", "/WellProduction", "/WellProduction/$count"):
        assert client.get(srv.base_url + path).status_code == 503, path
    assert client.get(f"{srv.admin_url}/stats").status_code == 200
    skip_only = demo_server(rows=ROWS, max_page_size=1000, faults=[{"kind": "status", "status": 503, "skip": [0]}])
    assert client.get(skip_only.base_url + "/$metadata").status_code == 200
    assert client.get(skip_only.base_url + "/WellProduction/$count").status_code == 200
    assert client.get(skip_only.base_url + "/WellProduction").status_code == 503


def test_invalid_fault_config_is_rejected_at_start():
    from well_assets.demo_service import DemoServer, DemoServiceConfig
    from well_assets.errors import ConfigError

    with pytest.raises((ConfigError, ValueError), match="per_second"):
        DemoServer(DemoServiceConfig(rows=10, faults=[{"kind": "rate_limit"}]))
