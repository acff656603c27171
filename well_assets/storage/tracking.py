"""OData change tracking in DuckDB (no Dagster): the delta link per source, the baseline a
full sync takes, and the changes of a delta staged until they are applied.

The life of a delta link (README "Change tracking"):

* A full sync (the first import, a re-sync of every page) asks the source for a link before
  it reads any page (``begin_baseline``); once every mapped page was synced after that
  moment the link becomes the source's delta link (``promote_baseline``): every change made
  after it was taken is in the delta, every change before it was read by the pages.
* The sensor reads the changes since the delta link. The first run that applies them stages
  them (``stage_delta``: every change by the page that holds its key, and the next link);
  every page's changes are applied, and unstaged, in the page's own transaction, and the
  transaction that applies the last staged change moves the delta link on
  (``storage.page_write``). A crash or a failed page leaves its changes staged: nothing is
  lost, the next run applies them.
* An expired link (410 Gone) is dropped, with whatever was staged from it, by the full
  re-sync that replaces it (``drop_delta_link``).

A delta link is a secret-bearing URL: nothing here logs it, and ``SyncState`` hides it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import duckdb
import polars as pl

from well_assets.storage import sql
from well_assets.storage.page_write import registered, rollback
from well_assets.storage.reads import has_table
from well_assets.storage.records import utc_now


@dataclass(frozen=True)
class SyncState:
    delta_link: str | None
    link_taken_at: datetime | None
    pending_link: str | None
    pending_taken_at: datetime | None
    staged_link: str | None
    staged_changes: int

    def __repr__(self) -> str:  # the links are secrets
        return (f"SyncState(delta_link={'***' if self.delta_link else None}, link_taken_at={self.link_taken_at}, "
                f"pending={'***' if self.pending_link else None}, staged_changes={self.staged_changes})")


@dataclass(frozen=True)
class StagedChange:
    """One change of a delta, placed in the page whose key range holds its key: a changed
    entity's record (JSON text), or a removed entity's key as the source sent it."""

    page: int
    record: str | None = None
    well_code: str | None = None
    production_date: str | None = None
    reason: str | None = None


_STAGED_SCHEMA = {"page": pl.Int32, "record": pl.Utf8, "well_code": pl.Utf8, "production_date": pl.Utf8,
                  "reason": pl.Utf8}


def sync_state(con: duckdb.DuckDBPyConnection, source: str) -> SyncState | None:
    """The change-tracking state of ``source`` (None: never tracked, or a file from before)."""
    if not has_table(con, "odata_sync_state"):
        return None
    rows = con.execute(sql.SYNC_STATE, {"source": source}).fetchall()
    return SyncState(*rows[0][:5], staged_changes=int(rows[0][5])) if rows else None


def staged_pages(con: duckdb.DuckDBPyConnection, source: str) -> list[int]:
    """The pages that hold staged changes not applied yet."""
    if not has_table(con, "odata_sync_state"):
        return []
    return [int(page) for (page,) in con.execute(sql.STAGED_PAGES, {"source": source}).fetchall()]


def _in_transaction(con: duckdb.DuckDBPyConnection, steps) -> object:
    con.execute("BEGIN TRANSACTION").fetchall()
    try:
        out = steps()
    except BaseException:
        rollback(con)
        raise
    con.execute("COMMIT").fetchall()
    return out


def begin_baseline(con: duckdb.DuckDBPyConnection, source: str, link: str, taken_at: datetime) -> bool:
    """Keeps ``link`` (asked for at ``taken_at``, before any page read of the full sync it
    starts) as the pending baseline, unless one is pending already. True if kept."""

    def steps() -> bool:
        now = utc_now()
        con.execute(sql.ENSURE_SYNC_STATE, {"source": source, "now": now}).fetchall()
        return bool(con.execute(sql.BEGIN_BASELINE, {"source": source, "link": link, "taken_at": taken_at,
                                                     "now": now}).fetchall())

    return bool(_in_transaction(con, steps))


def promote_baseline(con: duckdb.DuckDBPyConnection, source: str) -> bool:
    """The pending baseline becomes the delta link if every mapped page was synced after it
    was taken. True if it did."""
    state = sync_state(con, source)
    if state is None or state.pending_link is None:
        return False
    return bool(con.execute(sql.PROMOTE_BASELINE, {"source": source, "taken_at": state.pending_taken_at,
                                                   "now": utc_now()}).fetchall())


def drop_delta_link(con: duckdb.DuckDBPyConnection, source: str) -> bool:
    """Forgets the delta link (expired), its staged changes and any pending baseline. True
    if there was a link."""

    def steps() -> bool:
        if not has_table(con, "odata_sync_state"):
            return False
        dropped = bool(con.execute(sql.DROP_DELTA_LINK, {"source": source, "now": utc_now()}).fetchall())
        if dropped:
            con.execute(sql.CLEAR_STAGING, {"source": source}).fetchall()
        return dropped

    return bool(_in_transaction(con, steps))


def stage_delta(con: duckdb.DuckDBPyConnection, source: str, from_link: str, changes: list[StagedChange],
                next_link: str) -> bool:
    """Stages the changes read from ``from_link`` and the link after them, in one
    transaction; False (nothing staged) when the source's delta link is no longer
    ``from_link`` or changes are staged already."""

    def steps() -> bool:
        now = utc_now()
        moved = con.execute(sql.SET_STAGED_LINK, {"source": source, "from_link": from_link, "link": next_link,
                                                  "now": now}).fetchall()
        if not moved:
            return False
        if changes:
            frame = pl.DataFrame([(c.page, c.record, c.well_code, c.production_date, c.reason) for c in changes],
                                 schema=_STAGED_SCHEMA, orient="row")
            with registered(con, sql.STAGED_DELTA_VIEW, frame.to_arrow()):
                con.execute(sql.STAGE_CHANGES, {"source": source}).fetchall()
        else:  # nothing to apply: the link moves on at once
            con.execute(sql.ADVANCE_DELTA_LINK, {"source": source, "now": now}).fetchall()
        return True

    return bool(_in_transaction(con, steps))


def staged_changes(con: duckdb.DuckDBPyConnection, source: str, first: int, last: int) -> dict[int, list[StagedChange]]:
    """The staged changes of pages ``first``..``last``, by page."""
    out: dict[int, list[StagedChange]] = {}
    for page, record, code, day, reason in con.execute(
            sql.STAGED_CHANGES_OF_PAGES, {"source": source, "first": first, "last": last}).fetchall():
        out.setdefault(int(page), []).append(StagedChange(int(page), record, code, day, reason))
    return out


__all__ = ["StagedChange", "SyncState", "begin_baseline", "drop_delta_link", "promote_baseline", "stage_delta",
           "staged_changes", "staged_pages", "sync_state"]
