"""The one planner of page keys and ranges (used by the CLI, the sensor, the schedule and
the trigger)."""

from __future__ import annotations

import pytest

from well_assets.errors import PaginationError
from well_assets.pages.keys import (
    blocks,
    missing_keys,
    page_count,
    page_index,
    page_key,
    pages_to_import,
    range_problem,
    run_ranges,
)


def keys(first: int, last: int) -> list[str]:
    return [f"{k:05d}" for k in range(first, last + 1)]


def test_keys_and_indexes():
    assert (page_key(0), page_key(42), page_key(123456)) == ("00000", "00042", "123456")
    assert page_index("00042") == 42
    for bad in ("42", "0004a", "", "-0001"):
        with pytest.raises(PaginationError, match="not a page key"):
            page_index(bad)
    assert [page_count(n, 1000) for n in (0, 1, 1000, 1001, -5)] == [0, 1, 1, 2, 0]


@pytest.mark.parametrize(
    ("count", "size", "start", "most", "pages"),
    [(2500, 1000, 0, None, [0, 1, 2]), (2500, 1000, 1, 1, [1]), (3000, 1000, 2, 5, [2]), (0, 1000, 0, None, [])],
)
def test_pages_to_import(count, size, start, most, pages):
    assert pages_to_import(count, size, start, most) == pages


def test_a_start_past_the_end_is_refused():
    with pytest.raises(PaginationError, match="past the last page"):
        pages_to_import(2500, 1000, 3, None)


def test_run_ranges_cover_the_range_once_in_runs_of_at_most_n():
    assert run_ranges(0, 0, 500) == [(0, 0)]
    assert run_ranges(3, 1502, 500) == [(3, 502), (503, 1002), (1003, 1502)]
    assert run_ranges(0, 1000, 500) == [(0, 499), (500, 999), (1000, 1000)]


def test_missing_keys_are_added_in_ascending_order():
    assert missing_keys([], 3) == keys(0, 2)
    assert missing_keys(["00001", "00000"], 4) == ["00002", "00003"]
    assert missing_keys(keys(0, 9), 5) == []


def test_range_problem():
    assert range_problem(keys(0, 9), 2, 5) is None
    assert "00011 are not registered" in range_problem(keys(0, 9), 8, 11)
    out_of_order = ["00000", "00002", "00001", "00003"]
    assert "not contiguous and in ascending page order" in range_problem(out_of_order, 0, 3)
    assert range_problem(out_of_order, 3, 3) is None


@pytest.mark.parametrize(
    ("pages", "most", "expected"),
    [
        ([0, 1, 2, 5, 7, 8], 500, [(0, 2), (5, 5), (7, 8)]),
        (list(range(7)), 3, [(0, 2), (3, 5), (6, 6)]),
        ([], 3, []),
    ],
)
def test_blocks_are_the_contiguous_stretches_in_runs_of_at_most_n(pages, most, expected):
    assert blocks(pages, most) == expected
