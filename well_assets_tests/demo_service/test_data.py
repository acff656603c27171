"""Demo service data: generation, salted bad rows, admin mutation, CLI and start-up time."""

from __future__ import annotations

import collections
import datetime as dt
import os
import socket
import subprocess
import sys
import threading
import time
from urllib.parse import urljoin

import httpx
import pytest

from well_assets.demo_service import DemoServer, DemoServiceConfig
from well_assets.demo_service.data import Dataset
from well_assets.demo_service.filters import parse_filter_span
from well_assets.odata.paging import range_filter

VOLUMES = ("OilProduction", "GasProduction", "WaterProduction")
KINDS = {"negative_volume", "non_numeric", "bad_date", "missing_key", "duplicate_key", "absurd_magnitude"}


@pytest.fixture
def client():
    with httpx.Client(timeout=60) as c:
        yield c


def fetch_all(client, srv, query: str = "") -> list[dict]:
    rows, next_url = [], f"{srv.base_url}/WellProduction" + (f"?{query}" if query else "")
    while next_url:
        r = client.get(next_url)
        assert r.status_code == 200, r.text
        body = r.json()
        rows.extend(body["value"])
        link = body.get("@odata.nextLink")
        next_url = urljoin(str(r.request.url), link) if link else None
    return rows


def _is_date(text) -> bool:
    try:
        dt.date.fromisoformat(text)
        return True
    except (TypeError, ValueError):
        return False


def problems(rec: dict) -> set[str]:
    """Which bad-row kinds a served record exhibits (duplicates are checked separately)."""
    found = set()
    vols = [rec[c] for c in VOLUMES]
    if any(isinstance(v, (int, float)) and v < 0 for v in vols):
        found.add("negative_volume")
    if any(isinstance(v, str) for v in vols):
        found.add("non_numeric")
    if rec["ProductionDate"] is not None and not _is_date(rec["ProductionDate"]):
        found.add("bad_date")
    if rec["WellCode"] is None:
        found.add("missing_key")
    if any(isinstance(v, (int, float)) and v > 1e9 for v in vols):
        found.add("absurd_magnitude")
    return found


# -- generated data ---------------------------------------------------------------------------


def test_generated_layout_and_realistic_values(demo_server, client):
    srv = demo_server(rows=3000, seed=5)
    rows = fetch_all(client, srv)
    assert len(rows) == 3000
    by_well = collections.defaultdict(list)
    for r in rows:
        by_well[r["WellCode"]].append(r)
    assert sorted(by_well) == [f"WELL_{i:03d}" for i in range(1, 7)]
    start = dt.date(2023, 1, 1)
    for well, recs in by_well.items():
        assert [r["ProductionDate"] for r in recs] == [(start + dt.timedelta(days=d)).isoformat() for d in range(500)]
        oil = [r["OilProduction"] for r in recs]
        early, late = sum(oil[:60]) / 60, sum(oil[-60:]) / 60
        assert late < early * 0.95, well  # declining production
        shut_in = [r for r in recs if r["OilProduction"] == 0]
        assert 0 < len(shut_in) < 50, well
        assert all(r["GasProduction"] == 0 and r["WaterProduction"] == 0 for r in shut_in)
    for r in rows:
        for c in VOLUMES:
            v = r[c]
            assert isinstance(v, (int, float)) and 0 <= v < 1e5
            assert abs(v * 1000 - round(v * 1000)) < 1e-6  # at most 3 decimals
    assert not any(problems(r) for r in rows)


def test_generation_is_deterministic_for_a_seed():
    a = DemoServer(DemoServiceConfig(rows=2000, seed=3, bad_rows=0.02)).state
    b = DemoServer(DemoServiceConfig(rows=2000, seed=3, bad_rows=0.02)).state
    c = DemoServer(DemoServiceConfig(rows=2000, seed=4, bad_rows=0.02)).state
    assert a.records() == b.records() and a.bad_rows() == b.bad_rows()
    assert a.records() != c.records()
    assert [x["index"] for x in a.bad_rows()] != [x["index"] for x in c.bad_rows()]


def test_well_codes_widen_to_keep_string_order():
    state = DemoServer(DemoServiceConfig(rows=2000, days_per_well=1)).state
    codes = [r["WellCode"] for r in state.records()]
    assert codes[0] == "WELL_0001" and codes[-1] == "WELL_2000"
    assert codes == sorted(codes)


# -- bad rows ------------------------------------------------------------------------------


def test_bad_rows_listed_exactly_and_served(demo_server, client):
    srv = demo_server(rows=3000, bad_rows=0.01, seed=9)
    served = fetch_all(client, srv)
    assert len(served) == 3000  # a bad row replaces a good one; duplicates are counted in
    listed = client.get(f"{srv.admin_url}/bad-rows").json()
    assert len(listed) == 30
    counts = collections.Counter(x["kind"] for x in listed)
    assert set(counts) == KINDS and all(n == 5 for n in counts.values())
    for item in listed:
        rec = served[item["index"]]
        assert item["record"] == rec
        assert (item["WellCode"], item["ProductionDate"]) == (rec["WellCode"], rec["ProductionDate"])
        if item["kind"] == "duplicate_key":
            assert served[item["index"] - 1] == rec  # exact copy right after the original
            assert not problems(rec)
        else:
            assert problems(rec) == {item["kind"]}, item
    # every other record is clean and unique: the list is exactly the salted rows
    listed_idx = {x["index"] for x in listed}
    for i, rec in enumerate(served):
        if i not in listed_idx:
            assert not problems(rec), (i, rec)
            assert i == 0 or rec != served[i - 1]
    keys = [(r["WellCode"], r["ProductionDate"]) for r in served if r["WellCode"] and _is_date(r["ProductionDate"])]
    assert len(keys) - len(set(keys)) == counts["duplicate_key"]


def test_bad_values_survive_filters_and_ordering(demo_server, client):
    srv = demo_server(rows=3000, bad_rows=0.01, seed=9)
    listed = client.get(f"{srv.admin_url}/bad-rows").json()
    missing = [x for x in listed if x["kind"] == "missing_key"]
    got = fetch_all(client, srv, "$filter=WellCode%20eq%20null")
    assert got == [x["record"] for x in missing]
    first = client.get(f"{srv.base_url}/WellProduction?$orderby=WellCode&$top=5").json()["value"]
    assert first == [x["record"] for x in missing]  # nulls sort first ascending
    desc = fetch_all(client, srv, "$orderby=WellCode%20desc")
    assert desc[-5:] == [x["record"] for x in missing]  # and last descending
    assert all(r["WellCode"] is not None for r in desc[:-5])
    # OData `ne` is true for null values
    ne = fetch_all(client, srv, "$filter=WellCode%20ne%20'WELL_001'")
    served = fetch_all(client, srv)
    assert ne == [r for r in served if r["WellCode"] != "WELL_001"]
    assert sum(r["WellCode"] is None for r in ne) == 5
    negatives = fetch_all(client, srv, "$filter=OilProduction%20lt%200%20or%20GasProduction%20lt%200%20or%20WaterProduction%20lt%200")
    assert negatives == [x["record"] for x in listed if x["kind"] == "negative_volume"]


_KEY_NAMES, _KEY_TYPES = ("WellCode", "ProductionDate"), ("Edm.String", "Edm.Date")
INDEXED_FILTERS = [
    "WellCode lt 'WELL_002'",
    "WellCode le 'WELL_002'",
    "'WELL_002' gt WellCode",
    "WellCode eq null",
    "WellCode eq null or WellCode lt 'WELL_002'",
    "not (WellCode ge 'WELL_002')",
    "WellCode ge 'WELL_002' and WellCode le 'WELL_003'",
    "WellCode eq 'WELL_001' or WellCode eq 'WELL_004'",
    "WellCode gt 'WELL_003' or OilProduction gt 100",
    "WellCode ne 'WELL_003'",
    "WellCode eq 'WELL_009'",
    "WellCode gt 'WELL_004' and WellCode lt 'WELL_001'",
    range_filter(_KEY_NAMES, _KEY_TYPES, None, ("WELL_001", "2023-03-01")),
    range_filter(_KEY_NAMES, _KEY_TYPES, ("WELL_001", "2023-06-01"), ("WELL_003", "2023-02-01")),
    range_filter(_KEY_NAMES, _KEY_TYPES, ("WELL_004", "2024-01-01"), None),
]


@pytest.mark.parametrize("text", INDEXED_FILTERS)
def test_key_index_finds_exactly_what_a_scan_finds(text):
    """A filter answered from the WellCode index matches exactly the rows, in the order, that
    a scan of the whole set matches (nulls and bad values included), before and after a
    change to the set."""
    dataset = Dataset(rows=3000, seed=9, bad_rows=0.01)
    expr, span = parse_filter_span(text)
    for _ in range(2):
        snap = dataset.snapshot()
        scanned = snap.frame.filter(expr)
        assert snap.candidates(span).filter(expr).equals(scanned)
        dataset.delete([{"WellCode": "WELL_001", "ProductionDate": "2023-06-01"},
                        {"WellCode": "WELL_002", "ProductionDate": "2023-01-05"}])
        dataset.upsert([{"WellCode": "WELL_000A", "ProductionDate": "2023-01-01", "OilProduction": 1.0,
                         "GasProduction": 1.0, "WaterProduction": 1.0}])
    snap = dataset.snapshot()
    assert snap.candidates(span).filter(expr).equals(snap.frame.filter(expr))


# -- admin mutation -------------------------------------------------------------------------


def count(client, srv, flt: str | None = None) -> int:
    q = f"?$filter={flt}" if flt else ""
    return int(client.get(f"{srv.base_url}/WellProduction/$count{q}").text)


def test_admin_upsert_delete_reset_change_what_is_served(demo_server, client):
    srv = demo_server(rows=3000)
    key_flt = "WellCode%20eq%20'WELL_002'%20and%20ProductionDate%20eq%202023-01-10"
    before = fetch_all(client, srv, f"$filter={key_flt}")
    assert len(before) == 1 and before[0]["OilProduction"] != 1.25
    # update an existing key
    changed = {**before[0], "OilProduction": 1.25, "GasProduction": None}
    r = client.post(f"{srv.admin_url}/rows", json=[changed])
    assert r.status_code == 200 and r.json()["updated"] == 1 and r.json()["inserted"] == 0
    assert fetch_all(client, srv, f"$filter={key_flt}") == [changed]
    assert count(client, srv) == 3000
    # insert a new key: lands in key order (after WELL_002's last day, before WELL_003)
    new = {"WellCode": "WELL_002", "ProductionDate": "2030-01-01", "OilProduction": 7, "GasProduction": 8.5,
           "WaterProduction": 0.125}
    assert client.post(f"{srv.admin_url}/rows", json=[new]).json()["inserted"] == 1
    served = fetch_all(client, srv)
    assert len(served) == 3001 and count(client, srv) == 3001
    pos = served.index({**new, "OilProduction": 7.0})
    assert served[pos - 1]["WellCode"] == "WELL_002" and served[pos + 1]["WellCode"] == "WELL_003"
    assert count(client, srv, "ProductionDate%20ge%202030-01-01") == 1  # cached views were invalidated
    # delete
    r = client.request("DELETE", f"{srv.admin_url}/rows", json=[{"WellCode": "WELL_002", "ProductionDate": "2030-01-01"},
                                                                {"WellCode": "WELL_001", "ProductionDate": "2023-01-01"}])
    assert r.json() == {"deleted": 2, "rows": 2999}
    assert count(client, srv) == 2999 and count(client, srv, "ProductionDate%20ge%202030-01-01") == 0
    assert fetch_all(client, srv, "$top=1")[0]["ProductionDate"] == "2023-01-02"
    assert client.get(f"{srv.admin_url}/stats").json()["rows"] == 2999
    # reset
    assert client.post(f"{srv.admin_url}/reset").json()["rows"] == 3000
    assert fetch_all(client, srv, f"$filter={key_flt}") == before


def test_admin_rejects_malformed_bodies(demo_server, client):
    srv = demo_server(rows=100)
    assert client.post(f"{srv.admin_url}/rows", content=b"{not json").status_code == 400
    assert client.post(f"{srv.admin_url}/rows", json={"WellCode": "X"}).status_code == 400
    assert client.post(f"{srv.admin_url}/rows", json=[{"WellCode": "X", "Pressure": 1}]).status_code == 400
    assert client.request("DELETE", f"{srv.admin_url}/rows", json=[{"WellCode": 5}]).status_code == 400
    assert count(client, srv) == 100


def test_concurrent_mutation_and_paging(demo_server):
    srv = demo_server(rows=3000)
    errors: list[BaseException] = []

    def reader():
        try:
            with httpx.Client(timeout=30) as c:
                for _ in range(5):
                    rows = fetch_all(c, srv, "$orderby=OilProduction%20desc")
                    assert 3000 <= len(rows) <= 3040
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=reader) for _ in range(3)]
    for t in threads:
        t.start()
    for i in range(40):
        srv.state.upsert([{"WellCode": "WELL_009", "ProductionDate": f"2024-01-{i % 28 + 1:02d}",
                           "OilProduction": float(i), "GasProduction": 1.0, "WaterProduction": 2.0}])
    for t in threads:
        t.join(60)
    assert not errors, errors
    assert srv.state.row_count == 3028


# -- CLI and start-up -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "argv, option",
    [
        (["--rows", "-5"], "--rows"),
        (["--rows", "lots"], "--rows"),
        (["--bad-rows", "0.9"], "--bad-rows"),
        (["--port", "70000"], "--port"),
        (["--max-page-size", "0"], "--max-page-size"),
        (["--fault", "{oops"], "--fault"),
        (["--fault", '{"kind": "status"}'], "--fault"),
        (["--latency", "-1"], "--latency"),
        (["--rate-limit", "0"], "--rate-limit"),
    ],
)
def test_cli_rejects_bad_arguments_naming_the_option(argv, option, capsys):
    from well_assets.demo_service import cli

    with pytest.raises(SystemExit) as exc:
        cli.main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert f"argument {option}" in err
    assert "allowed" in err or "must be" in err


def test_cli_builds_config_from_arguments(monkeypatch):
    import argparse

    from well_assets.demo_service import cli

    sub = argparse.ArgumentParser(prog="well-assets").add_subparsers(dest="command")
    parser = cli.add_parser(sub)
    monkeypatch.setenv("DEMO_ODATA_TOKEN", "from-env")
    args = parser.parse_args(["--rows", "10", "--fault", '{"kind": "drop", "times": 1}', "--latency", "0.5",
                              "--rate-limit", "4", "--bad-rows", "0.1", "--port", "0"])
    assert args.func is cli.run
    cfg = cli.build_config(args)
    assert (cfg.rows, cfg.bad_rows, cfg.port, cfg.token) == (10, 0.1, 0, "from-env")
    assert cfg.faults == [{"kind": "drop", "times": 1}, {"kind": "latency", "seconds": 0.5},
                          {"kind": "rate_limit", "per_second": 4.0, "retry_after": 1}]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
@pytest.mark.parametrize("command", [
    [sys.executable, "-m", "well_assets.demo_service"],
    [sys.executable, "-m", "well_assets.cli.main", "demo-server"],  # what `well-assets demo-server` runs
])
def test_cli_with_150k_rows_accepts_requests_within_5_seconds(command):
    """Measured from process start, import time included.

    Up to three attempts: the first may hit a cold disk cache, and the suite may share this
    2-core machine with other test processes; the best attempt must be under 5 s.
    """
    timings = []
    for _attempt in range(3):
        port = _free_port()
        start = time.monotonic()
        proc = subprocess.Popen(
            [*command, "--rows", "150000", "--port", str(port)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        try:
            ready = None
            while time.monotonic() - start < 30 and proc.poll() is None:
                try:
                    r = httpx.get(f"http://127.0.0.1:{port}/odata/WellProduction/$count", timeout=2)
                    if r.status_code == 200:
                        ready = time.monotonic() - start
                        assert r.text == "150000"
                        break
                except httpx.TransportError:
                    time.sleep(0.02)
            assert ready is not None, proc.stderr.read() if proc.poll() is not None else "not ready in 30 s"
            timings.append(ready)
        finally:
            proc.terminate()
            out, err = proc.communicate(timeout=15)
        assert proc.returncode == 0, err
        assert f"http://127.0.0.1:{port}/odata/" in out
        if ready < 5.0:
            break
    assert min(timings) < 5.0, timings


@pytest.mark.slow
def test_one_and_a_half_million_rows_deep_pages_and_memory():
    psutil = pytest.importorskip("psutil")
    proc = psutil.Process()
    rss0 = proc.memory_info().rss
    with DemoServer(DemoServiceConfig(rows=1_500_000, bad_rows=0.001)) as srv, httpx.Client(timeout=60) as c:
        assert c.get(f"{srv.base_url}/WellProduction/$count").text == "1500000"
        t = time.perf_counter()
        last = c.get(f"{srv.base_url}/WellProduction?$skip=1499000").json()
        deep = time.perf_counter() - t
        assert len(last["value"]) == 1000 and "@odata.nextLink" not in last
        assert last["value"][-1]["WellCode"] == "WELL_3000"
        q = f"{srv.base_url}/WellProduction?$orderby=ProductionDate%20desc,WellCode&$skip=1400000&$top=10"
        c.get(q)  # builds and caches the sorted view
        t = time.perf_counter()
        body = c.get(q).json()
        cached = time.perf_counter() - t
        assert len(body["value"]) == 10
        rss = proc.memory_info().rss - rss0
    assert deep < 2.0 and cached < 0.5, (deep, cached)  # generous: the machine may be shared
    assert rss < 800e6, rss / 1e6


def test_upsert_batch_keeps_key_order_and_last_record_wins():
    state = DemoServer(DemoServiceConfig(rows=1000, bad_rows=0.01, seed=2)).state  # 2 wells, with bad rows
    before = state.records()
    dup = next(x for x in state.bad_rows() if x["kind"] == "duplicate_key")
    batch = [
        {"WellCode": "WELL_000", "ProductionDate": "2023-01-05", "OilProduction": 1},  # before everything
        {"WellCode": "WELL_001", "ProductionDate": "2024-12-31", "OilProduction": 2},  # end of WELL_001
        {"WellCode": "WELL_001", "ProductionDate": "2024-06-01", "OilProduction": 3},  # also there, earlier date
        {"WellCode": "WELL_009", "ProductionDate": "2023-01-01", "OilProduction": 4},  # after everything
        {"WellCode": "WELL_009", "ProductionDate": "2023-01-01", "OilProduction": 5},  # same key: last wins
        {"WellCode": None, "ProductionDate": "2023-01-01", "OilProduction": 6},  # no key: appended
        {"WellCode": dup["WellCode"], "ProductionDate": dup["ProductionDate"], "OilProduction": 7,
         "GasProduction": "n/a"},  # updates both copies; raw value kept
    ]
    result = state.upsert(batch)
    assert result == {"updated": 2, "inserted": 5, "rows": 1005}
    after = state.records()
    full = lambda r: {"WellCode": r["WellCode"], "ProductionDate": r["ProductionDate"], "OilProduction": float(r["OilProduction"]),
                      "GasProduction": r.get("GasProduction"), "WaterProduction": None}
    assert after[0] == full(batch[0])
    well1 = [i for i, r in enumerate(after) if r["WellCode"] == "WELL_001"]
    assert after[well1[-2]] == full(batch[2]) and after[well1[-1]] == full(batch[1])
    assert after[well1[-1] + 1]["WellCode"] == "WELL_002"
    assert after[-2] == full(batch[4]) and after[-1] == full(batch[5])
    copies = [r for r in after if (r["WellCode"], r["ProductionDate"]) == (dup["WellCode"], dup["ProductionDate"])]
    assert len(copies) == 2 and all(r["OilProduction"] == 7.0 and r["GasProduction"] == "n/a" for r in copies)
    # everything else unchanged and in the same relative order
    untouched = [r for r in after if r not in copies and r not in [full(b) for b in batch]]
    assert untouched == [r for r in before if (r["WellCode"], r["ProductionDate"]) != (dup["WellCode"], dup["ProductionDate"])]
    assert "duplicate_key" not in {x["kind"] for x in state.bad_rows() if x["WellCode"] == dup["WellCode"]
                                   and x["ProductionDate"] == dup["ProductionDate"]}


def test_delete_never_removes_rows_with_null_keys(demo_server, client):
    srv = demo_server(rows=3000, bad_rows=0.01, seed=9)
    nulls = count(client, srv, "WellCode%20eq%20null%20or%20ProductionDate%20eq%20null")
    assert nulls == 10  # 5 missing_key + 5 bad_date
    r = client.request("DELETE", f"{srv.admin_url}/rows", json=[{"WellCode": "WELL_001", "ProductionDate": "2023-01-02"}])
    assert r.json() == {"deleted": 1, "rows": 2999}
    assert count(client, srv) == 2999
    assert count(client, srv, "WellCode%20eq%20null%20or%20ProductionDate%20eq%20null") == nulls
