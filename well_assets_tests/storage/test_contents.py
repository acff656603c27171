"""storage.contents: a page's key checksum computed outside the file equals the ledger's and
the table's figures for the same rows."""

import pytest

from well_assets.storage import latest_page_status, table_by_page
from well_assets.storage.contents import key_checksums
from well_assets.validation.page import validate_page
from well_assets_tests.storage_helpers import SOURCE, make_page, rec


def test_key_checksums_are_per_frame_and_zero_for_no_rows():
    one = validate_page([rec(day=d) for d in range(1, 4)]).valid
    other = validate_page([rec(code="WELL_002", day=d) for d in range(1, 4)]).valid
    both = key_checksums([one, one.head(0), other, one])
    assert both[1] == 0
    assert both[0] == both[3] != both[2]
    assert key_checksums([]) == []


@pytest.mark.parametrize("given", [True, False], ids=["checksum given", "computed by the writer"])
def test_a_synced_pages_ledger_figures_equal_the_tables_whether_given_or_computed(store, given):
    page = make_page(0, [rec(day=d) for d in range(1, 11)], mirror_deletes=True)
    if given:
        page.key_checksum = key_checksums([page.valid])[0]
    with store.connection() as con:
        store.write_page(con, page)
        row = latest_page_status(con).row(0, named=True)
        assert (row["rows_in_range"], row["key_checksum"]) == table_by_page(con, SOURCE)[0] == (
            10, key_checksums([page.valid])[0])

