"""DuckDBStore: the plain-Python (no Dagster) storage of well production pages.

One page = ONE transaction: classify the page's valid rows against the table (new /
changed / identical), insert the new rows, update the changed rows, replace the page's
rejects, append a ledger row. On any failure the transaction is rolled back and
``errors.DatabaseError`` names the page. Rows are never deleted because a page was
re-run (offset pages shift when the source changes); rows with identical values are
not touched at all, lineage included, so a re-import leaves the table byte-identical.

DuckDB 2.0 notes (checked on 2.0.1): a result of ``con.execute`` that was not read to
its end blocks ``register``/``sql`` on that connection ("unfinished result"), so every
statement here is finished with ``fetchall()``; frames are read with
``con.sql(...).pl()``.
"""

import logging
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import duckdb
import polars as pl

from well_assets import errors
from well_assets.schema import COLUMNS, KEY, REJECT_COLUMNS
from well_assets.storage import sql
from well_assets.storage.reads import (
    duplicate_key_count,
    latest_page_status,
    load_rejects,
    load_table,
    page_log,
    pages_succeeded_in_runs,
    schema_violation_count,
    table_row_count,
)
from well_assets.storage.records import PageCounts, PageFailure, PageWrite, key_text, source_identity, utc_now

log = logging.getLogger(__name__)

DATABASE_SETTING = "WELLS_DATABASE"
PAGE_SIZE_SETTING = "ODATA_PAGE_SIZE"
DEFAULT_LOCK_TIMEOUT = 120.0
_LOCK_MESSAGE = "Could not set lock on file"
_VALID_SCHEMA = pl.Schema(COLUMNS)
_REJECTS_SCHEMA = pl.Schema(REJECT_COLUMNS)


# ------------------------------------------------------------------- write steps
# Module-level steps of one page's transaction (tests inject failures by patching one).


def _run(con: duckdb.DuckDBPyConnection, statement: str, params: dict | None = None) -> list:
    return con.execute(statement, params or {}).fetchall()


def _scalar(con: duckdb.DuckDBPyConnection, statement: str, params: dict | None = None) -> Any:
    return _run(con, statement, params)[0][0]


def _prepare_valid(frame: pl.DataFrame) -> pl.DataFrame:
    """Fixed column order and dtypes (never insert by position blindly)."""
    if frame.schema != _VALID_SCHEMA:  # other order or dtypes: select by name and cast
        frame = frame.select([pl.col(c).cast(t, strict=True) for c, t in COLUMNS.items()])
    return frame


def _refuse_duplicate_keys(frame: pl.DataFrame) -> None:
    """validate_page removes in-page duplicates; a frame that still has some is refused,
    because DuckDB's upsert would keep an arbitrary one of them. (The plain INSERT needs
    no such check: the primary key refuses duplicates within the page as well.)"""
    if frame.height > 1 and frame.select(KEY).is_duplicated().any():
        raise ValueError("valid rows contain duplicate keys (validate_page removes them)")


def _prepare_rejects(frame: pl.DataFrame | None) -> pl.DataFrame | None:
    if frame is None or frame.height == 0:
        return None
    if frame.schema == _REJECTS_SCHEMA:
        return frame
    return frame.select([pl.col(c).cast(t, strict=True) for c, t in REJECT_COLUMNS.items()])


def _upsert_rows(
    con: duckdb.DuckDBPyConnection, valid: pl.DataFrame, params: dict, fast: "_FastInsert"
) -> tuple[int, int, int]:
    """-> (new, updated, unchanged), with one set-based statement.

    Must be the first statement of the page's transaction: a page none of whose keys is
    stored yet (a first import) is written with a plain INSERT (sql.INSERT_NEW_PAGE); if
    the primary key refuses it, that failed statement has aborted the transaction with
    nothing else in it, so the transaction is started again and the page is upserted."""
    if valid.height == 0:
        return 0, 0, 0
    rows = valid.to_arrow()
    if fast.wanted():
        try:
            with _registered(con, sql.PAGE_VALID_VIEW, rows):
                _run(con, sql.INSERT_NEW_PAGE, params)
        except duckdb.ConstraintException:  # _registered rolled the transaction back
            fast.found(keys_stored=True)
            con.execute("BEGIN TRANSACTION").fetchall()
        else:
            fast.found(keys_stored=False)
            return valid.height, 0, 0
    _refuse_duplicate_keys(valid)
    with _registered(con, sql.PAGE_VALID_VIEW, rows):
        written = con.execute(sql.UPSERT_PAGE, params).fetchall()
    new = sum(1 for (is_new,) in written if is_new)
    updated = len(written) - new
    return new, updated, valid.height - new - updated


@contextmanager
def _registered(con: duckdb.DuckDBPyConnection, name: str, rows: Any) -> Iterator[None]:
    """``rows`` visible to SQL as ``name`` for the block. On an error the transaction is
    rolled back first: a failed statement aborts it, and an aborted transaction refuses
    ``unregister`` (which would hide the statement's own error)."""
    con.register(name, rows)
    try:
        yield
    except BaseException:
        _rollback(con)
        con.unregister(name)
        raise
    con.unregister(name)


class _FastInsert:
    """Whether to try the plain INSERT of a new page (see ``_upsert_rows``).

    A refused attempt costs ~1.3 ms (measured; the upsert ~16 ms) and is refused on every
    page of a re-import: after a refusal the next attempts are skipped, 1, 2, 4 ... up to
    64 pages, until an attempt succeeds again."""

    MAX_SKIP = 64

    def __init__(self) -> None:
        self._skip = 0
        self._backoff = 0

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
    with _registered(con, sql.PAGE_REJECTS_VIEW, rejects.to_arrow()):
        _run(con, sql.DELETE_SEEN_REJECTS)
        _run(con, sql.INSERT_REJECTS, params)
    return rejects.height


def _insert_ledger(con: duckdb.DuckDBPyConnection, row: dict[str, Any]) -> None:
    _run(con, sql.INSERT_LEDGER_ROW, {c: row.get(c) for c in sql.LEDGER_COLUMNS})


def _rollback(con: duckdb.DuckDBPyConnection) -> None:
    try:
        con.execute("ROLLBACK").fetchall()
    except duckdb.Error:  # no transaction active (BEGIN itself failed)
        pass


# ------------------------------------------------------------------------ the store


class DuckDBStore:
    """The DuckDB file holding ``well_production``, its rejects and the page ledger.

    Usage::

        store = DuckDBStore("data/wells.duckdb")
        with store.connection() as con:             # read-write; creates the tables
            store.check_page_size(con, 1000, source)
            counts = store.write_page(con, PageWrite(...))
        with store.connection(read_only=True) as con:
            store.latest_page_status(con)
    """

    def __init__(self, path: str | os.PathLike, *, lock_timeout: float = DEFAULT_LOCK_TIMEOUT) -> None:
        self.path = self._validate_path(path)
        if isinstance(lock_timeout, bool) or not isinstance(lock_timeout, (int, float)) or lock_timeout < 0:
            raise errors.ConfigError("lock_timeout", lock_timeout, "a number of seconds >= 0")
        self.lock_timeout = float(lock_timeout)
        self._fast_insert = _FastInsert()

    def __repr__(self) -> str:
        return f"DuckDBStore({str(self.path)!r})"

    @staticmethod
    def _validate_path(path: Any) -> Path:
        allowed = "a DuckDB file path such as data/wells.duckdb (not a directory, not :memory:)"
        if not isinstance(path, (str, os.PathLike)):
            raise errors.ConfigError(DATABASE_SETTING, path, allowed)
        text = os.fspath(path)
        if not isinstance(text, str) or not text.strip() or "\x00" in text or text.strip() == ":memory:":
            raise errors.ConfigError(DATABASE_SETTING, path, allowed)
        if text.endswith(("/", os.sep)):
            raise errors.ConfigError(DATABASE_SETTING, path, allowed)
        resolved = Path(text).expanduser()
        if resolved.is_dir():
            raise errors.ConfigError(DATABASE_SETTING, path, allowed)
        return resolved

    # -- connections ---------------------------------------------------------------

    @contextmanager
    def connection(self, read_only: bool = False, lean: bool = False) -> Iterator[duckdb.DuckDBPyConnection]:
        """A connection that is closed on every path. Read-write connections create the
        tables (idempotent). Opening waits (with backoff, up to ``lock_timeout``) while
        another process holds the file's write lock.

        ``lean``: a small buffer pool and one thread, for whole-table checks that would
        otherwise hold ~100 MB per million rows in the process (DuckDB spills instead)."""
        con = self._connect(read_only)
        try:
            if lean:
                con.execute(sql.LEAN_SETTINGS).fetchall()
            if not read_only:
                self.ensure_schema(con)
            yield con
        finally:
            con.close()

    def open_writer(self) -> duckdb.DuckDBPyConnection:
        """A read-write connection for page writes (one DuckDB thread), which the caller
        closes (see io_manager._Writer)."""
        con = self._connect(False)
        try:
            con.execute(sql.WRITER_SETTINGS).fetchall()
            self.ensure_schema(con)
        except BaseException:
            con.close()
            raise
        return con

    def _connect(self, read_only: bool) -> duckdb.DuckDBPyConnection:
        if read_only:
            if not self.path.exists():
                raise errors.DatabaseError(
                    f"database file {self.path} does not exist (nothing imported yet?)",
                    path=str(self.path),
                )
        else:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise errors.ConfigError(
                    DATABASE_SETTING,
                    str(self.path),
                    f"a path whose parent directory can be created ({exc.strerror or exc})",
                ) from exc
        deadline = time.monotonic() + self.lock_timeout
        delay = 0.05
        waited = False
        while True:
            try:
                con = duckdb.connect(str(self.path), read_only=read_only)
                if waited:
                    log.info("DuckDB file %s: lock acquired", self.path)
                return con
            except duckdb.Error as exc:
                if _LOCK_MESSAGE not in str(exc):
                    raise errors.DatabaseError(
                        f"cannot open DuckDB file {self.path}: {exc}", path=str(self.path)
                    ) from exc
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise errors.DatabaseError(
                        f"DuckDB file {self.path} is locked by another process and stayed "
                        f"locked for {self.lock_timeout:g} s (writers must be serialized: "
                        f"concurrency pool 'duckdb' with limit 1): {exc}",
                        path=str(self.path),
                    ) from exc
                if not waited:
                    log.info("DuckDB file %s is locked by another process; waiting up to %g s", self.path, remaining)
                    waited = True
                time.sleep(min(delay, remaining))
                delay = min(delay * 2, 2.0)

    def ensure_schema(self, con: duckdb.DuckDBPyConnection) -> None:
        for statement in con.extract_statements(sql.SCHEMA_DDL):
            con.execute(statement).fetchall()

    # -- page size ------------------------------------------------------------------

    def check_page_size(self, con: duckdb.DuckDBPyConnection, page_size: int, source: str) -> None:
        """Record ``page_size`` for ``source`` on first use; raise ConfigError naming
        ODATA_PAGE_SIZE when a different page size is used for the same source (page k
        is ``$skip = k * page_size``: another size silently re-partitions the source)."""
        if isinstance(page_size, bool) or not isinstance(page_size, int) or not 1 <= page_size <= 5000:
            raise errors.ConfigError(PAGE_SIZE_SETTING, page_size, "an integer 1..5000")
        rows = _run(con, sql.SELECT_PAGE_SIZE, {"source": source})
        if not rows:
            _run(con, sql.INSERT_PAGE_SIZE, {"source": source, "page_size": page_size, "now": utc_now()})
            rows = _run(con, sql.SELECT_PAGE_SIZE, {"source": source})
        recorded = rows[0][0]
        if recorded != page_size:
            raise errors.ConfigError(
                PAGE_SIZE_SETTING,
                page_size,
                f"{recorded} (the page size the partitions of {source} were created with; "
                f"to re-partition deliberately, call DuckDBStore.reset_page_size first)",
            )

    def reset_page_size(
        self, con: duckdb.DuckDBPyConnection, source: str, page_size: int | None = None
    ) -> int | None:
        """Forget the recorded page size of ``source`` (and record ``page_size`` if
        given). Returns the previously recorded value. Existing partitions keep their
        old meaning; the caller is responsible for re-creating them."""
        rows = _run(con, sql.SELECT_PAGE_SIZE, {"source": source})
        _run(con, sql.DELETE_PAGE_SIZE, {"source": source})
        if page_size is not None:
            self.check_page_size(con, page_size, source)
        return rows[0][0] if rows else None

    # -- writes ---------------------------------------------------------------------

    def write_page(self, con: duckdb.DuckDBPyConnection, page: PageWrite) -> PageCounts:
        """Store one page in ONE transaction; see the module docstring. Must be called
        outside a transaction. Raises errors.DatabaseError (rolled back) on failure."""
        started = time.perf_counter()
        now = utc_now()
        params = {"page": page.page, "run_id": page.run_id, "now": now}
        try:
            valid = _prepare_valid(page.valid)
            con.execute("BEGIN TRANSACTION").fetchall()
            new, updated, unchanged = _upsert_rows(con, valid, params, self._fast_insert)
            rejected = _replace_rejects(con, page.rejects, params)
            db_seconds = time.perf_counter() - started
            rows_fetched = page.rows_fetched
            if rows_fetched is None:
                rows_fetched = valid.height + rejected + page.in_page_duplicates
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
                    "in_page_duplicates": page.in_page_duplicates,
                    "db_seconds": db_seconds,
                    "ended_at": utc_now(),
                },
            )
            con.execute("COMMIT").fetchall()
        except Exception as exc:
            _rollback(con)
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
        )

    def record_failure(self, con: duckdb.DuckDBPyConnection, page: PageFailure) -> None:
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

    # -- reads (also available as module functions) -----------------------------------

    def latest_page_status(self, con, source: str | None = None) -> pl.DataFrame:
        return latest_page_status(con, source)

    def page_log(self, con) -> pl.DataFrame:
        return page_log(con)

    def duplicate_key_count(self, con) -> int:
        return duplicate_key_count(con)

    def schema_violation_count(self, con, max_daily_volume: float = 1e9) -> int:
        return schema_violation_count(con, max_daily_volume)

    def table_row_count(self, con) -> int:
        return table_row_count(con)

    def load_table(self, con) -> pl.DataFrame:
        return load_table(con)

    def load_rejects(self, con) -> pl.DataFrame:
        return load_rejects(con)


def _figures(page: PageWrite | PageFailure) -> dict[str, Any]:
    """Ledger fields shared by successes and failures."""
    return {
        "page": page.page,
        "partition_key": page.partition_key,
        "run_id": page.run_id,
        "skip": page.skip,
        "top": page.top,
        "source_count": page.source_count,
        "first_key": key_text(page.first_key),
        "last_key": key_text(page.last_key),
        "fetch_seconds": page.fetch_seconds,
        "validate_seconds": page.validate_seconds,
        "throttle_seconds": page.throttle_seconds,
        "retries": page.retries,
        "bytes": page.bytes,
        "cache_hit": page.cache_hit,
        "started_at": page.started_at or utc_now(),
        "source": page.source,
        "page_size": page.page_size,
    }


__all__ = [
    "DATABASE_SETTING",
    "DuckDBStore",
    "PageCounts",
    "PageFailure",
    "PageWrite",
    "duplicate_key_count",
    "latest_page_status",
    "load_rejects",
    "load_table",
    "page_log",
    "pages_succeeded_in_runs",
    "schema_violation_count",
    "source_identity",
    "table_row_count",
    "utc_now",
]
