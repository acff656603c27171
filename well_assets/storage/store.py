"""DuckDBStore: the plain-Python (no Dagster) storage of well production pages.

The DuckDB file's connections (waiting out another process's write lock), its tables,
the page size recorded per source, and the page write: one transaction per page, whose
steps live in ``page_write``. Reads for the report and the checks are in ``reads``.
"""

import logging
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager

import duckdb

from well_assets import errors
from well_assets.settings import validate_database
from well_assets.storage import page_write, reads, sql
from well_assets.storage.page_write import fetch_all
from well_assets.storage.records import PageCounts, PageFailure, PageMap, PageWrite, utc_now

log = logging.getLogger(__name__)

DATABASE_SETTING = "WELLS_DATABASE"
PAGE_SIZE_SETTING = "ODATA_PAGE_SIZE"
DEFAULT_LOCK_TIMEOUT = 120.0
_LOCK_MESSAGE = "Could not set lock on file"


class DuckDBStore:
    """The DuckDB file holding ``well_production``, its rejects and the page ledger.

    Usage::

        store = DuckDBStore("data/wells.duckdb")
        with store.connection() as con:             # read-write; creates the tables
            store.check_page_size(con, 1000, source)
            counts = store.write_page(con, PageWrite(...))
        with store.connection(read_only=True) as con:
            latest_page_status(con)             # reads are module functions (storage.reads)
    """

    def __init__(self, path: str | os.PathLike, *, lock_timeout: float = DEFAULT_LOCK_TIMEOUT) -> None:
        self.path = validate_database(path, DATABASE_SETTING)
        if isinstance(lock_timeout, bool) or not isinstance(lock_timeout, (int, float)) or lock_timeout < 0:
            raise errors.ConfigError("lock_timeout", lock_timeout, "a number of seconds >= 0")
        self.lock_timeout = float(lock_timeout)
        self._fast_insert = page_write.FastInsert()

    def __repr__(self) -> str:
        return f"DuckDBStore({str(self.path)!r})"

    # -- connections ---------------------------------------------------------------

    @contextmanager
    def connection(self, read_only: bool = False, lean: bool = False) -> Iterator[duckdb.DuckDBPyConnection]:
        """A connection that is closed on every path. Read-write connections create the
        tables (idempotent). Opening waits (with backoff, up to ``lock_timeout``) while
        another process holds the file's write lock.

        ``lean``: a small buffer pool and one thread, for whole-table checks that would
        otherwise hold memory in proportion to the table (DuckDB spills instead)."""
        con = self._connect(read_only)
        try:
            if lean:
                con.execute(sql.LEAN_SETTINGS).fetchall()
            if not read_only:
                self.ensure_schema(con)
            yield con
        finally:
            con.close()

    def open_writer(self, schema_ensured: bool = False) -> duckdb.DuckDBPyConnection:
        """A read-write connection for page writes (one DuckDB thread), which the caller
        closes (see io_manager._Writer). ``schema_ensured``: the caller's previous writer
        connection to this file already created the tables (a reopen need not run the DDL)."""
        con = self._connect(False)
        try:
            con.execute(sql.WRITER_SETTINGS).fetchall()
            if not schema_ensured:
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

    def page_map(self, source: str) -> PageMap:
        """The page map of ``source`` (empty before the first import; creates no file)."""
        if not self.path.exists():
            return []
        with self.connection(read_only=True) as con:
            return reads.page_map(con, source) if reads.has_table(con, "odata_page_map") else []

    def check_page_size(self, con: duckdb.DuckDBPyConnection, page_size: int, source: str) -> None:
        """Record ``page_size`` for ``source`` on first use; raise ConfigError naming
        ODATA_PAGE_SIZE when a different page size is used for the same source (page k
        is ``$skip = k * page_size``: another size silently re-partitions the source)."""
        if isinstance(page_size, bool) or not isinstance(page_size, int) or not 1 <= page_size <= 5000:
            raise errors.ConfigError(PAGE_SIZE_SETTING, page_size, "an integer 1..5000")
        rows = fetch_all(con, sql.SELECT_PAGE_SIZE, {"source": source})
        if not rows:
            fetch_all(con, sql.INSERT_PAGE_SIZE, {"source": source, "page_size": page_size, "now": utc_now()})
            rows = fetch_all(con, sql.SELECT_PAGE_SIZE, {"source": source})
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
        rows = fetch_all(con, sql.SELECT_PAGE_SIZE, {"source": source})
        fetch_all(con, sql.DELETE_PAGE_SIZE, {"source": source})
        if page_size is not None:
            self.check_page_size(con, page_size, source)
        return rows[0][0] if rows else None

    # -- writes ---------------------------------------------------------------------

    def write_page(self, con: duckdb.DuckDBPyConnection, page: PageWrite) -> PageCounts:
        """Store one page in ONE transaction (see ``page_write``). Must be called outside
        a transaction. Raises errors.DatabaseError (rolled back) on failure."""
        return page_write.write_page(con, page, self._fast_insert)

    def record_failure(self, con: duckdb.DuckDBPyConnection, page: PageFailure) -> None:
        """Append a ``failed`` ledger row for ``page`` (its own implicit transaction)."""
        page_write.record_failure(con, page)
