"""Several pages in flight (ODATA_CONCURRENCY) against the bundled service over loopback:
the service's own request log shows the overlap; congestion lowers it; every page is
fetched once and lands exactly; a page failing among others in flight fails alone."""

from __future__ import annotations

import pytest

from well_assets_tests.expected import expected_table, query, stored_table

LATENCY = 0.3


def _page_reads(server) -> list[dict]:
    """The service's log of page reads (not the $top=0 counts), in arrival order."""
    return [r for r in server.state.stats.recent_requests()
            if r.get("endpoint") == "collection" and "$top=0" not in r["query"].split("&")]


def _most_in_flight(requests: list[dict]) -> int:
    """The most requests the service was answering at one moment."""
    events = sorted([(r["started"], 1) for r in requests] + [(r["ended"], -1) for r in requests],
                    key=lambda e: (e[0], e[1]))  # an end before a start at the same instant
    most = current = 0
    for _, step in events:
        current += step
        most = max(most, current)
    return most


@pytest.mark.parametrize("concurrency", [1, 4, 8])
def test_up_to_n_page_reads_are_in_flight_at_once_and_every_page_lands_once(demo_server, run_import, db_path,
                                                                            concurrency):
    server = demo_server(rows=6000, bad_rows=0.0, faults=[{"kind": "latency", "seconds": LATENCY}])
    server.state.stats.reset()
    summary = run_import(server, page_size=250, concurrency=concurrency)
    assert summary["success"] and stored_table(db_path) == expected_table(server)
    reads = _page_reads(server)
    # 24 pages of 0.3 s each: one at a time, or `concurrency` at once, never more.
    assert _most_in_flight(reads) == concurrency
    skips = sorted(r["skip"] or 0 for r in reads)
    assert skips == [250 * page for page in range(24)]  # no page read twice
    assert query(db_path, "select count(*), count(distinct page) from odata_page_log where status = 'succeeded'") == [
        (24, 24)]


@pytest.mark.parametrize("status", [429, 503])
def test_congestion_halves_the_reads_in_flight(demo_server, run_import, db_path, status):
    # The fourth page read is refused once: by then eight reads are in flight.
    server = demo_server(rows=10_000, bad_rows=0.0, faults=[
        {"kind": "latency", "seconds": LATENCY},
        {"kind": "status", "status": status, "skip": [750], "times": 1, "retry_after": 0},
    ])
    server.state.stats.reset()
    summary = run_import(server, page_size=250, concurrency=8)
    assert summary["success"] and stored_table(db_path) == expected_table(server)
    reads = _page_reads(server)
    refused = [r for r in reads if r["status"] == status]
    assert len(refused) == 1
    answered = refused[0]["ended"]
    before = [r for r in reads if r["started"] < refused[0]["started"] + LATENCY / 2]
    # Reads started once the client has seen the refusal and the reads in flight with it
    # have ended, before successes can have raised the limit again.
    after = [r for r in reads if answered + LATENCY + 0.1 < r["started"] < answered + 2 * LATENCY + 0.1]
    assert _most_in_flight(before) == 8
    assert after and _most_in_flight(after) <= 4
    assert sorted(r["skip"] or 0 for r in reads if r["status"] == 200) == [250 * page for page in range(40)]


def test_a_page_failing_among_pages_in_flight_fails_alone(demo_server, run_import, db_path):
    server = demo_server(rows=5000, bad_rows=0.0, faults=[
        {"kind": "latency", "seconds": 0.1},
        {"kind": "status", "status": 400, "skip": [2500], "code": "Broken", "message": "page ten"},
    ])
    summary = run_import(server, page_size=250, concurrency=8)
    assert summary["success"] is False
    assert [p["partition_key"] for p in summary["data"]["failed_page_list"]] == ["00010"]
    statuses = query(db_path, "select page, status from odata_page_log order by page")
    assert statuses == [(page, "failed" if page == 10 else "succeeded") for page in range(20)]
    expected = expected_table(server)
    page_ten = sorted(expected)[2500:2750]
    assert stored_table(db_path) == {key: value for key, value in expected.items() if key not in page_ten}
