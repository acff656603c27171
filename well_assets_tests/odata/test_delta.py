"""ODataClient change tracking: start_tracking() and read_delta() against the bundled demo
service over loopback HTTP, plus the key-predicate parser and delta-payload spellings.

Expected deltas come from the service's own data before and after changes made through
its admin API.
"""

from __future__ import annotations

import json
import logging
from urllib.parse import urljoin

import httpx
import pytest

from well_assets.errors import ChangeTrackingUnavailable, DeltaLinkExpired, PaginationError
from well_assets.odata import Baseline, ClientConfig, Delta, ODataClient, Removed, reset_throttles
from well_assets.odata.delta import parse_delta_page, parse_key_predicate
from well_assets.odata.responses import Malformed

try:  # works whether or not well_assets_tests is a package
    from well_assets_tests.odata_helpers import RecordingServer, demo, json_response, set_faults
except ImportError:
    from odata_helpers import RecordingServer, demo, json_response, set_faults

ROWS = 200
DEMO = dict(rows=ROWS, seed=5, days_per_well=50)  # 4 wells x 50 days
FAST = dict(backoff_base=0.01, backoff_cap=0.05, connect_timeout=2.0, read_timeout=10.0)
KEY = (("WellCode", "Edm.String"), ("ProductionDate", "Edm.Date"))


@pytest.fixture(autouse=True)
def _fresh_throttles():
    reset_throttles()
    yield
    reset_throttles()


def client(srv, **kw) -> ODataClient:
    return ODataClient(ClientConfig(**{"base_url": srv.base_url, "page_size": 3, **FAST, **kw}))


def admin(srv, method: str, path: str, body=None) -> dict:
    r = httpx.request(method, f"{srv.admin_url}/{path}", json=body, timeout=30)
    r.raise_for_status()
    return r.json()


def server_requests(srv) -> list[dict]:
    return httpx.get(f"{srv.admin_url}/requests", timeout=10).json()


def key(rec: dict) -> tuple:
    return rec["WellCode"], rec["ProductionDate"]


def token_of(link: str) -> str:
    return link.split("$deltatoken=", 1)[1]


# -- baseline and deltas ---------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["4.01", "4.0"])
def test_baseline_then_inserts_updates_deletes_come_back_exactly(fmt):
    with demo(max_page_size=2, delta_format=fmt, **DEMO) as srv, client(srv, run_id="dl") as c:
        before = srv.state.records()
        base = c.start_tracking()
        assert base.count == ROWS and base.delta_link.startswith(srv.base_url + "/WellProduction?")
        updated = {**before[30], "OilProduction": 1.25, "GasProduction": None}
        inserted = {"WellCode": "WELL_001", "ProductionDate": "2022-12-31", "OilProduction": 5.0,
                    "GasProduction": 6.0, "WaterProduction": 7.0}
        quoted = {"WellCode": "O'Brien 1", "ProductionDate": "2023-01-01", "OilProduction": 1.0}
        admin(srv, "POST", "rows", [updated, inserted, quoted])
        admin(srv, "DELETE", "rows", [{"WellCode": k[0], "ProductionDate": k[1]}
                                      for k in (key(before[0]), key(before[150]), key(quoted))])
        delta = c.read_delta(base.delta_link)
        assert delta.changed == [inserted, updated]
        assert delta.removed == [Removed(key(quoted), "deleted"), Removed(key(before[0]), "deleted"),
                                 Removed(key(before[150]), "deleted")]  # in key order: 'O' < 'W'
        assert delta.requests == 3  # 5 entries, 2 per response
        ids = [r["request_id"] for r in server_requests(srv) if r["endpoint"] == "delta"]
        assert ids == ["dl-delta-a1", "dl-delta-a1-h1", "dl-delta-a1-h2"]
        assert delta.delta_link != base.delta_link
        nothing = c.read_delta(delta.delta_link)
        assert (nothing.changed, nothing.removed, nothing.requests) == ([], [], 1)


def test_entity_leaving_the_filter_is_removed_with_reason_changed():
    with demo(**DEMO) as srv, client(srv, filter="OilProduction ge 0") as c:
        rec = srv.state.records()[42]
        base = c.start_tracking()
        admin(srv, "POST", "rows", [{**rec, "OilProduction": -3.0}])
        delta = c.read_delta(base.delta_link)
    assert (delta.changed, delta.removed) == ([], [Removed(key(rec), "changed")])


def test_delta_is_never_served_from_the_response_cache(tmp_path):
    with demo(**DEMO) as srv, client(srv, cache_dir=str(tmp_path)) as c:
        records = srv.state.records()
        base = c.start_tracking()
        admin(srv, "POST", "rows", [{**records[1], "OilProduction": 1.0}])
        assert [r["OilProduction"] for r in c.read_delta(base.delta_link).changed] == [1.0]
        admin(srv, "POST", "rows", [{**records[1], "OilProduction": 2.0}])
        assert [r["OilProduction"] for r in c.read_delta(base.delta_link).changed] == [2.0]


def test_bearer_token_goes_in_the_header_never_into_the_link():
    with demo(token="tok-SECRET", **DEMO) as srv, client(srv, token="tok-SECRET") as c:
        base = c.start_tracking()
        admin(srv, "POST", "rows", [srv.state.records()[3]])
        assert len(c.read_delta(base.delta_link).changed) == 1
        assert all("SECRET" not in r["query"] and r["status"] == 200 for r in server_requests(srv))
        assert "SECRET" not in base.delta_link


def test_annotations_401_spelling_is_read(monkeypatch):
    with demo(max_page_size=1, **DEMO) as srv, client(srv) as c:
        records = srv.state.records()
        base = c.start_tracking()
        admin(srv, "POST", "rows", [{**r, "WaterProduction": 0.0} for r in records[:3]])
        set_faults(srv, [{"kind": "annotations_401"}])  # @nextLink, @deltaLink, @context
        delta = c.read_delta(base.delta_link)
        assert delta.changed == [{**r, "WaterProduction": 0.0} for r in records[:3]]
        assert delta.requests == 3
        set_faults(srv, [])
        assert c.read_delta(delta.delta_link).changed == []


# -- auto / on / off ----------------------------------------------------------------------


@pytest.mark.parametrize("mode, service_tracks, has_link", [
    ("auto", True, True), ("auto", False, False), ("on", True, True), ("off", True, False), ("off", False, False),
])
def test_tracking_modes_against_the_demo_service(mode, service_tracks, has_link):
    with demo(track_changes=service_tracks, **DEMO) as srv, client(srv, change_tracking=mode) as c:
        base = c.start_tracking()
        assert [(r["query"], r["status"]) for r in server_requests(srv)] == [("$count=true&$top=0", 200)]
    assert base.count == ROWS and (base.delta_link is not None) == has_link


def test_on_without_support_is_a_clear_error_naming_the_setting():
    with demo(track_changes=False, **DEMO) as srv, client(srv, change_tracking="on") as c:
        with pytest.raises(ChangeTrackingUnavailable) as info:
            c.start_tracking()
    message = str(info.value)
    assert "ODATA_CHANGE_TRACKING=on" in message and "Preference-Applied" in message
    assert info.value.to_dict()["error"]["code"] == "EXTERNAL_API_ERROR"


def _answer(preference_applied: str | None, link: str | None):
    def handler(seen):
        body = {"@odata.count": 7, "value": [], **({"@odata.deltaLink": link} if link else {})}
        return json_response(body, headers={"Preference-Applied": preference_applied} if preference_applied else None)
    return handler


@pytest.mark.parametrize("mode, applied, link, expected", [
    ("auto", "odata.track-changes", "WellProduction?$deltatoken=abc", "{base}/odata/WellProduction?$deltatoken=abc"),
    ("auto", "odata.maxpagesize=5, Track-Changes", "{base}/odata/WellProduction?!deltatoken=x", "{base}/odata/WellProduction?!deltatoken=x"),
    ("auto", None, "WellProduction?$deltatoken=abc", None),  # a link without Preference-Applied is not trusted
    ("auto", "odata.track-changes", None, None),
    ("off", "odata.track-changes", "WellProduction?$deltatoken=abc", None),
    ("on", "odata.track-changes", None, ChangeTrackingUnavailable),
    ("on", None, "WellProduction?$deltatoken=abc", ChangeTrackingUnavailable),
])
def test_preference_applied_and_link_both_decide(mode, applied, link, expected):
    with RecordingServer() as srv:
        srv.handler = _answer(applied, link.format(base=srv.base) if link else None)
        with ODataClient(ClientConfig(base_url=srv.base + "/odata", change_tracking=mode, **FAST)) as c:
            if expected is ChangeTrackingUnavailable:
                with pytest.raises(ChangeTrackingUnavailable) as info:
                    c.start_tracking()
                assert "deltatoken" not in str(info.value)
            else:
                base = c.start_tracking()
                assert base == Baseline(7, expected.format(base=srv.base) if expected else None)
        prefer = srv.requests[0].headers.get("Prefer")
        assert prefer == (None if mode == "off" else "odata.track-changes")


def test_count_is_unchanged_and_sends_no_preference():
    with RecordingServer() as srv:
        srv.handler = _answer("odata.track-changes", "WellProduction?$deltatoken=abc")
        with ODataClient(ClientConfig(base_url=srv.base + "/odata", **FAST)) as c:
            assert c.count() == 7
        assert "Prefer" not in srv.requests[0].headers


# -- expiry, errors, secrets ----------------------------------------------------------------


def test_410_after_expire_is_delta_link_expired_not_retried_and_the_link_never_leaks(caplog):
    with demo(max_page_size=2, **DEMO) as srv, client(srv, run_id="gone") as c:
        admin(srv, "POST", "rows", srv.state.records()[:1])
        caplog.set_level(logging.DEBUG)  # httpx included: it logs request URLs at INFO
        base = c.start_tracking()
        delta = c.read_delta(base.delta_link)  # nothing since the baseline
        admin(srv, "POST", "rows", srv.state.records()[:5])
        with caplog.at_level(logging.WARNING):  # the test's own request, not the client's
            first = httpx.get(base.delta_link).json()
        next_link = urljoin(base.delta_link, first["@odata.nextLink"])
        set_faults(srv, [{"kind": "status", "status": 503, "times": 1}])  # a retry gets logged too
        admin(srv, "POST", "delta/expire")
        errors = []
        for link in (base.delta_link, next_link):
            with pytest.raises(DeltaLinkExpired) as info:
                c.read_delta(link)
            errors.append(info.value)
        statuses = [(r["request_id"], r["status"]) for r in server_requests(srv) if r["endpoint"] == "delta"]
    assert statuses[-3:] == [("gone-delta-a1", 503), ("gone-delta-a2", 410), ("gone-delta-a1", 410)]
    assert errors[0].details["status"] == 410 and errors[0].to_dict()["error"]["code"] == "EXTERNAL_API_ERROR"
    assert delta.changed == [] and "retry 1/" in caplog.text
    assert "HTTP Request: GET" in caplog.text and "$deltatoken=***" in caplog.text
    everything = (caplog.text + "".join(str(e) + repr(e) + json.dumps(e.to_dict()) for e in errors)
                  + repr(base) + repr(delta))
    for link in (base.delta_link, next_link, delta.delta_link):
        assert token_of(link) not in everything


def test_a_503_on_a_delta_page_is_retried():
    with demo(max_page_size=2, **DEMO) as srv, client(srv, run_id="r") as c:
        records = srv.state.records()
        base = c.start_tracking()
        admin(srv, "POST", "rows", [{**r, "OilProduction": 9.0} for r in records[:4]])
        set_faults(srv, [{"kind": "status", "status": 503, "times": 1}])
        c.read_delta(base.delta_link)  # the first page fails once
        admin(srv, "POST", "rows", [{**r, "OilProduction": 8.0} for r in records[:4]])
        first = httpx.get(base.delta_link).json()  # outside the client: page 1, then fail page 2 once
        set_faults(srv, [{"kind": "status", "status": 503, "times": 1}])
        delta = c.read_delta(urljoin(base.delta_link, first["@odata.nextLink"]))
        statuses = [(r["request_id"], r["status"]) for r in server_requests(srv) if (r["request_id"] or "").startswith("r-delta")]
    assert delta.changed == [{**r, "OilProduction": 8.0} for r in records[2:4]]
    assert delta.requests == 2
    assert statuses[-2:] == [("r-delta-a1", 503), ("r-delta-a2", 200)]


def test_invalid_token_error_is_delta_link_expired():
    with demo(**DEMO) as srv, client(srv) as c:
        with pytest.raises(DeltaLinkExpired) as info:
            c.read_delta(f"{srv.base_url}/WellProduction?$deltatoken=not-a-token")
    assert info.value.details == {"status": 400, "odata_code": "InvalidDeltaToken", "request_id": "local-delta-a1",
                                  "hop": 0}


@pytest.mark.parametrize("fault, match", [
    ({"kind": "loop_next_link"}, "loop"),
    ({"kind": "foreign_next_link", "host": "http://127.0.0.2:9"}, "another origin"),
])
def test_delta_next_links_get_the_page_guards(fault, match):
    with demo(max_page_size=1, **DEMO) as srv, client(srv) as c:
        base = c.start_tracking()
        admin(srv, "POST", "rows", srv.state.records()[:3])
        set_faults(srv, [fault])
        with pytest.raises(PaginationError, match=match) as info:
            c.read_delta(base.delta_link)
    assert "deltatoken=***" in str(info.value) and token_of(base.delta_link) not in str(info.value)


def test_a_delta_link_to_another_origin_is_refused_without_contact():
    with RecordingServer() as foreign, RecordingServer() as ours:
        with ODataClient(ClientConfig(base_url=ours.base + "/odata", token="t0k", **FAST)) as c:
            with pytest.raises(DeltaLinkExpired, match="another origin") as info:
                c.read_delta(foreign.base + "/odata/WellProduction?$deltatoken=s3cr3t")
        assert foreign.connections == 0 and "s3cr3t" not in str(info.value)


def test_missing_delta_link_at_the_end_is_a_pagination_error():
    with RecordingServer() as srv:
        srv.handler = lambda seen: json_response({"value": [{"WellCode": "A", "ProductionDate": "2023-01-01"}]})
        with ODataClient(ClientConfig(base_url=srv.base + "/odata", **FAST)) as c:
            with pytest.raises(PaginationError, match="no delta link"):
                c.read_delta(srv.base + "/odata/WellProduction?$deltatoken=x")


# -- payload spellings and key predicates -------------------------------------------------------


@pytest.mark.parametrize("entry, expected", [
    ({"@removed": {"reason": "deleted"}, "WellCode": "A", "ProductionDate": "2023-01-01"}, Removed(("A", "2023-01-01"), "deleted")),
    ({"@odata.removed": {"reason": "changed"}, "@odata.id": "WellProduction(WellCode='A',ProductionDate=2023-01-02)"},
     Removed(("A", "2023-01-02"), "changed")),
    ({"@removed": {}, "@id": "http://h/odata/WellProduction(ProductionDate=2023-01-03,WellCode='B')"},
     Removed(("B", "2023-01-03"), None)),
    ({"@odata.context": "$metadata#WellProduction/$deletedEntity", "id": "WellProduction(WellCode='C',ProductionDate=2023-01-04)",
      "reason": "deleted"}, Removed(("C", "2023-01-04"), "deleted")),
    ({"@odata.context": "http://h/odata/$metadata#WellProduction/$deletedEntity",
      "id": "http://h/odata/WellProduction(WellCode='it''s%20x',ProductionDate=2023-01-05)"},
     Removed(("it's x", "2023-01-05"), None)),
    ({"@context": "#WellProduction/$deletedEntity", "id": "WellProduction(WellCode='D',ProductionDate=2023-01-06)",
      "reason": "changed"}, Removed(("D", "2023-01-06"), "changed")),
])
def test_removed_entry_spellings(entry, expected):
    body = json.dumps({"value": [entry, {"@odata.etag": "W/1", "WellCode": "Z", "ProductionDate": "2023-02-01"},
                                 {"@odata.context": "$metadata#WellProduction/$link", "source": "x"}],
                       "@deltaLink": "next"}).encode()
    page = parse_delta_page(body, KEY)
    assert page.removed == [expected]
    assert page.changed == [{"WellCode": "Z", "ProductionDate": "2023-02-01"}]
    assert (page.next_link, page.delta_link) == (None, "next")


@pytest.mark.parametrize("body", [
    b'{"value": [{"@removed": {"reason": "deleted"}, "WellCode": "A"}]}',  # neither the whole key nor an id
    b'{"value": [{"@odata.context": "#WellProduction/$deletedEntity", "id": "WellProduction"}]}',
    b'{"error": {"code": "X", "message": "y"}}',
    b'{"value": [1]}',
    b'{"value": [',
])
def test_unusable_delta_bodies_are_malformed(body):
    with pytest.raises(Malformed):
        parse_delta_page(body, KEY)


@pytest.mark.parametrize("entity_id, key, expected", [
    ("WellProduction(WellCode='it''s',ProductionDate=2023-01-01)", KEY, ("it's", "2023-01-01")),
    ("WellProduction(ProductionDate=2023-01-01,WellCode='A,B)(')", KEY, ("A,B)(", "2023-01-01")),
    ("https://h:8443/odata/WellProduction(WellCode='a/b',ProductionDate=2023-01-01)", KEY, ("a/b", "2023-01-01")),
    ("WellProduction(WellCode=%27x%20y%27,ProductionDate=2023-01-01)", KEY, ("x y", "2023-01-01")),
    ("WellProduction(WellCode=null,ProductionDate='not-a-date')", KEY, (None, "not-a-date")),
    ("Wells('x')", (("Code", "Edm.String"),), ("x",)),
    ("Wells('')", (("Code", "Edm.String"),), ("",)),
    ("Wells(42)", (("Id", "Edm.Int64"),), (42,)),
    ("Orders(Id=7,Amount=2.5M)", (("Id", "Edm.Int32"), ("Amount", "Edm.Decimal")), (7, 2.5)),
    ("Customers('A')/Orders(Id=-3)", (("Id", "Edm.Int32"),), (-3,)),
])
def test_key_predicate_parser(entity_id, key, expected):
    assert parse_key_predicate(entity_id, key) == expected


@pytest.mark.parametrize("entity_id", [
    "WellProduction",  # no predicate
    "WellProduction('x')",  # a single value for a two-property key
    "WellProduction(WellCode='x')",  # a property missing
    "WellProduction(WellCode='x',ProductionDate=2023-01-01,Extra=1)",
    "WellProduction(WellCode='x',WellCode='y')",
    "WellProduction(WellCode='x,ProductionDate=2023-01-01)",  # unterminated string
    "WellProduction(WellCode=x,ProductionDate=2023-01-01)",  # a string without quotes
    "WellProduction(WellCode='x',ProductionDate=2023-01-01)/Extra",
    "WellProduction(WellCode='x',ProductionDate=)",
])
def test_key_predicate_parser_refuses_what_is_not_a_key(entity_id):
    with pytest.raises(ValueError):
        parse_key_predicate(entity_id, KEY)


def test_change_tracking_setting_is_validated_before_any_request():
    from well_assets.errors import ConfigError

    with RecordingServer() as srv:
        for bad in ("yes", "ON", None):
            with pytest.raises(ConfigError) as info:
                ODataClient(ClientConfig(base_url=srv.base + "/odata", change_tracking=bad))
            assert info.value.setting == "change_tracking" and "auto, on or off" in str(info.value)
        assert srv.connections == 0


def test_reprs_hide_the_links():
    base = Baseline(3, "http://h/odata/WellProduction?$deltatoken=s3cr3t")
    delta = Delta([{"a": 1}], [Removed(("x",), "deleted")], "http://h/odata/WellProduction?$deltatoken=s3cr3t", 1)
    assert "s3cr3t" not in repr(base) + repr(delta) + str(base) + str(delta)
