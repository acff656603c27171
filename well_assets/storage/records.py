"""The figures of one page as the store takes them: PageWrite, PageFailure, PageCounts.

Plain dataclasses (no DuckDB), so the pipeline can build them without a connection.
"""

from dataclasses import dataclass, fields
from datetime import UTC, date, datetime
from typing import Any
from urllib.parse import urlsplit

import polars as pl


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


def key_text(key: Any) -> str | None:
    """A (WellCode, ProductionDate) key as ledger text ``WELL_001|2023-01-01``."""
    if key is None or isinstance(key, str):
        return key
    return "|".join("" if part is None else str(part) for part in key)


# ------------------------------------------------------------------------ page types


@dataclass(kw_only=True)
class PageFigures:
    """What the ledger records of every page attempt, a success or a failure: the figures
    known at the time (None or zero: unknown). Credentials never appear in any of them."""

    page: int
    partition_key: str
    run_id: str
    skip: int | None = None
    top: int | None = None
    source: str | None = None  # source_identity(...): no credentials
    page_size: int | None = None
    rows_fetched: int | None = None  # PageWrite: None = valid + rejects + in_page_duplicates
    source_count: int | None = None
    first_key: tuple[str, str] | str | None = None
    last_key: tuple[str, str] | str | None = None
    fetch_seconds: float | None = None
    validate_seconds: float | None = None
    throttle_seconds: float | None = None
    retries: int | None = None
    bytes: int | None = None
    cache_hit: bool | None = None
    started_at: datetime | None = None  # naive UTC; None: when the write starts
    import_id: str | None = None  # the import (CLI command, backfill, run group) the page belongs to
    run_started_at: datetime | None = None  # naive UTC start of the page's run
    rss_mb: float | None = None  # peak memory of the importing processes when the page was written
    max_daily_volume: float | None = None  # the limit the page was validated with
    read_by: str | None = None  # "offset" (the page's first read) or "range"
    rows_repaired: int = 0  # rows an offset read had missed, fetched again by key range


Key = tuple[str, date]  # (well_code, production_date)
# The page map as the store reads it: (page, lower key or None, synced yet), by page.
PageMap = list[tuple[int, Key | None, bool]]


@dataclass(kw_only=True)
class PageWrite(PageFigures):
    """Everything ``write_page`` stores for one page: its rows and rejects, its key range,
    and its figures. The page's rows are all the source has in [lower, upper); the rows
    the table holds in that range and the page no longer has are deleted (archived in
    well_production_deleted) when ``mirror_deletes`` is set, unless that would be more
    than ``max_delete_fraction`` of the range's stored rows."""

    valid: pl.DataFrame  # validation.columns.COLUMNS; keys unique (validate_page guarantees it)
    rejects: pl.DataFrame | None = None  # validation.columns.REJECT_COLUMNS; None = no rejects
    in_page_duplicates: int = 0
    lower: Key | None = None  # None: from the first key (page 0)
    upper: Key | None = None  # None: to the last key (the last page)
    next_lower: Key | None = None  # the next page's lower key, recorded if it has none yet
    # The page map already has this page's row (its lower key is never moved): the write
    # need not try to add it. The same for the next page's row.
    lower_recorded: bool = False
    next_lower_recorded: bool = False
    # The caller knows the page map as it is on the file (the two flags above are exact: it
    # read the map on the connection it writes with, and has written every row since). Its
    # rows are then inserted without the guard that keeps a lower key once recorded; a
    # wrong flag fails the page on the map's primary key instead of passing unnoticed.
    map_known: bool = False
    # Delete the range's rows the page no longer has. Off unless asked for: a write that
    # forgot its range must not empty the whole key space.
    mirror_deletes: bool = False
    max_delete_fraction: float = 1.0
    # A page of delta changes (None: a page read from the source): the keys to delete, each
    # with whether the source removed it (True) or sent a record that validation rejects
    # (False: the source no longer has a valid row for it). Applying the page unstages its
    # changes (storage.tracking).
    gone: list[tuple[Key, bool]] | None = None
    # The key checksum of ``valid`` (storage.contents), if computed before the write.
    key_checksum: int | None = None


@dataclass(kw_only=True)
class PageFailure(PageFigures):
    """A failed page attempt for the ledger. ``error`` is stored as given (callers pass
    redacted text only)."""

    error: str
    db_seconds: float | None = None


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
    deleted: int = 0


FIGURE_FIELDS = tuple(f.name for f in fields(PageFigures))


class DeleteGuardError(Exception):
    """A page sync would delete more of the page's stored rows than allowed."""


def to_key(raw: Any) -> Key | None:
    """A key as the source sent it (well code, ISO date text) as a Key; None when it is
    not one (a record that validation rejects)."""
    if raw is None or len(raw) != 2:
        return None
    code, day = raw
    if not isinstance(code, str) or not code:
        return None
    if isinstance(day, date):
        return code, day
    try:
        return code, date.fromisoformat(day)
    except (TypeError, ValueError):
        return None
