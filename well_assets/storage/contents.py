"""The key checksum of a page's rows, computed outside the database file.

The ledger records, with every synced page, how many rows its range holds and a checksum
of their keys (``sql._CONTENTS``); the reconciliation compares them with the table's. A
page that mirrors deletes leaves exactly its own rows in its range, so the figures are
its rows' and can be computed where the page is validated, in the page fetcher's
process, instead of on the writer's thread, which is the import's busiest (the same
DuckDB expression, so the same value).
"""

from __future__ import annotations

import threading

import duckdb
import polars as pl

from well_assets.storage import sql
from well_assets.validation.columns import KEY

_lock = threading.Lock()
_con: duckdb.DuckDBPyConnection | None = None


def key_checksums(frames: list[pl.DataFrame]) -> list[int]:
    """The key checksum of each frame's rows (KEY columns), in one query."""
    global _con
    if not frames:
        return []
    keys = pl.concat([frame.select(KEY).with_columns(part=pl.lit(n, dtype=pl.Int32)) for n, frame in enumerate(frames)],
                     how="vertical", rechunk=False)
    with _lock:
        if _con is None:
            _con = duckdb.connect(":memory:")
            _con.execute(sql.WRITER_SETTINGS).fetchall()
        _con.register(sql.KEYS_VIEW, keys.to_arrow())
        try:
            rows = _con.execute(sql.KEY_CONTENTS_BY_PART).fetchall()
        finally:
            _con.unregister(sql.KEYS_VIEW)
    sums = {part: int(checksum) for part, _count, checksum in rows}
    return [sums.get(n, 0) for n in range(len(frames))]
