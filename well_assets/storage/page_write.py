"""One page's transaction: the write steps of ``DuckDBStore.write_page``.

One page = ONE transaction: classify the page's valid rows against the table (new /
changed / identical), insert the new rows, update the changed rows, replace the page's
rejects, append a ledger row. On any failure the transaction is rolled back and
``errors.DatabaseError`` names the page. Rows are never deleted because a page was
re-run (offset pages shift when the source changes); rows with identical values are
not touched at all, lineage included, so a re-import leaves the table byte-identical.

The steps are module functions so tests can inject a failure by patching one.

DuckDB 2.0 notes (checked on 2.0.1): a result of ``con.execute`` that was not read to
its end blocks ``register``/``sql`` on that connection ("unfinished result"), so every
statement here is finished with ``fetchall()``.
"""

import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date
from typing import Any

import duckdb
import polars as pl

from well_assets import errors
from well_assets.storage import sql
from well_assets.storage.records import (
    FIGURE_FIELDS,
    DeleteGuardError,
    Key,
    PageCounts,
    PageFailure,
    PageWrite,
    key_text,
    utc_now,
)
from well_assets.validation.columns import COLUMNS, KEY, REJECT_COLUMNS, has_duplicate_keys

_VALID_SCHEMA = pl.Schema(COLUMNS)
_REJECTS_SCHEMA = pl.Schema(REJECT_COLUMNS)


def fetch_all(con: duckdb.DuckDBPyConnection, statement: str, params: dict | None = None) -> list:
    """Run one statement and read its result to the end (see the DuckDB 2.0 note)."""
    return con.execute(statement, params or {}).fetchall()



def _prepare_valid(frame: pl.DataFrame) -> pl.DataFrame:
    """Fixed column order and dtypes (never insert by position blindly)."""
    if frame.schema != _VALID_SCHEMA:  # other order or dtypes: select by name and cast
        frame = frame.select([pl.col(c).cast(t, strict=True) for c, t in COLUMNS.items()])
    return frame


def _refuse_duplicate_keys(frame: pl.DataFrame) -> None:
    """validate_page removes in-page duplicates; a frame that still has some is refused,
    because DuckDB's upsert would keep an arbitrary one of them. (The plain INSERT needs
    no such check: the primary key refuses duplicates within the page as well.)"""
    if has_duplicate_keys(frame):
        raise ValueError("valid rows contain duplicate keys (validate_page removes them)")


def _prepare_rejects(frame: pl.DataFrame | None) -> pl.DataFrame | None:
    if frame is None or frame.height == 0:
        return None
    if frame.schema == _REJECTS_SCHEMA:
        return frame
    return frame.select([pl.col(c).cast(t, strict=True) for c, t in REJECT_COLUMNS.items()])


def _upsert_rows(con: duckdb.DuckDBPyConnection, valid: pl.DataFrame, rows: Any, params: dict,
                 fast: "FastInsert") -> tuple[int, int, int]:
    """-> (new, updated, unchanged), with one set-based statement over the page's rows
    (``rows``, registered as sql.PAGE_VALID_VIEW).

    A page none of whose keys is stored yet (a first import) is written with a plain
    INSERT (sql.INSERT_NEW_PAGE); if the primary key refuses it, that failed statement has
    aborted the transaction, which held nothing yet (it is the page's first statement), so
    the transaction is started again, the rows registered again and the page upserted."""
    if valid.height == 0:
        return 0, 0, 0
    if fast.wanted():
        try:
            fetch_all(con, sql.INSERT_NEW_PAGE, params)
        except duckdb.ConstraintException:
            fast.found(keys_stored=True)
            rollback(con)  # which drops the registration too: it is a temporary view
            con.execute("BEGIN TRANSACTION").fetchall()
            con.register(sql.PAGE_VALID_VIEW, rows)
        else:
            fast.found(keys_stored=False)
            return valid.height, 0, 0
    _refuse_duplicate_keys(valid)
    written = con.execute(sql.UPSERT_PAGE, params).fetchall()
    new = sum(1 for (is_new,) in written if is_new)
    updated = len(written) - new
    return new, updated, valid.height - new - updated


@contextmanager
def registered(con: duckdb.DuckDBPyConnection, name: str, rows: Any, keep: bool = False) -> Iterator[None]:
    """``rows`` visible to SQL as ``name`` for the block. On an error the transaction is
    rolled back first: a failed statement aborts it, and an aborted transaction refuses
    ``unregister`` (which would hide the statement's own error). ``keep``: after a block
    that succeeded the name stays registered until the next registration under it replaces
    it (each page's write registers its rows under the same name: unregistering costs a
    statement a page)."""
    con.register(name, rows)
    try:
        yield
    except BaseException:
        rollback(con)
        con.unregister(name)
        raise
    if not keep:
        con.unregister(name)


class FastInsert:
    """The writer's knowledge of what is stored: whether to try the plain INSERT of a new
    page (see ``_upsert_rows``), and the largest stored key (``nothing_stored_from``).

    A refused attempt costs a fraction of an upsert but is refused on every page of a
    re-import: after a refusal the next attempts are skipped, 1, 2, 4 ... up to 64 pages,
    until an attempt succeeds again."""

    MAX_SKIP = 64

    def __init__(self) -> None:
        self._skip = 0
        self._backoff = 0
        self._largest: Key | None = None  # the largest key stored, as this writer knows it
        self._largest_known = False

    def nothing_stored_from(self, con: duckdb.DuckDBPyConnection, lower: Key | None) -> bool:
        """True when no stored key is >= ``lower`` (None: the first key): a page whose range
        starts there holds no stored rows, so none can be stale. A first import commits its
        pages in key order, so every page of it skips the scan for stale rows. The largest
        key is read once per writer (the ``duckdb`` pool keeps other writers out) and
        raised as pages commit; deletions leave it high, which only costs a scan."""
        if not self._largest_known:
            row = fetch_all(con, sql.LARGEST_KEY)
            self._largest, self._largest_known = (row[0][0], row[0][1]) if row else None, True
        return self._largest is None or (lower is not None and self._largest < lower)

    def committed(self, valid: pl.DataFrame) -> None:
        """A page's rows were committed: the largest stored key is at least theirs."""
        if valid.height and self._largest_known:
            wells = valid.get_column(KEY[0])
            well = wells.max()
            day = valid.get_column(KEY[1]).filter(wells == well).max()  # Series ops: no query plan
            if self._largest is None or (well, day) > self._largest:
                self._largest = (well, day)

    def wanted(self) -> bool:
        if self._skip:
            self._skip -= 1
            return False
        return True

    def found(self, keys_stored: bool) -> None:
        if keys_stored:
            self._backoff = min(max(self._backoff * 2, 1), self.MAX_SKIP)
            self._skip = self._backoff
        else:
            self._backoff = 0


def _replace_rejects(con: duckdb.DuckDBPyConnection, rejects: pl.DataFrame | None, params: dict) -> int:
    rejects = _prepare_rejects(rejects)
    if rejects is None:
        return 0
    with registered(con, sql.PAGE_REJECTS_VIEW, rejects.to_arrow()):
        fetch_all(con, sql.DELETE_SEEN_REJECTS)
        fetch_all(con, sql.INSERT_REJECTS, params)
    return rejects.height


def _insert_ledger(con: duckdb.DuckDBPyConnection, row: dict[str, Any], statement: str = sql.INSERT_LEDGER_ROW,
                   extra: dict[str, Any] | None = None) -> None:
    fetch_all(con, statement, {**{c: row.get(c) for c in sql.LEDGER_COLUMNS}, **(extra or {})})


def rollback(con: duckdb.DuckDBPyConnection) -> None:
    try:
        con.execute("ROLLBACK").fetchall()
    except duckdb.Error:  # no transaction active (BEGIN itself failed)
        pass


def range_params(lower: Key | None, upper: Key | None) -> dict[str, Any]:
    """The bound parameters of sql.IN_RANGE for [lower, upper)."""
    return {"lo_well": lower[0] if lower else None, "lo_date": lower[1] if lower else None,
            "hi_well": upper[0] if upper else None, "hi_date": upper[1] if upper else None}


def _mirror_deletes(con: duckdb.DuckDBPyConnection, page: PageWrite, params: dict, new: int) -> int:
    """Deletes (and archives) the range's stored rows the page no longer has (the page's
    keys are registered as sql.PAGE_VALID_VIEW); refuses when that is more than the page's
    max_delete_fraction of what the range held before the page (``new`` rows of the page
    were not stored then)."""
    bounds = range_params(page.lower, page.upper)
    stale = int(fetch_all(con, sql.COUNT_STALE, bounds)[0][0])
    # The range's size is only needed when something would be deleted (rarely): the
    # common page pays one scan of its range, not two.
    stored_before = int(fetch_all(con, sql.RANGE_CONTENTS, bounds)[0][0]) - new if stale else 0
    if stale and stale > page.max_delete_fraction * stored_before:
        raise DeleteGuardError(
            f"page {page.partition_key} would delete {stale} of the {stored_before} rows stored in its key "
            f"range, more than ODATA_MAX_DELETE_FRACTION={page.max_delete_fraction:g} of them; nothing was "
            "deleted (a glitch at the source? if the rows really are gone, raise the setting and sync again)")
    if stale:
        fetch_all(con, sql.ARCHIVE_STALE, {**bounds, **params})
        fetch_all(con, sql.DELETE_STALE, bounds)
    return stale


def _counted_by_range(lower: Key | None, upper: Key | None, well_code: str | None, day_text: str | None) -> bool:
    """Whether the source's count of [lower, upper) counts a record with these raw key
    values: the range's $filter compares the key lexicographically with null first, as
    OData orders it (a date the source cannot hold as one counts as null)."""
    try:
        day = date.fromisoformat(day_text) if day_text else None
    except ValueError:
        day = None

    def after(bound: Key) -> bool:
        return well_code is not None and (
            well_code > bound[0] or (well_code == bound[0] and day is not None and day >= bound[1]))

    def before(bound: Key) -> bool:
        return well_code is None or well_code < bound[0] or (well_code == bound[0] and (day is None or day < bound[1]))

    return (lower is None or after(lower)) and (upper is None or before(upper))


def source_rows(page: PageWrite, valid_rows: int) -> int:
    """The records the source's count of the page's range gives: its valid rows, their
    in-page duplicates and the rejects the range's $filter matches."""
    rejects = page.rejects
    matched = sum(_counted_by_range(page.lower, page.upper, code, day) for code, day in
                  zip(rejects["well_code"].to_list(), rejects["production_date"].to_list())) if rejects is not None and rejects.height else 0
    return valid_rows + page.in_page_duplicates + matched


def _syncs_range(page: PageWrite) -> bool:
    """Whether the write syncs the page's key range (the page map and the ledger's
    source_rows record it)."""
    return page.source is not None and page.mirror_deletes


def _record_lowers(con: duckdb.DuckDBPyConnection, page: PageWrite, now) -> None:
    """The page map: this page's lower key (kept if known) and the next page's (if given
    and unknown). A caller that knows the map (``map_known``) has its rows inserted as
    they are, else only where the map has none yet (the set-once guard, a statement's
    cost more)."""
    statement = sql.INSERT_PAGE_LOWER if page.map_known else sql.SET_PAGE_LOWER
    for number, lower, recorded in ((page.page, page.lower, page.lower_recorded),
                                    (page.page + 1, page.next_lower, page.next_lower is None or page.next_lower_recorded)):
        if not recorded:
            fetch_all(con, statement, {"source": page.source, "page": number, "now": now,
                                       "lower_well": lower[0] if lower else None,
                                       "lower_date": lower[1] if lower else None})


_GONE_SCHEMA = {KEY[0]: pl.Utf8, KEY[1]: pl.Date, "removed": pl.Boolean}


def _apply_delta_page(con: duckdb.DuckDBPyConnection, page: PageWrite, params: dict, new: int) -> tuple[int, int | None]:
    """The rest of a page of delta changes, after its rows were upserted: the stored rows of
    its gone keys deleted (kept in well_production_deleted), its changes unstaged, and the
    delta link moved on if no staged change is left. -> (rows deleted, the source's count of
    the page's range now: the last sync's plus the records the delta added, minus the ones
    it removed; None when the page was never synced)."""
    gone = pl.DataFrame([(key[0], key[1], removed) for key, removed in page.gone or []], schema=_GONE_SCHEMA,
                        orient="row")
    deleted = removed_known = rejected_unknown = 0
    if gone.height:
        with registered(con, sql.PAGE_GONE_VIEW, gone.to_arrow()):
            removed_known, rejected_unknown = fetch_all(con, sql.GONE_FIGURES)[0]
            fetch_all(con, sql.ARCHIVE_GONE, params)
            deleted = len(fetch_all(con, sql.DELETE_GONE))
    where = {"source": page.source, "page": page.page}
    before = fetch_all(con, sql.LAST_SOURCE_ROWS, where)[0][0]
    fetch_all(con, sql.UNSTAGE_PAGE, where)
    fetch_all(con, sql.ADVANCE_DELTA_LINK, {"source": page.source, "now": params["now"]})
    return deleted, None if before is None else int(before) + new + int(rejected_unknown) - int(removed_known)


def write_page(con: duckdb.DuckDBPyConnection, page: PageWrite, fast: FastInsert) -> PageCounts:
    """Store one page in ONE transaction; see the module docstring. Must be called
    outside a transaction; ``fast`` is the writer's FastInsert state. Raises
    errors.DatabaseError (rolled back) on failure, errors.DeleteGuardError when the page
    would delete too much (nothing written)."""
    started = time.perf_counter()
    now = utc_now()
    params = {"page": page.page, "run_id": page.run_id, "now": now}
    bounds = range_params(page.lower, page.upper)
    try:
        valid = _prepare_valid(page.valid)
        con.execute("BEGIN TRANSACTION").fetchall()
        # Registered once for the whole transaction: the upsert, the stale-row check and
        # the range's figures all read the page's rows from it.
        # Arrow's string views, as Polars holds the strings: no copy into large strings.
        rows = valid.to_arrow(compat_level=pl.CompatLevel.newest())
        with registered(con, sql.PAGE_VALID_VIEW, rows, keep=True):
            new, updated, unchanged = _upsert_rows(con, valid, rows, params, fast)
            deleted = 0
            if page.mirror_deletes and not fast.nothing_stored_from(con, page.lower):
                deleted = _mirror_deletes(con, page, params, new)
            rejected = _replace_rejects(con, page.rejects, params)
            syncs = _syncs_range(page)
            if syncs:
                _record_lowers(con, page, now)
            if page.gone is not None:
                deleted, synced_rows = _apply_delta_page(con, page, params, new)
            else:
                synced_rows = source_rows(page, valid.height) if syncs else None
            rows_fetched = page.rows_fetched
            if rows_fetched is None:
                rows_fetched = valid.height + rejected + page.in_page_duplicates
            # The ledger row carries the range's figures after the page: the page's own rows
            # when it mirrors deletes (the range then holds exactly them), else the table's.
            _insert_ledger(
                con,
                {
                    **_figures(page),
                    "status": "succeeded",
                    "rows_fetched": rows_fetched,
                    "rows_new": new,
                    "rows_updated": updated,
                    "rows_duplicate": unchanged + page.in_page_duplicates,
                    "rows_rejected": rejected,
                    "rows_deleted": deleted,
                    "in_page_duplicates": page.in_page_duplicates,
                    "lower_key": key_text(page.lower),
                    "upper_key": key_text(page.upper),
                    "source_rows": synced_rows,
                    "db_seconds": time.perf_counter() - started,
                    "ended_at": utc_now(),
                },
                *_ledger_contents(page, valid.height, bounds),
            )
            con.execute("COMMIT").fetchall()
        fast.committed(valid)
    except DeleteGuardError as exc:
        rollback(con)
        raise errors.DeleteGuardError(str(exc), page=page.page, partition_key=page.partition_key) from None
    except Exception as exc:
        rollback(con)
        raise errors.DatabaseError(
            f"page {page.page}: write failed and was rolled back: {type(exc).__name__}: {exc}",
            page=page.page,
            partition_key=page.partition_key,
        ) from exc
    return PageCounts(
        new=new,
        updated=updated,
        duplicate=unchanged + page.in_page_duplicates,
        rejected=rejected,
        db_seconds=time.perf_counter() - started,
        deleted=deleted,
    )


def _ledger_contents(page: PageWrite, rows: int, bounds: dict) -> tuple[str, dict | None]:
    """The ledger statement of a successful page, with how its range's figures are had:
    given (computed with the page's validation), from the page's rows, or from the table."""
    if not page.mirror_deletes:
        return sql.INSERT_LEDGER_ROW_RANGE_CONTENTS, bounds
    if page.key_checksum is None:
        return sql.INSERT_LEDGER_ROW_PAGE_CONTENTS, None
    return sql.INSERT_LEDGER_ROW_GIVEN_CONTENTS, {"rows_in_range": rows, "key_checksum": page.key_checksum}


def record_failure(con: duckdb.DuckDBPyConnection, page: PageFailure) -> None:
    """Append a ``failed`` ledger row for ``page`` (its own implicit transaction)."""
    row = {
        **_figures(page),
        "status": "failed",
        "rows_fetched": page.rows_fetched,
        "db_seconds": page.db_seconds,
        "error": page.error,
        "ended_at": utc_now(),
    }
    try:
        _insert_ledger(con, row)
    except duckdb.Error as exc:
        raise errors.DatabaseError(
            f"page {page.page}: could not record the failure: {exc}", page=page.page
        ) from exc


def _figures(page: PageWrite | PageFailure) -> dict[str, Any]:
    """Ledger fields shared by successes and failures."""
    row = {name: getattr(page, name) for name in FIGURE_FIELDS}
    row.update(first_key=key_text(page.first_key), last_key=key_text(page.last_key),
               started_at=page.started_at or utc_now())
    return row
