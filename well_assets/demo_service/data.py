"""The demo service's dataset: columnar rows, raw-value overrides, mutation and views.

`Dataset` owns a polars frame in natural (served) order plus the override map of raw
values that do not fit the column dtypes (see generate.py). Readers take an immutable
`Snapshot` (frame, overrides, version) under the lock and work without it; writers
(admin upsert/delete/reset, tests in another thread) replace the snapshot atomically and
bump `version`, which also invalidates the cached filtered/sorted views. Views are keyed
by (filter, orderby, version) so deep pages of the same query are a cheap slice.
Every write also logs the keys it touched, at its new version, in ``changes`` (the change
log that delta links read); a reset starts a new history of it.
"""

from __future__ import annotations

import datetime as dt
import math
import threading
from collections import OrderedDict
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Callable

import polars as pl

from .changes import ChangeLog, ServedKey
from .filters import Span
from .generate import KEY, PROPS, SCHEMA, VOLUMES, Generated, generate

_VIEW_CACHE_SIZE = 6


@dataclass(frozen=True)
class Snapshot:
    frame: pl.DataFrame
    overrides: dict[int, dict[str, Any]]
    bad: dict[int, str]
    version: int

    @cached_property
    def _well_code_index(self) -> tuple[pl.Series, pl.Series, pl.Series]:
        """The non-null WellCodes sorted, their rows' positions, and the positions of the
        rows without one (built on first use, once per snapshot: the data never changes
        under it)."""
        codes = self.frame.get_column("WellCode")
        ordered = codes.arg_sort(nulls_last=True)
        present = codes.len() - codes.null_count()
        return codes.gather(ordered[:present]), ordered[:present], ordered[present:]

    def candidates(self, span: Span) -> pl.DataFrame:
        """The rows whose WellCode is in ``span``, in natural order: the rows a filter with
        that span can match (all rows when it is unbounded), found through the index."""
        if not span.bounded:
            return self.frame
        sorted_codes, positions, null_positions = self._well_code_index
        parts = [null_positions] if span.null else []
        if span.values:
            start = 0 if span.lo is None else sorted_codes.search_sorted(span.lo, side="left")
            end = len(sorted_codes) if span.hi is None else sorted_codes.search_sorted(span.hi, side="right")
            parts.append(positions.slice(start, max(end - start, 0)))
        picked = pl.concat(parts) if len(parts) > 1 else parts[0] if parts else positions.clear()
        return self.frame[picked.sort()]


class Dataset:
    def __init__(
        self,
        rows: int,
        seed: int,
        bad_rows: float = 0.0,
        days_per_well: int = 500,
        start_date: dt.date = dt.date(2023, 1, 1),
        delta_retention: int | None = None,
    ) -> None:
        self._gen_args = (rows, seed, bad_rows, days_per_well, start_date)
        self._lock = threading.RLock()
        self._views: OrderedDict[tuple, pl.DataFrame] = OrderedDict()
        self._version = 0
        self.changes = ChangeLog(retention=delta_retention)
        self._install(generate(*self._gen_args))

    # -- reading ---------------------------------------------------------------
    def snapshot(self) -> Snapshot:
        with self._lock:
            return self._snap

    @property
    def version(self) -> int:
        return self._snap.version

    def __len__(self) -> int:
        return self._snap.frame.height

    def view(self, snap: Snapshot, key: tuple, build: Callable[[pl.DataFrame], pl.DataFrame]) -> pl.DataFrame:
        """The frame filtered/sorted by `build`, cached under (key, snapshot version)."""
        ck = (key, snap.version)
        with self._lock:
            hit = self._views.get(ck)
            if hit is not None:
                self._views.move_to_end(ck)
                return hit
        result = build(snap.frame)  # outside the lock: polars releases the GIL
        with self._lock:
            if snap.version == self._snap.version:
                self._views[ck] = result
                while len(self._views) > _VIEW_CACHE_SIZE:
                    self._views.popitem(last=False)
        return result

    def records(self, frame: pl.DataFrame, overrides: dict[int, dict[str, Any]], props=PROPS) -> list[dict]:
        """Serialize rows (a small slice) to OData records, raw overrides applied."""
        cols = [p for p in PROPS if p in props]
        out = frame.select(["_id", *cols]).with_columns(
            pl.col(c).cast(pl.Utf8) for c in cols if c == "ProductionDate"
        )
        recs = []
        for row in out.iter_rows():
            rec = dict(zip(cols, row[1:]))
            ov = overrides.get(row[0]) if overrides else None
            if ov:
                for k, v in ov.items():
                    if k in rec:
                        rec[k] = v
            recs.append(rec)
        return recs

    def all_records(self) -> list[dict]:
        snap = self.snapshot()
        return self.records(snap.frame, snap.overrides)

    def bad_rows(self) -> list[dict]:
        """Salted bad rows still present: kind, key as served, position and record."""
        snap = self.snapshot()
        if not snap.bad:
            return []
        ids = pl.Series(list(snap.bad), dtype=pl.Int64)
        hits = snap.frame.with_row_index("_pos").filter(pl.col("_id").is_in(ids.implode()))
        recs = self.records(hits, snap.overrides)
        return [
            {
                "kind": snap.bad[rid],
                "WellCode": rec["WellCode"],
                "ProductionDate": rec["ProductionDate"],
                "index": int(pos),
                "record": rec,
            }
            for rid, pos, rec in zip(hits["_id"], hits["_pos"], recs)
        ]

    # -- writing ---------------------------------------------------------------
    def reset(self) -> None:
        self._install(generate(*self._gen_args))

    def upsert(self, records: list[dict]) -> dict[str, int]:
        """Update rows with the same key, insert new keys at their key-order position.

        Vectorized (joins + one sort), so a large batch costs about one pass over the data.
        Within a batch the last record of a key wins; records without a usable key (null
        WellCode or unparseable date) are appended at the end.
        """
        parsed = [_parse_record(r) for r in records]
        if not parsed:
            return {"updated": 0, "inserted": 0, "rows": len(self)}
        batch = pl.DataFrame([v for v, _ in parsed], schema={p: SCHEMA[p] for p in PROPS}).with_columns(
            _b=pl.int_range(0, pl.len(), dtype=pl.Int64)
        )
        has_key = pl.col("WellCode").is_not_null() & pl.col("ProductionDate").is_not_null()
        keyed = batch.filter(has_key).unique(subset=list(KEY), keep="last", maintain_order=True)
        unkeyed = batch.filter(~has_key)
        with self._lock:
            snap = self._snap
            frame, overrides, bad = snap.frame, dict(snap.overrides), dict(snap.bad)
            hits = frame.select("_id", *KEY).join(keyed.select(*KEY, "_b"), on=list(KEY), how="inner")
            if hits.height:
                new_vals = hits.join(keyed.select("_b", *VOLUMES), on="_b").select(
                    "_id", *[pl.col(c).alias(c + "__new") for c in VOLUMES], _hit=pl.lit(True)
                )
                frame = frame.join(new_vals, on="_id", how="left", maintain_order="left").select(
                    "_id", *KEY,
                    *[pl.when(pl.col("_hit")).then(pl.col(c + "__new")).otherwise(pl.col(c)).alias(c) for c in VOLUMES],
                )
                for rid, b in hits.select("_id", "_b").iter_rows():
                    overrides.pop(rid, None)
                    bad.pop(rid, None)
                    if parsed[b][1]:
                        overrides[rid] = dict(parsed[b][1])
            inserts = pl.concat([keyed.join(hits.select("_b").unique(), on="_b", how="anti"), unkeyed])
            if inserts.height:
                frame = self._insert(frame, inserts, overrides, parsed)
            # Every record of the batch is a change, rewritten values included: a delta
            # may repeat an entity, never miss one.
            touched = [_served_key(values, raw) for values, raw in parsed]
            self._replace(frame, overrides, bad, touched)
        return {"updated": hits.height, "inserted": inserts.height, "rows": frame.height}

    @staticmethod
    def _insert(frame: pl.DataFrame, inserts: pl.DataFrame, overrides: dict, parsed: list) -> pl.DataFrame:
        """Place new rows before the first existing row with a greater (non-null) key."""
        next_id = int(frame["_id"].max()) + 1 if frame.height else 0
        inserts = inserts.with_columns(_id=pl.int_range(0, pl.len(), dtype=pl.Int64) + next_id)
        for rid, b in inserts.select("_id", "_b").iter_rows():
            if parsed[b][1]:
                overrides[rid] = dict(parsed[b][1])
        # Rows with a full key are in key order (an invariant of generation and upsert),
        # so a binary search over "WellCode NUL date" strings finds each insertion point.
        composite = pl.concat_str([pl.col("WellCode"), pl.lit("\x00"), pl.col("ProductionDate").cast(pl.Utf8)])
        keyed = frame.with_row_index("_pos").filter(pl.col("WellCode").is_not_null() & pl.col("ProductionDate").is_not_null())
        sorted_keys = keyed.select(composite.alias("k"))["k"]
        new_keys = inserts.select(composite.alias("k"))["k"]
        at = sorted_keys.search_sorted(new_keys, side="right").to_list()
        positions = keyed["_pos"].to_list()
        new_pos = [
            frame.height if k is None or i >= len(positions) else positions[i] for i, k in zip(at, new_keys.to_list())
        ]
        # existing row i gets order 2i+1, a row inserted before row p gets 2p (ties: key order)
        combined = pl.concat(
            [
                frame.with_columns(_o=pl.int_range(0, pl.len(), dtype=pl.Int64) * 2 + 1),
                inserts.select(list(SCHEMA)).with_columns(_o=pl.Series(new_pos, dtype=pl.Int64) * 2),
            ]
        )
        return combined.sort(["_o", *KEY], nulls_last=True, maintain_order=True).drop("_o")

    def delete(self, keys: list[dict]) -> dict[str, int]:
        with self._lock:
            snap = self._snap
            frame, overrides, bad = snap.frame, dict(snap.overrides), dict(snap.bad)
            mask = pl.lit(False)
            for key in keys:
                wc = key.get("WellCode")
                if not isinstance(wc, str):
                    raise ValueError(f"WellCode must be a string, got {wc!r}")
                mask = mask | _key_mask(frame, wc, _parse_date(key.get("ProductionDate")))
            mask = mask.fill_null(False)  # null keys never match; ~null would drop them too
            removed = frame.filter(mask)
            gone = removed["_id"].to_list()
            for rid in gone:
                overrides.pop(rid, None)
                bad.pop(rid, None)
            frame = frame.filter(~mask)
            touched = [(wc, d.isoformat()) for wc, d in removed.select(*KEY).unique().iter_rows()]
            self._replace(frame, overrides, bad, touched)
        return {"deleted": len(gone), "rows": frame.height}

    # -- internals -------------------------------------------------------------
    def _install(self, gen: Generated) -> None:
        with self._lock:
            # The new history starts at the version the new data gets; links of the old
            # one, and any taken from the old data meanwhile, fall below it (410).
            self.changes.restart(self._version + 1)
            self._replace(gen.frame, gen.overrides, gen.bad)

    def expire_changes(self) -> None:
        """Forget the change history: every delta link issued so far answers 410 Gone."""
        with self._lock:
            self.changes.restart(self._version)

    def _replace(self, frame: pl.DataFrame, overrides: dict, bad: dict, touched: list[ServedKey] = ()) -> None:
        self._version += 1
        # Logged before the snapshot is published (both under the lock): a reader that
        # sees version v finds every change up to v in the log.
        self.changes.record(self._version, touched)
        self._snap = Snapshot(frame, overrides, bad, self._version)
        self._views.clear()


def _served_key(values: dict[str, Any], raw: dict[str, Any]) -> ServedKey:
    """The key of a parsed record as the service serves it (a raw date as given)."""
    date = values["ProductionDate"]
    text = date.isoformat() if date is not None else raw.get("ProductionDate")
    return values["WellCode"], text if isinstance(text, str) or text is None else str(text)


def _key_mask(frame: pl.DataFrame, wc: str | None, date: dt.date | None) -> pl.Expr:
    if wc is None or date is None:
        return pl.lit(False)
    return (pl.col("WellCode") == wc) & (pl.col("ProductionDate") == date)


def _parse_date(value: Any) -> dt.date | None:
    if isinstance(value, dt.date):
        return value
    if isinstance(value, str):
        try:
            return dt.date.fromisoformat(value)
        except ValueError:
            return None
    return None


def _parse_record(rec: dict) -> tuple[dict[str, Any], dict[str, Any]]:
    """Typed values for the frame plus raw values (overrides) for what does not fit."""
    if not isinstance(rec, dict):
        raise ValueError(f"a record must be a JSON object, got {rec!r}")
    unknown = set(rec) - set(PROPS)
    if unknown:
        raise ValueError(f"unknown properties {sorted(unknown)}; allowed: {list(PROPS)}")
    values: dict[str, Any] = {}
    raw: dict[str, Any] = {}
    wc = rec.get("WellCode")
    if wc is not None and not isinstance(wc, str):
        raise ValueError(f"WellCode must be a string or null, got {wc!r}")
    values["WellCode"] = wc
    d = rec.get("ProductionDate")
    values["ProductionDate"] = _parse_date(d)
    if d is not None and values["ProductionDate"] is None:
        raw["ProductionDate"] = d
    for c in VOLUMES:
        v = rec.get(c)
        if v is None:
            values[c] = None
        elif isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
            values[c] = float(v)
        else:
            values[c] = None
            raw[c] = v
    return values, raw
