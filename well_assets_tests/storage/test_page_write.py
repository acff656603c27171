"""One page's transaction (storage.page_write) against real DuckDB files: counts, lineage,
idempotency, the plain-INSERT fast path, rollback, the ledger."""

import datetime as dt

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from well_assets import errors
from well_assets.storage import (
    PageFailure,
    PageWrite,
    latest_page_status,
    load_rejects,
    load_table,
    page_log,
    page_map,
    page_write,
    table_by_page,
    table_row_count,
)
from well_assets.storage.page_write import FastInsert
from well_assets.validation.page import validate_page
from well_assets_tests.storage_helpers import SOURCE, make_page, rec


def snapshot(store):
    with store.connection(read_only=True) as con:
        return load_table(con), load_rejects(con), page_log(con)


# ------------------------------------------------------------------------- counts


def test_counts_are_exact_and_rows_land(store):
    first = [rec(day=d, oil=d) for d in range(1, 6)]
    with store.connection() as con:
        counts = store.write_page(con, make_page(0, first))
    assert (counts.new, counts.updated, counts.duplicate, counts.rejected) == (5, 0, 0, 0)
    assert counts.db_seconds > 0
    assert store.path.parent.is_dir()

    second = [
        rec(day=1, oil=1),  # unchanged
        rec(day=2, oil=20),  # changed
        rec(day=3, oil=3, water=None),  # changed (value -> NULL)
        rec(day=6, oil=6),  # new
        rec(day=6, oil=6),  # in-page duplicate
        rec(day=7, oil=-1),  # rejected
        rec(day=8, oil="n/a"),  # rejected
    ]
    with store.connection() as con:
        counts = store.write_page(con, make_page(1, second, run_id="run-2"))
        table = load_table(con)
        ledger = page_log(con)
    assert (counts.new, counts.updated, counts.duplicate, counts.rejected) == (1, 2, 2, 2)
    assert table.height == 6
    assert table.filter(pl.col("production_date") == dt.date(2023, 1, 2))["oil_production"].item() == 20.0
    assert table.filter(pl.col("production_date") == dt.date(2023, 1, 3))["water_production"].item() is None
    last = ledger.row(-1, named=True)
    assert last["status"] == "succeeded"
    assert (last["rows_new"], last["rows_updated"], last["rows_duplicate"], last["rows_rejected"]) == (1, 2, 2, 2)
    assert last["in_page_duplicates"] == 1
    assert last["rows_fetched"] == 7
    assert (last["page"], last["partition_key"], last["run_id"], last["skip"], last["top"]) == (1, "00001", "run-2", 1000, 1000)
    assert last["source"] == SOURCE and last["page_size"] == 1000
    assert last["db_seconds"] > 0 and last["ended_at"] >= last["started_at"]


def test_lineage_update_flows_through(store, monkeypatch):
    ticks = iter(dt.datetime(2026, 1, 1) + dt.timedelta(seconds=i) for i in range(100))
    monkeypatch.setattr(page_write, "utc_now", lambda: next(ticks))  # a clock that always moves on
    with store.connection() as con:
        store.write_page(con, make_page(3, [rec(day=1, oil=1), rec(day=2, oil=2)], run_id="a"))
        before = load_table(con)
        counts = store.write_page(con, make_page(4, [rec(day=1, oil=1.5), rec(day=2, oil=2)], run_id="b"))
        after = load_table(con)
    assert (counts.new, counts.updated, counts.duplicate) == (0, 1, 1)
    changed, same = after.row(0, named=True), after.row(1, named=True)
    assert changed["oil_production"] == 1.5
    assert (changed["source_page"], changed["run_id"]) == (4, "b")
    assert changed["imported_at"] == before.row(0, named=True)["imported_at"]
    assert changed["updated_at"] > before.row(0, named=True)["updated_at"]
    assert same == before.row(1, named=True)  # identical values: untouched, lineage included


def test_rerun_is_idempotent(store):
    records = [rec(day=d, oil=d) for d in range(1, 30)] + [rec(day=40, oil=-3), rec(day=41, gas="n/a")]
    with store.connection() as con:
        first = store.write_page(con, make_page(7, records, run_id="first"))
    table1, rejects1, log1 = snapshot(store)
    with store.connection() as con:
        again = store.write_page(con, make_page(7, records, run_id="second"))
    table2, rejects2, log2 = snapshot(store)

    assert (first.new, first.rejected) == (29, 2)
    assert (again.new, again.updated, again.duplicate, again.rejected) == (0, 0, 29, 2)
    assert_frame_equal(table1, table2)  # values AND lineage byte-identical
    assert rejects2.height == 2  # replaced, not duplicated
    assert set(rejects2["run_id"]) == {"second"}
    assert log2.height == log1.height + 1
    with store.connection(read_only=True) as con:
        latest = latest_page_status(con)
    assert latest.height == 1 and latest["run_id"].item() == "second"


# A stored key at the edge of the page's well codes, in the middle, or not in the page:
# only a page with a key already stored may skip the plain-INSERT fast path.
@pytest.mark.parametrize(
    "stored, expect_new, expect_updated",
    [
        pytest.param([rec("WELL_002", day=1, oil=1)], 5, 0, id="other-well-fast-path"),
        pytest.param([rec("WELL_001", day=9, oil=1)], 5, 0, id="same-well-other-day-fast-path"),
        pytest.param([rec("WELL_001", day=1, oil=99)], 4, 1, id="lowest-key-stored"),
        pytest.param([rec("WELL_003", day=2, oil=99)], 4, 1, id="highest-key-stored"),
        pytest.param([rec("WELL_002", day=3, oil=99), rec("WELL_002", day=4, oil=4)], 3, 1, id="middle-keys-stored"),
    ],
)
def test_new_key_fast_path_is_exact(store, stored, expect_new, expect_updated):
    page = [rec("WELL_001", day=1, oil=1), rec("WELL_001", day=2, oil=2), rec("WELL_002", day=3, oil=3),
            rec("WELL_002", day=4, oil=4), rec("WELL_003", day=2, oil=5)]
    with store.connection() as con:
        store.write_page(con, make_page(0, stored, run_id="before"))
        # a reject too: a restarted transaction must still write everything of the page
        counts = store.write_page(con, make_page(1, page + [rec("WELL_004", oil=-1)], run_id="after"))
        table = load_table(con)
        rejects = load_rejects(con)
        ledger = page_log(con)
    assert (counts.new, counts.updated, counts.rejected) == (expect_new, expect_updated, 1)
    assert rejects["well_code"].to_list() == ["WELL_004"]
    assert ledger.height == 2 and ledger.row(-1, named=True)["rows_new"] == expect_new
    assert counts.duplicate == 5 - expect_new - expect_updated
    assert duplicate_key_count_of(table) == 0
    for r in page:  # every page value landed, whichever statement wrote it
        row = table.filter(
            (pl.col("well_code") == r["WellCode"])
            & (pl.col("production_date") == dt.date.fromisoformat(r["ProductionDate"]))
        ).row(0, named=True)
        assert row["oil_production"] == r["OilProduction"]


def duplicate_key_count_of(table: pl.DataFrame) -> int:
    return table.height - table.unique(subset=["well_code", "production_date"]).height


def test_fast_insert_backs_off_after_each_refusal_and_recovers_on_success():
    fast = FastInsert()

    def attempts(n: int) -> list[bool]:
        """What the writer does on the next n pages: try the plain INSERT or not."""
        out = []
        for _ in range(n):
            tried = fast.wanted()
            out.append(tried)
            if tried:
                fast.found(keys_stored=True)  # a re-import: every attempt is refused
        return out

    # refused -> skip 1, refused -> skip 2, refused -> skip 4, ...
    assert attempts(10) == [True, False, True, False, False, True, False, False, False, False]
    fast.found(keys_stored=False)  # a new page went in: back to trying every page
    assert [fast.wanted() for _ in range(3)] == [True, True, True]


def test_pages_count_right_whether_the_plain_insert_is_tried_or_not(store):
    pages = [[rec("WELL_%03d" % p, day=d, oil=d) for d in range(1, 4)] for p in range(8)]
    with store.connection() as con:
        for i, records in enumerate(pages[:4]):
            assert store.write_page(con, make_page(i, records)).new == 3
        for i, records in enumerate(pages[:4]):  # a re-import: refused or skipped attempts
            counts = store.write_page(con, make_page(i, records, run_id="again"))
            assert (counts.new, counts.duplicate) == (0, 3)
        for i, records in enumerate(pages[4:], start=4):  # new pages while attempts are skipped
            assert store.write_page(con, make_page(i, records)).new == 3
        assert table_row_count(con) == 24


def test_a_write_without_a_range_never_deletes(store):
    with store.connection() as con:
        store.write_page(con, make_page(0, [rec(day=d) for d in range(1, 11)]))
        store.write_page(con, make_page(0, [rec(day=d) for d in range(5, 8)]))  # no range: no mirror
        assert table_row_count(con) == 10


def day(d: int) -> tuple[str, dt.date]:
    return ("WELL_001", dt.date(2023, 1, 1) + dt.timedelta(days=d - 1))


def test_a_range_sync_mirrors_deletions_into_the_archive_and_keeps_other_ranges(store):
    with store.connection() as con:
        store.write_page(con, make_page(0, [rec(day=d) for d in range(1, 6)], upper=day(6), next_lower=day(6),
                                        mirror_deletes=True))
        store.write_page(con, make_page(1, [rec(day=d) for d in range(6, 11)], lower=day(6), mirror_deletes=True))
        # page 0's range now lacks days 2 and 4; page 1's range is untouched
        counts = store.write_page(con, make_page(0, [rec(day=d) for d in (1, 3, 5)], run_id="sync", upper=day(6),
                                                 mirror_deletes=True))
        assert (counts.new, counts.duplicate, counts.deleted) == (0, 3, 2)
        assert table_row_count(con) == 8
        archived = con.execute("select well_code, production_date, oil_production, page, run_id "
                               "from well_production_deleted order by production_date").fetchall()
        assert archived == [(*day(2), 1.0, 0, "sync"), (*day(4), 1.0, 0, "sync")]
        assert page_map(con, SOURCE) == [(0, None, True), (1, day(6), True)]
        assert table_by_page(con, SOURCE) == {0: (3, table_by_page(con, SOURCE)[0][1]), 1: (5, table_by_page(con, SOURCE)[1][1])}
        row = latest_page_status(con).row(0, named=True)
        assert (row["rows_deleted"], row["rows_in_range"], row["upper_key"]) == (2, 3, "WELL_001|2023-01-06")


def test_a_sync_that_would_delete_too_much_fails_and_writes_nothing(store):
    with store.connection() as con:
        store.write_page(con, make_page(0, [rec(day=d) for d in range(1, 11)], mirror_deletes=True))
        before = load_table(con)
        with pytest.raises(errors.DeleteGuardError, match="would delete 10 of the 10 rows.*ODATA_MAX_DELETE_FRACTION=0.5"):
            store.write_page(con, make_page(0, [], run_id="glitch", mirror_deletes=True, max_delete_fraction=0.5))
        assert load_table(con).equals(before)
        assert con.execute("select count(*) from well_production_deleted").fetchone()[0] == 0
        # a sync that deletes a share within the limit goes through
        counts = store.write_page(con, make_page(0, [rec(day=d) for d in range(1, 7)], mirror_deletes=True,
                                                 max_delete_fraction=0.5))
        assert counts.deleted == 4 and table_row_count(con) == 6


def test_a_page_lower_key_is_set_once(store):
    with store.connection() as con:
        store.write_page(con, make_page(1, [rec(day=d) for d in range(6, 9)], lower=day(6), next_lower=day(9),
                                        mirror_deletes=True))
        store.write_page(con, make_page(1, [rec(day=d) for d in range(6, 9)], lower=day(6), next_lower=day(8),
                                        mirror_deletes=True))
        assert page_map(con, SOURCE) == [(1, day(6), True), (2, day(9), False)]


def test_a_writer_that_knows_the_map_adds_its_rows_and_a_wrong_belief_fails_the_page_whole(store):
    """The IO manager knows the page map (map_known): its rows go in without the set-once
    guard. Should it believe a mapped page unmapped, the map's key refuses the page, which
    is rolled back whole, rather than a lower key being moved or silently kept."""
    with store.connection() as con:
        store.write_page(con, make_page(0, [rec(day=d) for d in range(1, 6)], upper=day(6), next_lower=day(6),
                                        mirror_deletes=True, map_known=True))
        store.write_page(con, make_page(1, [rec(day=d) for d in range(6, 9)], lower=day(6), next_lower=day(9),
                                        mirror_deletes=True, map_known=True, lower_recorded=True))
        assert page_map(con, SOURCE) == [(0, None, True), (1, day(6), True), (2, day(9), False)]
        before, ledger = load_table(con), page_log(con).height
        with pytest.raises(errors.DatabaseError, match="page 1: write failed and was rolled back"):
            store.write_page(con, make_page(1, [rec(day=d) for d in range(6, 10)], lower=day(6), next_lower=day(10),
                                            run_id="wrong", mirror_deletes=True, map_known=True, lower_recorded=True))
        assert load_table(con).equals(before) and page_log(con).height == ledger
        assert page_map(con, SOURCE) == [(0, None, True), (1, day(6), True), (2, day(9), False)]


def test_reject_seen_again_on_another_page_is_not_duplicated(store):
    bad = rec(day=9, oil=-1)
    with store.connection() as con:
        store.write_page(con, make_page(5, [rec(day=1), bad]))
        store.write_page(con, make_page(6, [bad, rec(day=2)]))
        rejects = load_rejects(con)
    assert rejects.height == 1
    r = rejects.row(0, named=True)
    assert r["page"] == 6
    assert (r["column_name"], r["check_name"], r["value"]) == ("oil_production", "greater_than_or_equal_to(0)", "-1")
    assert r["well_code"] == "WELL_001" and r["production_date"] == "2023-01-09"


def test_empty_page_writes_a_ledger_row(store):
    with store.connection() as con:
        counts = store.write_page(con, make_page(12, []))
        latest = latest_page_status(con)
    assert (counts.new, counts.updated, counts.duplicate, counts.rejected) == (0, 0, 0, 0)
    assert latest.row(0, named=True)["status"] == "succeeded"
    assert latest.row(0, named=True)["rows_fetched"] == 0


def test_column_order_of_the_frame_does_not_matter(store):
    w = make_page(0, [rec(day=1, oil=1, gas=2, water=3)])
    w.valid = w.valid.select(list(reversed(w.valid.columns)))
    with store.connection() as con:
        store.write_page(con, w)
        row = load_table(con).row(0, named=True)
    assert (row["oil_production"], row["gas_production"], row["water_production"]) == (1.0, 2.0, 3.0)


# -------------------------------------------------------------------- rollback


def test_crash_after_upsert_leaves_nothing_of_the_page(store, monkeypatch):
    with store.connection() as con:
        store.write_page(con, make_page(0, [rec(day=1, oil=1)]))
    before = snapshot(store)

    def boom(con, row):
        raise RuntimeError("injected crash before commit")

    monkeypatch.setattr(page_write, "_insert_ledger", boom)
    with store.connection() as con:
        with pytest.raises(errors.DatabaseError) as info:
            store.write_page(con, make_page(1, [rec(day=1, oil=9), rec(day=2), rec(day=3, oil=-1)]))
        # the connection is usable afterwards (the transaction was rolled back)
        assert table_row_count(con) == 1
    assert "page 1" in str(info.value) and info.value.details["page"] == 1
    assert info.value.to_dict()["error"]["code"] == "DATABASE_ERROR"
    after = snapshot(store)
    for a, b in zip(before, after):
        assert_frame_equal(a, b)


def test_failing_reject_frame_rolls_back_the_upsert(store):
    w = make_page(0, [rec(day=1), rec(day=2, oil=-1)])
    w.rejects = w.rejects.drop("raw_record")  # fails after the rows were upserted
    with store.connection() as con:
        with pytest.raises(errors.DatabaseError, match="page 0"):
            store.write_page(con, w)
        assert table_row_count(con) == 0
        assert page_log(con).height == 0
        assert load_rejects(con).height == 0


def test_duplicate_keys_in_valid_frame_are_refused(store):
    w = make_page(0, [rec(day=1)])
    w.valid = pl.concat([w.valid, w.valid])
    with store.connection() as con:
        with pytest.raises(errors.DatabaseError, match="duplicate keys"):
            store.write_page(con, w)
        assert table_row_count(con) == 0


# ----------------------------------------------------------------- ledger


def test_record_failure_and_latest_status(store):
    with store.connection() as con:
        store.write_page(con, make_page(0, [rec(day=1)]))
        store.record_failure(
            con,
            PageFailure(page=1, partition_key="00001", run_id="r", error="HTTP 503 after 5 retries", skip=1000, top=1000, source=SOURCE, page_size=1000, retries=5),
        )
        latest = latest_page_status(con)
        assert latest["page"].to_list() == [0, 1]
        assert latest["status"].to_list() == ["succeeded", "failed"]
        failed = latest.row(1, named=True)
        assert failed["error"] == "HTTP 503 after 5 retries" and failed["retries"] == 5
        # the retried page succeeds: its latest row is now the success, history kept
        store.write_page(con, make_page(1, [rec(day=2)], run_id="r2"))
        latest = latest_page_status(con)
        assert latest["status"].to_list() == ["succeeded", "succeeded"]
        assert page_log(con).filter(pl.col("page") == 1)["status"].to_list() == ["failed", "succeeded"]
        assert latest_page_status(con, source="other").height == 0


def test_every_figure_of_a_page_reaches_the_ledger(store):
    records = [rec(day=1), rec(day=2, oil="n/a")]
    validated = validate_page(records)
    w = PageWrite(
        page=3, partition_key="00003", run_id="r", valid=validated.valid, rejects=validated.rejects,
        skip=3000, top=1000, source=SOURCE, page_size=1000, rows_fetched=2, source_count=99, bytes=1234,
        fetch_seconds=0.5, throttle_seconds=0.25, retries=1, cache_hit=True,
        first_key=("WELL_001", "2023-01-01"), last_key=("WELL_001", "2023-01-02"),
    )
    with store.connection() as con:
        store.write_page(con, w)
        row = page_log(con).row(0, named=True)
    assert (row["page"], row["skip"], row["rows_fetched"], row["source_count"], row["bytes"]) == (3, 3000, 2, 99, 1234)
    assert (row["fetch_seconds"], row["throttle_seconds"], row["retries"], row["cache_hit"]) == (0.5, 0.25, 1, True)
    assert (row["first_key"], row["last_key"]) == ("WELL_001|2023-01-01", "WELL_001|2023-01-02")
    assert (row["rows_new"], row["rows_rejected"]) == (1, 1)


def test_the_largest_stored_key_tells_which_ranges_hold_nothing(store):
    fast = FastInsert()
    day = dt.date(2023, 1, 1)
    with store.connection() as con:
        assert fast.nothing_stored_from(con, None)  # an empty table
        store.write_page(con, make_page(0, [rec("WELL_002", day=d) for d in range(1, 4)]))
        assert not FastInsert().nothing_stored_from(con, None)  # read from the table
        fast.committed(validate_page([rec("WELL_002", day=3)]).valid)
        assert fast.nothing_stored_from(con, ("WELL_002", day + dt.timedelta(days=3)))
        assert not fast.nothing_stored_from(con, ("WELL_002", day + dt.timedelta(days=2)))
        assert not fast.nothing_stored_from(con, ("WELL_001", day))
