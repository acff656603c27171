"""Acceptance tests of the demo OData service: query options, paging, documents, errors, auth.

Everything goes over real loopback HTTP with httpx; expected rows are computed in Python
from the served dataset (`srv.state.records()`), independently of the polars filter code.
"""

from __future__ import annotations

import datetime as dt
from urllib.parse import quote, urljoin

import httpx
import pytest

ROWS = 3000  # 6 wells x 500 days
KEY = ("WellCode", "ProductionDate")


@pytest.fixture(scope="module")
def srv(demo_server):
    return demo_server(rows=ROWS, seed=11, max_page_size=1000)


@pytest.fixture(scope="module")
def client():
    with httpx.Client(timeout=30) as c:
        yield c


@pytest.fixture(scope="module")
def records(srv):
    return srv.state.records()


def url(srv, query: str = "", path: str = "WellProduction") -> str:
    """Entity-set URL with each option value percent-encoded (spaces as %20)."""
    parts = []
    for item in query.split("&") if query else []:
        name, _, value = item.partition("=")
        parts.append(f"{name}={quote(value, safe=',')}")
    return f"{srv.base_url}/{path}" + ("?" + "&".join(parts) if parts else "")


def follow(client, first_url: str, headers=None) -> tuple[list[dict], list[dict]]:
    """All records reached by following nextLinks; also returns every page body."""
    rows, bodies, next_url = [], [], first_url
    while next_url:
        r = client.get(next_url, headers=headers)
        assert r.status_code == 200, r.text
        body = r.json()
        bodies.append(body)
        rows.extend(body["value"])
        link = body.get("@odata.nextLink")
        next_url = urljoin(str(r.request.url), link) if link else None
        assert len(bodies) < 100, "nextLink loop"
    return rows, bodies


def keys(rows):
    return [(r["WellCode"], r["ProductionDate"]) for r in rows]


# -- paging ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "orderby, sort_key",
    [
        ("WellCode,ProductionDate", lambda r: (r["WellCode"], r["ProductionDate"])),
        ("ProductionDate desc,WellCode", lambda r: (-dt.date.fromisoformat(r["ProductionDate"]).toordinal(), r["WellCode"])),
        ("WellCode desc,ProductionDate desc", None),
        ("OilProduction desc,WellCode asc,ProductionDate", lambda r: (-r["OilProduction"], r["WellCode"], r["ProductionDate"])),
    ],
)
def test_skip_top_paging_returns_every_key_once_in_order(srv, client, records, orderby, sort_key):
    if sort_key is None:
        expected = sorted(records, key=lambda r: (r["WellCode"], r["ProductionDate"]), reverse=True)
    else:
        expected = sorted(records, key=sort_key)
    got, skip = [], 0
    while True:
        r = client.get(url(srv, f"$orderby={orderby}&$top=700&$skip={skip}"))
        assert r.status_code == 200
        page = r.json()["value"]
        assert "@odata.nextLink" not in r.json()  # $top below the cap: no server paging
        if not page:
            break
        got.extend(page)
        skip += 700
    assert len(got) == ROWS
    assert len(set(keys(got))) == ROWS
    assert keys(got) == keys(expected)
    assert got == expected  # values too


def test_default_order_is_key_order(srv, client, records):
    got, _ = follow(client, url(srv))
    assert keys(got) == sorted(keys(records))
    assert got == records


@pytest.mark.parametrize("skip, top", [(0, 2500), (100, 2500), (250, 1000), (1999, 1001), (0, 1)])
def test_next_links_deliver_exactly_top_rows(srv, client, records, skip, top):
    ordered = sorted(records, key=lambda r: (r["WellCode"], r["ProductionDate"]))
    got, bodies = follow(client, url(srv, f"$orderby=WellCode,ProductionDate&$skip={skip}&$top={top}"))
    assert got == ordered[skip : skip + top]
    assert all(len(b["value"]) <= 1000 for b in bodies)
    assert len(bodies) == -(-top // 1000)


def test_next_links_without_top_return_all_rows_with_filter_and_order(srv, client, records):
    expected = sorted(
        (r for r in records if r["OilProduction"] > 50),
        key=lambda r: (-r["OilProduction"], r["WellCode"], r["ProductionDate"]),
    )
    assert len(expected) > 2000  # spans several server pages
    got, bodies = follow(client, url(srv, "$filter=OilProduction gt 50&$orderby=OilProduction desc,WellCode,ProductionDate&$count=true"))
    assert got == expected
    assert [len(b["value"]) for b in bodies][:-1] == [1000] * (len(bodies) - 1)
    assert all(b["@odata.count"] == len(expected) for b in bodies)  # count kept on continuation pages


def test_next_link_is_relative_opaque_skiptoken(srv, client):
    body = client.get(url(srv)).json()
    link = body["@odata.nextLink"]
    assert link.startswith("WellProduction?$skiptoken=")
    assert "$skip=" not in link and "://" not in link


def test_prefer_maxpagesize_is_honoured_below_cap(srv, client, records):
    r = client.get(url(srv, "$top=600"), headers={"Prefer": "odata.maxpagesize=250"})
    assert r.headers["Preference-Applied"] == "odata.maxpagesize=250"
    assert len(r.json()["value"]) == 250
    got, bodies = follow(client, url(srv, "$top=600"), headers={"Prefer": "odata.maxpagesize=250"})
    assert [len(b["value"]) for b in bodies] == [250, 250, 100]
    assert got == records[:600]
    # above the cap: the cap applies, and the preference is not reported as applied
    r = client.get(url(srv), headers={"Prefer": "odata.maxpagesize=5000"})
    assert len(r.json()["value"]) == 1000
    assert "Preference-Applied" not in r.headers


def test_max_page_size_is_configurable(demo_server, client):
    small = demo_server(rows=500, max_page_size=120)
    got, bodies = follow(client, f"{small.base_url}/WellProduction")
    assert [len(b["value"]) for b in bodies] == [120, 120, 120, 120, 20]
    assert keys(got) == keys(small.state.records())


# -- count ---------------------------------------------------------------------------


def test_count_annotation_and_count_segment(srv, client, records):
    body = client.get(url(srv, "$count=true&$top=5")).json()
    assert body["@odata.count"] == ROWS and len(body["value"]) == 5
    assert "@odata.count" not in client.get(url(srv, "$top=5")).json()
    r = client.get(url(srv, path="WellProduction/$count"))
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    assert r.text == str(ROWS)
    expected = sum(1 for r_ in records if r_["WellCode"] == "WELL_002" and r_["ProductionDate"] >= "2024-01-01")
    flt = "$filter=WellCode eq 'WELL_002' and ProductionDate ge 2024-01-01"
    assert client.get(url(srv, flt + "&$count=true&$top=1")).json()["@odata.count"] == expected
    assert client.get(url(srv, flt, path="WellProduction/$count")).text == str(expected)
    assert 0 < expected < 500


# -- filters -------------------------------------------------------------------------


def _median_oil(records):
    return sorted(r["OilProduction"] for r in records)[len(records) // 2]


FILTERS = [
    ("WellCode eq 'WELL_003'", lambda r, m: r["WellCode"] == "WELL_003"),
    ("WellCode ne 'WELL_003'", lambda r, m: r["WellCode"] != "WELL_003"),
    ("WellCode gt 'WELL_004'", lambda r, m: r["WellCode"] > "WELL_004"),
    ("OilProduction gt {m}", lambda r, m: r["OilProduction"] > m),
    ("OilProduction ge {m}", lambda r, m: r["OilProduction"] >= m),
    ("OilProduction lt {m}", lambda r, m: r["OilProduction"] < m),
    ("OilProduction le {m}", lambda r, m: r["OilProduction"] <= m),
    ("OilProduction eq {m}", lambda r, m: r["OilProduction"] == m),
    ("GasProduction eq 0", lambda r, m: r["GasProduction"] == 0),
    ("WaterProduction gt 100.5 and WaterProduction le 2E2", lambda r, m: 100.5 < r["WaterProduction"] <= 200),
    ("ProductionDate lt 2023-03-01", lambda r, m: r["ProductionDate"] < "2023-03-01"),
    ("ProductionDate le 2023-03-01", lambda r, m: r["ProductionDate"] <= "2023-03-01"),
    ("ProductionDate eq 2024-02-29", lambda r, m: r["ProductionDate"] == "2024-02-29"),
    ("WellCode eq 'WELL_002' and ProductionDate ge 2024-01-01", lambda r, m: r["WellCode"] == "WELL_002" and r["ProductionDate"] >= "2024-01-01"),
    ("(WellCode eq 'WELL_001' or WellCode eq 'WELL_005') and OilProduction lt 100",
     lambda r, m: r["WellCode"] in ("WELL_001", "WELL_005") and r["OilProduction"] < 100),
    ("WellCode eq 'WELL_001' or WellCode eq 'WELL_005' and OilProduction lt 100",  # and binds tighter
     lambda r, m: r["WellCode"] == "WELL_001" or (r["WellCode"] == "WELL_005" and r["OilProduction"] < 100)),
    ("not (OilProduction gt 100) and ((ProductionDate gt 2023-06-30))",
     lambda r, m: not r["OilProduction"] > 100 and r["ProductionDate"] > "2023-06-30"),
    ("OilProduction gt -1.5 and WellCode ne null", lambda r, m: True),
    ("WellCode eq 'it''s'", lambda r, m: False),
]


@pytest.mark.parametrize("text, predicate", FILTERS, ids=[f[0][:40] for f in FILTERS])
def test_filter_matches_python_computation(srv, client, records, text, predicate):
    m = _median_oil(records)
    expected = [r for r in records if predicate(r, m)]
    got, _ = follow(client, url(srv, "$filter=" + text.format(m=m)))
    assert got == expected
    count = client.get(url(srv, "$filter=" + text.format(m=m), path="WellProduction/$count")).text
    assert int(count) == len(expected)


def test_filter_accepts_plus_and_percent20_for_spaces(srv, client, records):
    expected = [r for r in records if r["WellCode"] == "WELL_004"]
    for raw in ("$filter=WellCode+eq+'WELL_004'", "$filter=WellCode%20eq%20%27WELL_004%27", "%24filter=WellCode%20eq%20'WELL_004'"):
        got, _ = follow(client, f"{srv.base_url}/WellProduction?{raw}")
        assert got == expected, raw


# -- select, documents, headers -------------------------------------------------------


def test_select_returns_only_selected_properties(srv, client, records):
    body = client.get(url(srv, "$select=OilProduction,WellCode&$top=10&$skip=20")).json()
    assert body["@odata.context"] == "$metadata#WellProduction(WellCode,OilProduction)"
    assert body["value"] == [{"WellCode": r["WellCode"], "OilProduction": r["OilProduction"]} for r in records[20:30]]
    assert client.get(url(srv, "$select=*&$top=1")).json()["value"] == records[:1]


def test_service_document_and_metadata(srv, client):
    doc = client.get(srv.base_url + "/")
    assert doc.status_code == 200
    assert doc.json()["value"] == [{"name": "WellProduction", "kind": "EntitySet", "url": "WellProduction"}]
    assert client.get(srv.base_url).json() == doc.json()
    meta = client.get(srv.base_url + "/$metadata")
    assert meta.status_code == 200 and "xml" in meta.headers["content-type"]
    import xml.etree.ElementTree as ET

    ns = {"edm": "http://docs.oasis-open.org/odata/ns/edm"}
    root = ET.fromstring(meta.content)
    etype = root.find(".//edm:EntityType[@Name='WellProduction']", ns)
    assert [p.get("Name") for p in etype.findall("edm:Key/edm:PropertyRef", ns)] == ["WellCode", "ProductionDate"]
    types = {p.get("Name"): p.get("Type") for p in etype.findall("edm:Property", ns)}
    assert types == {"WellCode": "Edm.String", "ProductionDate": "Edm.Date", "OilProduction": "Edm.Decimal",
                     "GasProduction": "Edm.Decimal", "WaterProduction": "Edm.Decimal"}
    assert root.find(".//edm:EntitySet[@Name='WellProduction']", ns) is not None


def test_response_headers_context_and_request_id(srv, client):
    r = client.get(url(srv, "$top=2&$format=json"), headers={"X-Request-ID": "run-42-page-7"})
    assert r.headers["content-type"] == "application/json;odata.metadata=minimal"
    assert r.headers["OData-Version"] == "4.0"
    assert r.headers["X-Request-ID"] == "run-42-page-7"
    assert r.json()["@odata.context"] == "$metadata#WellProduction"
    bad = client.get(srv.base_url + "/Nope", headers={"X-Request-ID": "abc"})
    assert bad.headers["X-Request-ID"] == "abc"
    assert "X-Request-ID" not in client.get(url(srv, "$top=1")).headers


def test_dates_and_decimals_are_serialized_plainly(srv, client):
    rec = client.get(url(srv, "$top=1&$skip=7")).json()["value"][0]
    assert dt.date.fromisoformat(rec["ProductionDate"]) == dt.date(2023, 1, 8)
    for c in ("OilProduction", "GasProduction", "WaterProduction"):
        assert isinstance(rec[c], (int, float)) and round(rec[c], 3) == rec[c]


# -- errors and auth -------------------------------------------------------------------

ERRORS = [
    ("$filter=Foo eq 1", 400),
    ("$orderby=Foo desc", 400),
    ("$orderby=WellCode sideways", 400),
    ("$select=WellCode,Foo", 400),
    ("$filter=WellCode eq", 400),
    ("$filter=(WellCode eq 'WELL_001'", 400),
    ("$filter=WellCode eq 'WELL_001' and", 400),
    ("$filter=WellCode eq 'unterminated", 400),
    ("$filter=OilProduction eq 'abc'", 400),
    ("$filter=ProductionDate eq 2023-02-30", 400),
    ("$filter=WellCode", 400),
    ("$filter=WellCode eq 'A' xor WellCode eq 'B'", 400),
    ("$filter=startswith(WellCode,'WELL')", 400),
    ("$filter=OilProduction gt 1 and and OilProduction lt 5", 400),
    ("$filter=", 400),
    ("$top=1&$top=2", 400),
    ("$expand=Things", 501),
    ("$format=xml", 406),
    ("$top=-1", 400),
    ("$top=abc", 400),
    ("$top=1.5", 400),
    ("$skip=-5", 400),
    ("$skip=", 400),
    ("$skiptoken=not-a-token", 400),
    ("$count=maybe", 400),
]


@pytest.mark.parametrize("query, status", ERRORS, ids=[e[0] for e in ERRORS])
def test_invalid_options_give_odata_errors(srv, client, query, status):
    r = client.get(url(srv, query))
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert isinstance(err["code"], str) and err["code"] and isinstance(err["message"], str) and err["message"]
    assert r.headers["OData-Version"] == "4.0"


def test_unknown_property_error_names_it(srv, client):
    err = client.get(url(srv, "$orderby=Pressure")).json()["error"]
    assert "Pressure" in err["message"]


def test_unknown_entity_set_is_404(srv, client):
    for path in ("Wells", "WellProduction2", "Wells/$count"):
        r = client.get(url(srv, path=path))
        assert r.status_code == 404, path
        assert r.json()["error"]["code"]


def test_bearer_token_required_when_configured(demo_server, client):
    secured = demo_server(rows=100, token="s3cret")
    target = f"{secured.base_url}/WellProduction?$top=3"
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic czNjcmV0"}):
        r = client.get(target, headers=headers)
        assert r.status_code == 401, headers
        assert r.headers["WWW-Authenticate"].startswith("Bearer")
        assert r.json()["error"]["code"] == "Unauthorized"
    assert client.get(f"{secured.base_url}/$metadata").status_code == 401
    ok = client.get(target, headers={"Authorization": "Bearer s3cret"})
    assert ok.status_code == 200 and len(ok.json()["value"]) == 3
    assert client.get(f"{secured.admin_url}/stats").status_code == 200  # admin stays open
