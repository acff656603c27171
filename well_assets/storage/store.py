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
import math
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import duckdb
import polars as pl

from well_assets import errors
from well_assets.schema import COLUMNS, KEY, REJECT_COLUMNS
from well_assets.storage import sql

log = logging.getLogger(__name__)

DATABASE_SETTING = "WELLS_DATABASE"
PAGE_SIZE_SETTING = "ODATA_PAGE_SIZE"
DEFAULT_LOCK_TIMEOUT = 120.0
_LOCK_MESSAGE = "Could not set lock on file"
_VALID_SCHEMA = pl.Schema(COLUMNS)
_REJECTS_SCHEMA = pl.Schema(REJECT_COLUMNS)


def utc_now() -> datetime:
    """Naive UTC timestamp (the tables use TIMESTAMP without time zone, in UTC)."""
    return datetime.now(UTC).replace(tzinfo=None)


def source_identity(base_url: str, entity_set: str, filter: str | None = None) -> str:
    """Identity of an OData source for the ledger and the page-size record:
    ``scheme://host[:port]/path/EntitySet[?$filter=...]`` without credentials, query or
    fragment of the base URL (so no token or password can end up in the database)."""
    parts = urlsplit(base_url)
    host = (parts.hostname or "").lower()
    netloc = f"{host}:{parts.port}" if parts.port else host
    ident = f"{parts.scheme.lower()}://{netloc}{parts.path.rstrip('/')}/{entity_set}"
    if filter:
        ident += f"?$filter={filter}"
    return ident


def _key_text(key: Any) -> str | None:
    """A (WellCode, ProductionDate) key as ledger text ``WELL_001|2023-01-01``."""
    if key is None or isinstance(key, str):
        return key
    return "|".join("" if part is None else str(part) for part in key)


# ------------------------------------------------------------------------ page types


@dataclass
class PageWrite:
    """Everything ``write_page`` stores for one page. Only the first five fields are
    required; the figures default to "unknown"/zero. ``PageWrite.build`` fills it from
    a fetched page (``odata.PageResult``) and a ``schema.ValidatedPage``."""

    page: int
    partition_key: str
    run_id: str
    valid: pl.DataFrame  # schema.COLUMNS; keys unique (validate_page guarantees it)
    rejects: pl.DataFrame | None = None  # schema.REJECT_COLUMNS; None = no rejects
    in_page_duplicates: int = 0
    skip: int | None = None
    top: int | None = None
    source: str | None = None  # source_identity(...): no credentials
    page_size: int | None = None
    rows_fetched: int | None = None  # None: valid + rejects + in_page_duplicates
    source_count: int | None = None
    first_key: tuple[str, str] | str | None = None
    last_key: tuple[str, str] | str | None = None
    fetch_seconds: float = 0.0
    validate_seconds: float = 0.0
    throttle_seconds: float = 0.0
    retries: int = 0
    bytes: int = 0
    cache_hit: bool = False
    started_at: datetime | None = None  # naive UTC; None: when write_page starts

    @classmethod
    def build(
        cls,
        fetched: Any,
        validated: Any,
        *,
        partition_key: str,
        run_id: str,
        source: str | None = None,
        page_size: int | None = None,
        started_at: datetime | None = None,
    ) -> "PageWrite":
        """From an ``odata.PageResult``-like object (page, skip, top, records,
        source_count, bytes, http_seconds, throttle_seconds, retries, from_cache,
        first_key, last_key) and a ``schema.ValidatedPage``."""
        return cls(
            page=fetched.page,
            partition_key=partition_key,
            run_id=run_id,
            valid=validated.valid,
            rejects=validated.rejects,
            in_page_duplicates=validated.in_page_duplicates,
            skip=fetched.skip,
            top=fetched.top,
            source=source,
            page_size=page_size,
            rows_fetched=len(fetched.records),
            source_count=fetched.source_count,
            first_key=fetched.first_key,
            last_key=fetched.last_key,
            fetch_seconds=fetched.http_seconds,
            validate_seconds=validated.validate_seconds,
            throttle_seconds=fetched.throttle_seconds,
            retries=fetched.retries,
            bytes=fetched.bytes,
            cache_hit=fetched.from_cache,
            started_at=started_at,
        )


@dataclass
class PageFailure:
    """A failed page attempt for the ledger. ``error`` is stored as given (callers pass
    redacted text only). Figures known at the time of failure may be filled in."""

    page: int
    partition_key: str
    run_id: str
    error: str
    skip: int | None = None
    top: int | None = None
    source: str | None = None
    page_size: int | None = None
    rows_fetched: int | None = None
    source_count: int | None = None
    first_key: tuple[str, str] | str | None = None
    last_key: tuple[str, str] | str | None = None
    fetch_seconds: float | None = None
    validate_seconds: float | None = None
    db_seconds: float | None = None
    throttle_seconds: float | None = None
    retries: int | None = None
    bytes: int | None = None
    cache_hit: bool | None = None
    started_at: datetime | None = None


@dataclass(frozen=True)
class PageCounts:
    """Outcome of ``write_page``. ``duplicate`` = rows already stored with identical
    values + in-page duplicate keys. ``db_seconds`` covers the whole transaction
    including the ledger insert and COMMIT (the ledger's own ``db_seconds`` column
    cannot include its insert and the commit, so it is slightly smaller)."""

    new: int
    updated: int
    duplicate: int
    rejected: int
    db_seconds: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


# ------------------------------------------------------------------- write steps
# Module-level steps of one page's transaction (tests inject failures by patching one).


def _run(con: duckdb.DuckDBPyConnection, statement: str, params: dict | None = None) -> list:
    return con.execute(statement, params or {}).fetchall()


def _scalar(con: duckdb.DuckDBPyConnection, statement: str, params: dict | None = None) -> Any:
    return _run(con, statement, params)[0][0]


def _prepare_valid(frame: pl.DataFrame) -> pl.DataFrame:
    """Fixed column order and dtypes (never insert by position blindly), unique keys."""
    if frame.schema != _VALID_SCHEMA:  # other order or dtypes: select by name and cast
        frame = frame.select([pl.col(c).cast(t, strict=True) for c, t in COLUMNS.items()])
    if frame.height > 1 and frame.select(pl.struct(*KEY).n_unique()).item() != frame.height:
        raise ValueError("valid rows contain duplicate keys (validate_page removes them)")
    return frame


def _prepare_rejects(frame: pl.DataFrame | None) -> pl.DataFrame | None:
    if frame is None or frame.height == 0:
        return None
    if frame.schema == _REJECTS_SCHEMA:
        return frame
    return frame.select([pl.col(c).cast(t, strict=True) for c, t in REJECT_COLUMNS.items()])


def _upsert_rows(
    con: duckdb.DuckDBPyConnection, valid: pl.DataFrame, params: dict
) -> tuple[int, int, int]:
    """-> (new, updated, unchanged). Set-based: one classify query, one INSERT of the
    new rows, one UPDATE of the changed rows (each only when needed)."""
    if valid.height == 0:
        return 0, 0, 0
    con.register(sql.PAGE_VALID_VIEW, valid.to_arrow())
    try:
        delta = pl.from_arrow(con.sql(sql.CLASSIFY_PAGE).to_arrow_table())
    finally:
        con.unregister(sql.PAGE_VALID_VIEW)
    new_rows = delta.filter(pl.col("is_new")).drop("is_new")
    changed_rows = delta.filter(~pl.col("is_new")).drop("is_new")
    if new_rows.height:
        con.register(sql.PAGE_NEW_VIEW, new_rows.to_arrow())
        try:
            _run(con, sql.INSERT_NEW_ROWS, params)
        finally:
            con.unregister(sql.PAGE_NEW_VIEW)
    if changed_rows.height:
        con.register(sql.PAGE_CHANGED_VIEW, changed_rows.to_arrow())
        try:
            _run(con, sql.UPDATE_CHANGED_ROWS, params)
        finally:
            con.unregister(sql.PAGE_CHANGED_VIEW)
    unchanged = valid.height - new_rows.height - changed_rows.height
    return new_rows.height, changed_rows.height, unchanged


def _replace_rejects(con: duckdb.DuckDBPyConnection, rejects: pl.DataFrame | None, params: dict) -> int:
    rejects = _prepare_rejects(rejects)
    if rejects is None:
        return 0
    con.register(sql.PAGE_REJECTS_VIEW, rejects.to_arrow())
    try:
        _run(con, sql.DELETE_SEEN_REJECTS)
        _run(con, sql.INSERT_REJECTS, params)
    finally:
        con.unregister(sql.PAGE_REJECTS_VIEW)
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
    def connection(self, read_only: bool = False) -> Iterator[duckdb.DuckDBPyConnection]:
        """A connection that is closed on every path. Read-write connections create the
        tables (idempotent). Opening waits (with backoff, up to ``lock_timeout``) while
        another process holds the file's write lock."""
        con = self._connect(read_only)
        try:
            if not read_only:
                self.ensure_schema(con)
            yield con
        finally:
            con.close()

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
            new, updated, unchanged = _upsert_rows(con, valid, params)
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
        "first_key": _key_text(page.first_key),
        "last_key": _key_text(page.last_key),
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


# ----------------------------------------------------------------------------- reads


def latest_page_status(con: duckdb.DuckDBPyConnection, source: str | None = None) -> pl.DataFrame:
    """The latest ledger row of every page (optionally of one source), ordered by page."""
    return con.sql(sql.LATEST_PAGE_STATUS, params={"source": source}).pl()


def page_log(con: duckdb.DuckDBPyConnection) -> pl.DataFrame:
    """The whole ledger in insertion order."""
    return con.sql(sql.PAGE_LOG).pl()


def pages_succeeded_in_runs(con: duckdb.DuckDBPyConnection, run_ids: set[str]) -> set[int]:
    """Pages committed by any of the given runs (and not failed again since, within them)."""
    rows = con.execute(sql.PAGES_SUCCEEDED_IN_RUNS, {"run_ids": sorted(run_ids)}).fetchall()
    return {int(page) for (page,) in rows}


def duplicate_key_count(con: duckdb.DuckDBPyConnection) -> int:
    """Number of keys stored more than once (0 unless the primary key was bypassed)."""
    return int(_scalar(con, sql.DUPLICATE_KEY_COUNT))


def schema_violation_count(con: duckdb.DuckDBPyConnection, max_daily_volume: float = 1e9) -> int:
    """Stored rows that break the validation rules (missing key, negative, NaN/inf or
    above ``max_daily_volume`` volume)."""
    if not isinstance(max_daily_volume, (int, float)) or not math.isfinite(max_daily_volume):
        raise errors.ConfigError("max_daily_volume", max_daily_volume, "a finite number > 0")
    return int(_scalar(con, sql.SCHEMA_VIOLATION_COUNT, {"max_daily_volume": float(max_daily_volume)}))


def table_row_count(con: duckdb.DuckDBPyConnection) -> int:
    return int(_scalar(con, sql.TABLE_ROW_COUNT))


def load_table(con: duckdb.DuckDBPyConnection) -> pl.DataFrame:
    """``well_production`` (all columns incl. lineage) ordered by key."""
    return con.sql(sql.LOAD_TABLE).pl()


def load_rejects(con: duckdb.DuckDBPyConnection) -> pl.DataFrame:
    return con.sql(sql.LOAD_REJECTS).pl()


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
