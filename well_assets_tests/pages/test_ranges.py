"""Key-anchored pages: how an offset read is committed, a grown last page split, and the
pages whose range changed at the source found with few counts."""

from __future__ import annotations

import datetime as dt

import pytest

from well_assets.pages.ranges import changed_pages, plan_offset_page, split, within
from well_assets.storage.contents import key_checksums
from well_assets.validation.page import validate_page


def key(well: int, day: int) -> tuple[str, str]:
    return (f"W{well:03d}", (dt.date(2024, 1, 1) + dt.timedelta(days=day)).isoformat())


def typed(raw: tuple[str, str]):
    return (raw[0], dt.date.fromisoformat(raw[1]))


def records(keys: list[tuple[str, str]]) -> list[dict]:
    return [{"WellCode": code, "ProductionDate": day, "OilProduction": 1.0, "GasProduction": 2.0,
             "WaterProduction": 3.0} for code, day in keys]


@pytest.mark.parametrize(
    ("page", "lower", "upper", "first", "following", "covered", "shifted"),
    [
        # a first import, nothing changed: the read starts at the page's start and ends at the next
        (0, None, None, key(1, 0), key(1, 10), True, False),
        (3, key(1, 30), None, key(1, 30), key(1, 40), True, False),
        # rows inserted before the page while the import ran: the read starts earlier, still covers it
        (3, key(1, 30), None, key(1, 29), key(1, 39), True, True),
        # rows deleted before the page: the read starts too late and misses the page's first rows
        (3, key(1, 30), None, key(1, 31), key(1, 41), False, True),
        # the page's end is known (the next page was read first) and the read stops short of it
        (3, key(1, 30), key(1, 40), key(1, 30), key(1, 39), False, True),
        # the last page: no key after it
        (5, key(1, 50), None, key(1, 50), None, True, False),
    ],
)
def test_plan_offset_page(page, lower, upper, first, following, covered, shifted):
    plan = plan_offset_page(page, typed(lower) if lower else None, typed(upper) if upper else None, first, following)
    assert (plan.covered, plan.shifted) == (covered, shifted)
    assert plan.lower == (typed(lower) if lower else (None if page == 0 else typed(first)))


@pytest.mark.parametrize(
    ("days", "ascending", "kept"),
    [
        pytest.param(list(range(10)), True, [3, 4, 5, 6], id="in-key-order"),
        pytest.param([3, 4, 5, 6], True, [3, 4, 5, 6], id="in-key-order-all-inside"),
        # a source that does not keep the key order: first and last row inside, one row outside
        pytest.param([3, 9, 6], False, [3, 6], id="out-of-order"),
        pytest.param([3, 4, 4, 5], False, [3, 4, 5], id="a-repeated-key"),
    ],
)
def test_within_keeps_the_rows_of_the_range_only(days, ascending, kept):
    page = validate_page(records([key(1, d) for d in days]))
    page.key_checksum = key_checksums([page.valid])[0]
    assert page.keys_ascending is ascending
    part = within(page, typed(key(1, 3)), typed(key(1, 7)))
    assert part.valid["production_date"].to_list() == [dt.date(2024, 1, 1) + dt.timedelta(days=d) for d in kept]
    # a checksum travels with the rows only while it is theirs (the ledger records it)
    assert part.key_checksum in (None, key_checksums([part.valid])[0])
    assert (part.key_checksum is not None) is (days == kept)


@pytest.mark.parametrize("at", [0, 2, 3])
def test_a_key_that_does_not_parse_counts_as_out_of_order(at):
    """Its row is a reject and cannot be placed by key: the page's rows are then filtered."""
    bad = records([key(1, d) for d in range(4)])
    bad[at]["ProductionDate"] = "2024-02-30"
    page = validate_page(bad)
    assert page.keys_ascending is False
    assert within(page, typed(key(1, 1)), None).valid.height == 3 - (at > 0)


def test_split_cuts_a_grown_last_page_at_the_given_keys():
    page = validate_page(records([key(1, d) for d in range(25)]))
    parts = split(page, typed(key(1, 0)), [key(1, 10), key(1, 20)])
    assert [(lo, hi) for lo, hi, _ in parts] == [(typed(key(1, 0)), typed(key(1, 10))),
                                                (typed(key(1, 10)), typed(key(1, 20))), (typed(key(1, 20)), None)]
    assert [part.valid.height for _, _, part in parts] == [10, 10, 5]


class Source:
    """Counts per page range, as a source would answer them, and the requests it got."""

    def __init__(self, per_page: dict[int, int], lowers: dict[int, tuple | None]):
        self.per_page, self.requests, self.batches = per_page, [], []
        # the client is given keys as the source spells them (the date as ISO text)
        self.page_of = {None if lower is None else (lower[0], lower[1].isoformat()): page
                        for page, lower in lowers.items()}

    def count_ranges(self, ranges) -> list[int]:
        self.batches.append(len(ranges))
        return [self.count_range(lower, upper) for lower, upper in ranges]

    def count_range(self, lower, upper) -> int:
        self.requests.append((lower, upper))
        first = self.page_of[lower]
        last = (self.page_of[upper] - 1) if upper is not None else max(self.per_page)
        return sum(self.per_page.get(p, 0) for p in range(first, last + 1))


def lowers_for(n: int) -> dict:
    return {p: (None if p == 0 else typed(key(p, 0))) for p in range(n)}


@pytest.mark.parametrize(
    ("pages", "changes", "expected", "requests"),
    [
        (list(range(20)), {}, [], 3),  # unchanged: one count per group of eight
        (list(range(20)), {13: -2}, [13], 3 + 8),  # one page differs: its group is counted page by page
        (list(range(20)), {0: 1, 19: -1}, [0, 19], 3 + 8 + 4),
        (list(range(20)), {4: 1, 5: -1}, [], 3),  # as many in as out within a group: left to the refresh
        ([0, 1, 2, 10, 11], {11: 5}, [11], 2 + 2),  # groups never span pages not given
    ],
)
def test_changed_pages(pages, changes, expected, requests):
    lowers = lowers_for(20)
    synced_rows = {p: 1000 for p in pages}
    source = Source({p: 1000 + changes.get(p, 0) for p in range(20)}, lowers)
    changed, count = changed_pages(pages, lowers, synced_rows, source.count_ranges)
    assert changed == expected
    assert count == requests == len(source.requests)
    assert len(source.batches) == (2 if requests > source.batches[0] else 1)  # groups, then their pages
