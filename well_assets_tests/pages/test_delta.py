"""Where a delta's changes go: the page whose key range holds each key."""

from __future__ import annotations

import datetime as dt
import json

import pytest

from well_assets.odata.delta import Removed
from well_assets.pages.delta import PageLocator, place

D = dt.date
# pages 0..3: page 1 starts at (B, 2023-01-05), page 2 at (C, 2023-01-01), page 3 at (C, 2023-06-01)
MAPPED = [(0, None, True), (1, ("B", D(2023, 1, 5)), True), (2, ("C", D(2023, 1, 1)), True),
          (3, ("C", D(2023, 6, 1)), True)]


@pytest.mark.parametrize("key, page", [
    (("A", "2030-01-01"), 0),
    (("B", "2023-01-04"), 0),
    (("B", "2023-01-05"), 1),  # a lower key belongs to its page
    (("B", "2099-12-31"), 1),
    (("C", "2023-05-31"), 2),
    (("C", "2023-06-01"), 3),
    (("Z", "2023-01-01"), 3),  # past the last lower key: the open-ended last page
    (("C", "not a date"), 1),  # a date the source cannot hold sorts as null: first among its well's
    ((None, "2023-01-01"), 0),  # no well code: where OData sorts nulls
])
def test_a_key_goes_to_the_page_whose_range_holds_it(key, page):
    assert PageLocator(MAPPED).page_of(key) == page


def test_changed_records_and_removed_keys_are_staged_in_their_pages():
    changed = [{"WellCode": "C", "ProductionDate": "2023-07-01", "OilProduction": 1.5}]
    removed = [Removed(("B", "2023-01-05"), "deleted"), Removed(("A", "2023-01-01"), "changed")]
    staged = place(changed, removed, ("WellCode", "ProductionDate"), PageLocator(MAPPED))
    assert [(s.page, s.record is not None, s.well_code, s.production_date, s.reason) for s in staged] == [
        (3, True, None, None, None), (1, False, "B", "2023-01-05", "deleted"), (0, False, "A", "2023-01-01", "changed")]
    assert json.loads(staged[0].record) == changed[0]
