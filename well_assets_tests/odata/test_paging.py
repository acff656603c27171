"""Pure paging rules: nextLink resolution, same-origin, annotations, query encoding."""

from __future__ import annotations

from urllib.parse import quote, unquote, urlsplit

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from well_assets.odata import paging

REQ = "http://127.0.0.1:8123/odata/WellProduction?$skip=2000&$top=1000&$orderby=WellCode,ProductionDate&$count=true"

# Opaque skiptoken-like text, already percent-encoded the way a server would emit it.
tokens = st.text(min_size=1, max_size=40).map(lambda t: quote(t, safe=""))
segments = st.from_regex(r"[A-Za-z0-9_]{1,12}", fullmatch=True)
hosts = st.sampled_from(["127.0.0.1", "127.0.0.2", "example.com", "svc.internal"])
ports = st.one_of(st.none(), st.integers(1, 65535))


@settings(max_examples=60, deadline=None)
@given(tok=tokens, seg=segments)
def test_relative_next_link_keeps_origin_and_query_verbatim(tok, seg):
    link = f"{seg}?$skiptoken={tok}"
    resolved = paging.resolve_next_link(REQ, link)
    assert paging.same_origin(resolved, REQ)
    assert resolved == f"http://127.0.0.1:8123/odata/{seg}?$skiptoken={tok}"
    assert unquote(urlsplit(resolved).query.split("=", 1)[1]) == unquote(tok)


@settings(max_examples=60, deadline=None)
@given(tok=tokens)
def test_root_relative_next_link(tok):
    resolved = paging.resolve_next_link(REQ, f"/other/WellProduction?$skiptoken={tok}")
    assert resolved == f"http://127.0.0.1:8123/other/WellProduction?$skiptoken={tok}"
    assert paging.same_origin(resolved, REQ)


@settings(max_examples=60, deadline=None)
@given(tok=tokens)
def test_query_only_next_link_replaces_the_query(tok):
    resolved = paging.resolve_next_link(REQ, f"?$skiptoken={tok}")
    assert resolved == f"http://127.0.0.1:8123/odata/WellProduction?$skiptoken={tok}"


@settings(max_examples=60, deadline=None)
@given(host=hosts, port=ports, scheme=st.sampled_from(["http", "https"]), tok=tokens)
def test_absolute_next_link_is_used_as_given(host, port, scheme, tok):
    netloc = host if port is None else f"{host}:{port}"
    link = f"{scheme}://{netloc}/odata/WellProduction?$skiptoken={tok}"
    resolved = paging.resolve_next_link(REQ, link)
    assert resolved == link
    expected_same = (scheme, host, port if port is not None else {"http": 80, "https": 443}[scheme]) == (
        "http", "127.0.0.1", 8123)
    assert paging.same_origin(resolved, REQ) is expected_same


@settings(max_examples=60, deadline=None)
@given(host=hosts, tok=tokens)
def test_scheme_relative_link_to_another_host_is_foreign(host, tok):
    resolved = paging.resolve_next_link(REQ, f"//{host}:9/odata/WellProduction?$skiptoken={tok}")
    assert not paging.same_origin(resolved, REQ)


@pytest.mark.parametrize(
    ("a", "b", "same"),
    [
        ("http://H:80/x", "http://h/y", True),
        ("https://h/x", "https://h:443/y", True),
        ("http://h/x", "https://h/x", False),
        ("http://h:8080/x", "http://h:8081/x", False),
        ("http://u:p@h/x", "http://h/x", True),
    ],
)
def test_same_origin(a, b, same):
    assert paging.same_origin(a, b) is same


def test_annotations_both_spellings_and_count_parsing():
    assert paging.next_link({"@odata.nextLink": "a"}) == "a"
    assert paging.next_link({"@nextLink": "b"}) == "b"
    assert paging.next_link({"@odata.nextLink": None}) is None
    assert paging.next_link({"@nextLink": "  "}) is None
    assert paging.next_link({"value": []}) is None
    assert paging.parse_count(paging.annotation({"@odata.count": 7}, "count")) == 7
    assert paging.parse_count(paging.annotation({"@count": "150000"}, "count")) == 150000
    assert paging.parse_count(12.0) == 12
    for bad in (None, -1, "x", True, 1.5, [], "-3", "²", "１２"):
        assert paging.parse_count(bad) is None


def test_strip_annotations_drops_instance_and_property_annotations():
    rec = {"@odata.etag": "W/1", "@etag": "x", "WellCode": "W", "OilProduction@odata.type": "#Decimal",
           "GasProduction@type": "Decimal", "OilProduction": 408, "GasProduction": "2.5e+21"}
    assert paging.strip_annotations(rec) == {"WellCode": "W", "OilProduction": 408, "GasProduction": "2.5e+21"}


@settings(max_examples=60, deadline=None)
@given(st.text(max_size=60))
def test_encode_query_never_emits_plus_or_raw_space_and_round_trips(value):
    encoded = paging.encode_query([("$filter", value)])
    assert " " not in encoded and "+" not in encoded and "&" not in encoded.split("=", 1)[1]
    assert "#" not in encoded
    assert unquote(encoded.split("=", 1)[1]) == value


def test_encode_query_spaces_are_percent_20():
    assert paging.encode_query([("$filter", "WellCode eq 'A+B'"), ("$orderby", "A,B desc")]) == (
        "$filter=WellCode%20eq%20'A%2BB'&$orderby=A,B%20desc"
    )


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("http://u:pw@h:1/o?x=1", "http://h:1/o?x=1"),
        ("http://h/o?access_token=abc&$skiptoken=42", "http://h/o?access_token=***&$skiptoken=42"),
        ("http://h/o?api_key=abc&sig=zz", "http://h/o?api_key=***&sig=***"),
    ],
)
def test_redact_url(url, expected):
    assert paging.redact_url(url) == expected


def test_range_filter_orders_null_first_like_odata():
    names, types = ("WellCode", "ProductionDate"), ("Edm.String", "Edm.Date")
    assert paging.range_filter(names, types, ("W1", "2024-01-02"), ("W3", "2024-05-06")) == (
        "((WellCode gt 'W1') or (WellCode eq 'W1' and ProductionDate ge 2024-01-02)) and "
        "((WellCode eq null or WellCode lt 'W3') or (WellCode eq 'W3' and (ProductionDate eq null or "
        "ProductionDate lt 2024-05-06)))"
    )
    assert paging.range_filter(names, types, None, None) is None
