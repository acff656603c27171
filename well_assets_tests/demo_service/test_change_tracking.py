"""The demo service's OData change tracking (delta links), over real loopback HTTP.

Expected deltas are computed in Python from the served dataset before and after the
changes (`srv.state.records()`), independently of the service's change log.
"""

from __future__ import annotations

import threading
import xml.etree.ElementTree as ET
from urllib.parse import urljoin

import httpx
import pytest

from well_assets.errors import ConfigError

ROWS = 200  # 4 wells x 50 days
DAYS = 50
TRACK = {"Prefer": "odata.track-changes"}


@pytest.fixture(scope="module")
def client():
    with httpx.Client(timeout=30) as c:
        yield c


def key(rec: dict) -> tuple:
    return rec["WellCode"], rec["ProductionDate"]


def entity_id(k: tuple) -> str:
    return f"WellProduction(WellCode='{k[0]}',ProductionDate={k[1]})"


def removed(k: tuple, reason: str, fmt: str) -> dict:
    if fmt == "4.0":
        return {"@odata.context": "$metadata#WellProduction/$deletedEntity", "id": entity_id(k), "reason": reason}
    return {"@removed": {"reason": reason}, "@id": entity_id(k), "WellCode": k[0], "ProductionDate": k[1]}


def follow(client, url: str, headers=None) -> tuple[list[dict], list[httpx.Response]]:
    """Every entry reached from ``url`` by nextLinks, and every response."""
    entries, responses = [], []
    while url:
        r = client.get(url, headers=headers)
        assert r.status_code == 200, r.text
        responses.append(r)
        body = r.json()
        entries.extend(body["value"])
        link = body.get("@odata.nextLink") or body.get("@nextLink")
        url = urljoin(str(r.request.url), link) if link else None
        assert len(responses) < 200, "nextLink loop"
    return entries, responses


def delta_link(response: httpx.Response) -> str:
    body = response.json()
    return body.get("@odata.deltaLink") or body["@deltaLink"]


def baseline(client, srv, query: str = "$top=0&$count=true") -> str:
    r = client.get(f"{srv.base_url}/WellProduction?{query}", headers=TRACK)
    assert r.status_code == 200 and "odata.track-changes" in r.headers["Preference-Applied"]
    return delta_link(r)


def upsert(client, srv, records: list[dict]) -> None:
    client.post(f"{srv.admin_url}/rows", json=records).raise_for_status()


def delete(client, srv, keys: list[tuple]) -> None:
    body = [{"WellCode": wc, "ProductionDate": d} for wc, d in keys]
    client.request("DELETE", f"{srv.admin_url}/rows", json=body).raise_for_status()


def requests_log(client, srv) -> list[dict]:
    return client.get(f"{srv.admin_url}/requests").json()


# -- tracked reads ----------------------------------------------------------------------


@pytest.mark.parametrize("headers, applied", [
    ([("Prefer", "odata.track-changes")], ["odata.track-changes"]),
    ([("Prefer", "track-changes")], ["odata.track-changes"]),  # the 4.01 spelling
    ([("Prefer", "odata.maxpagesize=30, odata.track-changes")], ["odata.maxpagesize=30", "odata.track-changes"]),
    ([("Prefer", "odata.maxpagesize=30"), ("Prefer", "Track-Changes")], ["odata.maxpagesize=30", "odata.track-changes"]),
])
def test_tracked_read_puts_the_delta_link_on_its_last_page(demo_server, client, headers, applied):
    srv = demo_server(rows=ROWS, days_per_well=DAYS, max_page_size=70)
    entries, responses = follow(client, f"{srv.base_url}/WellProduction?$count=true", headers=headers)
    assert entries == srv.state.records()
    first = responses[0]
    assert [p.strip() for p in first.headers["Preference-Applied"].split(",")] == applied
    bodies = [r.json() for r in responses]
    assert len(bodies) == (7 if "odata.maxpagesize=30" in applied else 3)
    assert not any("@odata.deltaLink" in b for b in bodies[:-1])
    assert "@odata.nextLink" not in bodies[-1]
    assert delta_link(responses[-1]).startswith(f"{srv.base_url}/WellProduction?$deltatoken=")


@pytest.mark.parametrize("query", ["$top=0&$count=true", "$top=0", "$filter=OilProduction gt 1e9&$count=true"])
def test_a_response_without_rows_is_the_last_page_and_has_the_link(demo_server, client, query):
    srv = demo_server(rows=ROWS, days_per_well=DAYS)
    r = client.get(f"{srv.base_url}/WellProduction?{query}", headers=TRACK)
    body = r.json()
    assert r.headers["Preference-Applied"] == "odata.track-changes"
    assert body["value"] == [] and "@odata.nextLink" not in body
    link = body["@odata.deltaLink"]
    assert "$top" not in link and "$skip" not in link
    empty = client.get(link)
    assert empty.status_code == 200 and empty.json()["value"] == []
    assert empty.json()["@odata.context"] == "$metadata#WellProduction/$delta"


def test_without_the_preference_or_the_support_there_is_no_delta_link(demo_server, client):
    tracking = demo_server(rows=ROWS, days_per_well=DAYS)
    plain = client.get(f"{tracking.base_url}/WellProduction?$top=0&$count=true")
    assert "Preference-Applied" not in plain.headers and "@odata.deltaLink" not in plain.json()

    untracked = demo_server(rows=ROWS, days_per_well=DAYS, track_changes=False)
    r = client.get(f"{untracked.base_url}/WellProduction?$top=0&$count=true",
                   headers={"Prefer": "odata.track-changes, odata.maxpagesize=10"})
    assert r.headers["Preference-Applied"] == "odata.maxpagesize=10"  # the other preference still applies
    assert "@odata.deltaLink" not in r.json() and r.json()["@odata.count"] == ROWS
    link = baseline(client, tracking)
    foreign = client.get(link.replace(tracking.base_url, untracked.base_url))
    assert foreign.status_code == 501 and foreign.json()["error"]["code"] == "NotImplemented"


@pytest.mark.parametrize("track_changes, supported", [(True, "true"), (False, "false")])
def test_metadata_announces_change_tracking(demo_server, client, track_changes, supported):
    srv = demo_server(rows=10, track_changes=track_changes)
    root = ET.fromstring(client.get(f"{srv.base_url}/$metadata").content)
    ns = {"edm": "http://docs.oasis-open.org/odata/ns/edm"}
    entity_set = root.find(".//edm:EntitySet[@Name='WellProduction']", ns)
    annotation = entity_set.find("edm:Annotation[@Term='Org.OData.Capabilities.V1.ChangeTracking']", ns)
    value = annotation.find("edm:Record/edm:PropertyValue[@Property='Supported']", ns)
    assert value.get("Bool") == supported


# -- delta contents ---------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["4.01", "4.0"])
def test_delta_holds_exactly_the_changes_in_key_order_over_several_pages(demo_server, client, fmt):
    srv = demo_server(rows=ROWS, days_per_well=DAYS, max_page_size=2, delta_format=fmt)
    before = {key(r): r for r in srv.state.records()}
    link = baseline(client, srv)
    keys = sorted(before)
    updated = {**before[keys[120]], "OilProduction": 1.5, "WaterProduction": None}
    inserted = {"WellCode": "WELL_002", "ProductionDate": "2022-12-31", "OilProduction": 2.0,
                "GasProduction": 3.0, "WaterProduction": 4.0}
    flipped = {**before[keys[5]], "GasProduction": 99.0}  # changed, then changed back
    upsert(client, srv, [updated, inserted, flipped])
    upsert(client, srv, [before[keys[5]]])
    delete(client, srv, [keys[0], keys[199], ("WELL_009", "2023-01-01")])  # the last one does not exist
    transient = {"WellCode": "WELL_001", "ProductionDate": "2030-01-01", "OilProduction": 1.0}
    upsert(client, srv, [transient])
    delete(client, srv, [key(transient)])

    entries, responses = follow(client, link)
    expected = sorted([
        (keys[0], removed(keys[0], "deleted", fmt)),
        (keys[5], before[keys[5]]),
        (key(inserted), inserted),
        (keys[120], updated),
        (keys[199], removed(keys[199], "deleted", fmt)),
        (key(transient), removed(key(transient), "deleted", fmt)),
    ])
    assert entries == [entry for _, entry in expected]
    assert len(responses) == 3  # 6 entries, 2 per page
    assert all(r.json()["@odata.context"] == "$metadata#WellProduction/$delta" for r in responses)
    assert all(r.headers["OData-Version"] == ("4.01" if fmt == "4.01" else "4.0") for r in responses)
    again, _ = follow(client, delta_link(responses[-1]))
    assert again == []
    assert follow(client, link)[0] == entries  # the old link still answers, with the same changes


def test_entity_leaving_the_filter_is_removed_with_reason_changed(demo_server, client):
    srv = demo_server(rows=ROWS, days_per_well=DAYS)
    records = srv.state.records()
    link = baseline(client, srv, "$filter=OilProduction ge 0&$select=WellCode,ProductionDate,OilProduction&$top=0")
    leaves = {**records[10], "OilProduction": -5.0}
    stays = {**records[20], "OilProduction": 7.0, "GasProduction": 8.0}
    outside = {"WellCode": "WELL_003", "ProductionDate": "2022-06-01", "OilProduction": -1.0}
    upsert(client, srv, [leaves, stays, outside])
    entries, responses = follow(client, link)
    assert sorted(entries, key=lambda e: (e["WellCode"], e["ProductionDate"])) == entries
    assert entries == [
        removed(key(leaves), "changed", "4.01"),
        {"WellCode": stays["WellCode"], "ProductionDate": stays["ProductionDate"], "OilProduction": 7.0},
        removed(key(outside), "changed", "4.01"),
    ]
    assert responses[0].json()["@odata.context"] == "$metadata#WellProduction(WellCode,ProductionDate,OilProduction)/$delta"
    assert "$filter" not in delta_link(responses[-1])  # the filter lives in the opaque token


def test_changes_made_during_a_tracked_read_are_in_its_delta(demo_server, client):
    srv = demo_server(rows=ROWS, days_per_well=DAYS, max_page_size=50)
    records = srv.state.records()
    r = client.get(f"{srv.base_url}/WellProduction", headers=TRACK)
    first = r.json()["value"]
    read_already = {**records[10], "OilProduction": 11.0}  # on the page just read
    not_yet = {**records[180], "OilProduction": 22.0}  # on a page still to come
    upsert(client, srv, [read_already, not_yet])
    rest, responses = follow(client, urljoin(str(r.request.url), r.json()["@odata.nextLink"]))
    assert first + rest == srv.state.records()[:10] + [records[10]] + srv.state.records()[11:]
    delta, _ = follow(client, delta_link(responses[-1]))
    assert delta == [read_already, not_yet]


def test_mirror_kept_by_deltas_equals_the_source_under_concurrent_changes(demo_server, client):
    """Changes land while deltas are read page by page; a mirror that applies every delta
    ends up equal to the source."""
    srv = demo_server(rows=ROWS, days_per_well=DAYS, max_page_size=7)
    entries, responses = follow(client, f"{srv.base_url}/WellProduction", headers=TRACK)
    mirror = {key(e): e for e in entries}
    link = delta_link(responses[-1])
    keys = sorted(mirror)
    errors: list[BaseException] = []

    def mutate(worker: int) -> None:
        try:
            with httpx.Client(timeout=30) as c:
                for i in range(25):
                    k = keys[(worker * 37 + i * 11) % len(keys)]
                    if i % 3 == 2:
                        delete(c, srv, [k])
                    else:
                        upsert(c, srv, [{"WellCode": k[0], "ProductionDate": k[1], "OilProduction": float(i)},
                                        {"WellCode": f"NEW_{worker}", "ProductionDate": f"2023-02-{i + 1:02d}"}])
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    def apply(link: str) -> str:
        entries, responses = follow(client, link)
        for e in entries:
            if "@removed" in e:
                mirror.pop((e["WellCode"], e["ProductionDate"]), None)
            else:
                mirror[key(e)] = e
        return delta_link(responses[-1])

    threads = [threading.Thread(target=mutate, args=(w,)) for w in range(3)]
    for t in threads:
        t.start()
    reads = 0
    while any(t.is_alive() for t in threads):
        link = apply(link)
        reads += 1
    for t in threads:
        t.join(30)
    assert not errors, errors
    link = apply(link)  # what the last reads missed
    assert mirror == {key(r): r for r in srv.state.records()}
    assert reads >= 1


# -- links that expire ------------------------------------------------------------------


@pytest.mark.parametrize("how", ["expire", "reset", "retention"])
def test_forgotten_links_and_delta_next_links_answer_410(demo_server, client, how):
    srv = demo_server(rows=ROWS, days_per_well=DAYS, max_page_size=2,
                      delta_retention=2 if how == "retention" else None)
    link = baseline(client, srv)
    records = srv.state.records()
    upsert(client, srv, [{**r, "OilProduction": 0.5} for r in records[:5]])
    first = client.get(link).json()
    next_link = urljoin(link, first["@odata.nextLink"])
    if how == "expire":
        assert client.post(f"{srv.admin_url}/delta/expire").json()["expired"] is True
    elif how == "reset":
        client.post(f"{srv.admin_url}/reset").raise_for_status()
    else:  # two more versions: the link's version falls out of the history kept
        upsert(client, srv, [records[7]])
        upsert(client, srv, [records[8]])
    for gone in (link, next_link):
        r = client.get(gone)
        assert r.status_code == 410
        assert r.json()["error"]["code"] == "DeltaTokenExpired" and r.json()["error"]["message"]
    fresh = baseline(client, srv)  # a new baseline tracks again
    upsert(client, srv, [records[9]])
    assert follow(client, fresh)[0] == [records[9]]
    stats = client.get(f"{srv.admin_url}/stats").json()["change_tracking"]
    assert stats["gone"] == 2
    assert stats["enabled"] is True and stats["delta_format"] == "4.01"
    assert stats["version"] == srv.state.dataset.version


def test_delta_requests_are_tagged_and_counted(demo_server, client):
    srv = demo_server(rows=ROWS, days_per_well=DAYS, max_page_size=3)
    link = baseline(client, srv)
    upsert(client, srv, [{**r, "GasProduction": 1.0} for r in srv.state.records()[:7]])
    _, responses = follow(client, link)
    follow(client, delta_link(responses[-1]))
    log = requests_log(client, srv)
    assert [r["endpoint"] for r in log] == ["collection", "delta", "delta", "delta", "delta"]
    assert all("$deltatoken=" in r["query"] for r in log[1:])
    stats = client.get(f"{srv.admin_url}/stats").json()
    assert stats["by_endpoint"] == {"collection": 1, "delta": 4}
    assert {k: stats["change_tracking"][k] for k in ("links_issued", "delta_requests", "gone")} == {
        "links_issued": 3, "delta_requests": 4, "gone": 0}


# -- faults, auth, bad tokens ---------------------------------------------------------


def test_bearer_token_and_faults_apply_to_delta_requests(demo_server, client):
    srv = demo_server(rows=ROWS, days_per_well=DAYS, token="s3cret", max_page_size=2)
    auth = {"Authorization": "Bearer s3cret"}
    r = client.get(f"{srv.base_url}/WellProduction?$top=0", headers={**TRACK, **auth})
    link = r.json()["@odata.deltaLink"]
    upsert(client, srv, [{**rec, "OilProduction": 3.0} for rec in srv.state.records()[:3]])
    assert client.get(link).status_code == 401
    client.put(f"{srv.admin_url}/faults", json=[{"kind": "status", "status": 503, "times": 1},
                                               {"kind": "annotations_401"}]).raise_for_status()
    assert client.get(link, headers=auth).status_code == 503
    page = client.get(link, headers=auth).json()
    assert page["@context"] == "$metadata#WellProduction/$delta" and "@nextLink" in page
    assert [e["OilProduction"] for e in page["value"]] == [3.0, 3.0]


@pytest.mark.parametrize("query, code", [
    ("$deltatoken=garbage", "InvalidDeltaToken"),
    ("$deltatoken=eyJ4IjoxfQ", "InvalidDeltaToken"),  # JSON, but not a delta token
    ("{link}&$top=1", "BadRequest"),  # a delta link takes no other options
    ("{link}&$filter=WellCode eq 'X'", "BadRequest"),
])
def test_invalid_delta_requests_are_400(demo_server, client, query, code):
    srv = demo_server(rows=10)
    link = baseline(client, srv)
    url = query.format(link=link) if query.startswith("{") else f"{srv.base_url}/WellProduction?{query}"
    r = client.get(url)
    assert r.status_code == 400 and r.json()["error"]["code"] == code


# -- configuration ----------------------------------------------------------------------


@pytest.mark.parametrize("field, value, allowed", [
    ("delta_format", "4.02", "4.01 or 4.0"),
    ("track_changes", "yes", "True or False"),
    ("delta_retention", 0, "1 to 1000000000"),
    ("delta_retention", 2.5, "1 to 1000000000"),
])
def test_bad_change_tracking_settings_are_named(field, value, allowed):
    from well_assets.demo_service import DemoServiceConfig

    with pytest.raises(ConfigError) as info:
        DemoServiceConfig(**{field: value}).validate()
    assert info.value.setting == field and allowed in info.value.message


def test_cli_flags_set_change_tracking(capsys):
    import argparse

    from well_assets.demo_service import cli

    parser = cli.configure_parser(argparse.ArgumentParser())
    cfg = cli.build_config(parser.parse_args(["--delta-format", "4.0", "--no-change-tracking",
                                              "--delta-retention", "5"]))
    assert (cfg.delta_format, cfg.track_changes, cfg.delta_retention) == ("4.0", False, 5)
    default = cli.build_config(parser.parse_args([]))
    assert (default.delta_format, default.track_changes, default.delta_retention) == ("4.01", True, None)
    for bad in (["--delta-format", "5"], ["--delta-retention", "0"]):
        with pytest.raises(SystemExit):
            parser.parse_args(bad)
        assert bad[0] in capsys.readouterr().err
