"""Reads of the tables for the report, the checks and downstream assets.

Module functions taking an open connection, so a caller can run several in one
(read-only) connection.
"""

import duckdb
import polars as pl

from well_assets.storage import sql
from well_assets.storage.records import PageMap
from well_assets.validation.model import DEFAULT_MAX_DAILY_VOLUME


def _scalar(con: duckdb.DuckDBPyConnection, statement: str, params: dict | None = None):
    # fetchall(): an unfinished result would block later register()/sql() calls (DuckDB 2.0).
    return con.execute(statement, params or {}).fetchall()[0][0]



def has_table(con: duckdb.DuckDBPyConnection, name: str) -> bool:
    """Whether the file has the table (a file opened read-only may predate it)."""
    return bool(_scalar(con, sql.TABLE_EXISTS, {"name": name}))


def latest_page_status(con: duckdb.DuckDBPyConnection, source: str | None = None) -> pl.DataFrame:
    """The latest ledger row of every page (optionally of one source), ordered by page."""
    return con.sql(sql.LATEST_PAGE_STATUS, params={"source": source}).pl()


def import_page_status(con: duckdb.DuckDBPyConnection, import_id: str | None = None) -> pl.DataFrame:
    """The latest ledger row of every page of one import (default: the newest import)."""
    return con.sql(sql.IMPORT_PAGE_STATUS, params={"import_id": import_id}).pl()


def page_log(con: duckdb.DuckDBPyConnection) -> pl.DataFrame:
    """The whole ledger in insertion order."""
    return con.sql(sql.PAGE_LOG).pl()


def pages_succeeded_in_runs(con: duckdb.DuckDBPyConnection, run_ids: set[str]) -> set[int]:
    """Pages committed by any of the given runs (and not failed again since, within them)."""
    rows = con.execute(sql.PAGES_SUCCEEDED_IN_RUNS, {"run_ids": sorted(run_ids)}).fetchall()
    return {int(page) for (page,) in rows}


def duplicate_key_count(con: duckdb.DuckDBPyConnection) -> int:
    """Number of keys stored more than once (0 unless the primary key was bypassed)."""
    if int(_scalar(con, sql.KEY_HASH_SURPLUS)) == 0:
        return 0
    return int(_scalar(con, sql.DUPLICATE_KEY_COUNT))


def schema_violation_count(con: duckdb.DuckDBPyConnection) -> int:
    """Stored rows that break the validation rules they were validated with (missing key,
    negative, NaN/inf, or a volume above the limit the ledger recorded for their page)."""
    return int(_scalar(con, sql.SCHEMA_VIOLATION_COUNT, {"default_max": DEFAULT_MAX_DAILY_VOLUME}))


def table_row_count(con: duckdb.DuckDBPyConnection) -> int:
    return int(_scalar(con, sql.TABLE_ROW_COUNT))


def load_table(con: duckdb.DuckDBPyConnection) -> pl.DataFrame:
    """``well_production`` (all columns incl. lineage) ordered by key."""
    return con.sql(sql.LOAD_TABLE).pl()


def load_rejects(con: duckdb.DuckDBPyConnection) -> pl.DataFrame:
    return con.sql(sql.LOAD_REJECTS).pl()


def page_map(con: duckdb.DuckDBPyConnection, source: str) -> PageMap:
    """Every mapped page of ``source``: (page, lower key or None, synced yet), by page."""
    rows = con.execute(sql.PAGE_MAP, {"source": source}).fetchall()
    return [(page, (well, day) if well is not None else None, bool(synced)) for page, well, day, synced in rows]


def synced_source_rows(con: duckdb.DuckDBPyConnection, source: str) -> dict[int, int]:
    """page -> the records the source had in the page's range at its last sync."""
    return {int(page): int(rows) for page, rows in con.execute(sql.SYNCED_SOURCE_ROWS, {"source": source}).fetchall()}


def table_by_page(con: duckdb.DuckDBPyConnection, source: str) -> dict[int, tuple[int, int]]:
    """What the table holds in each mapped page's key range: page -> (rows, key checksum)."""
    rows = con.execute(sql.TABLE_BY_PAGE, {"source": source}).fetchall()
    return {int(page): (int(count), int(checksum)) for page, count, checksum in rows}
