"""The demo service's dataset: columnar rows, raw-value overrides, mutation and views.

`Dataset` owns a polars frame in natural (served) order plus the override map of raw
values that do not fit the column dtypes (see generate.py). Readers take an immutable
`Snapshot` (frame, overrides, version) under the lock and work without it; writers
(admin upsert/delete/reset, tests in another thread) replace the snapshot atomically and
bump `version`, which also invalidates the cached filtered/sorted views. Views are keyed
by (filter, orderby, version) so deep pages of the same query are a cheap slice.
"""

from __future__ import annotations

import datetime as dt
import math
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Callable

import polars as pl

from .generate import PROPS, SCHEMA, VOLUMES, Generated, generate

_VIEW_CACHE_SIZE = 6


@dataclass(frozen=True)
class Snapshot:
    frame: pl.DataFrame
    overrides: dict[int, dict[str, Any]]
    bad: dict[int, str]
    version: int


class Dataset:
    def __init__(
        self,
        rows: int,
        seed: int,
        bad_rows: float = 0.0,
        days_per_well: int = 500,
        start_date: dt.date = dt.date(2023, 1, 1),
    ) -> None:
        self._gen_args = (rows, seed, bad_rows, days_per_well, start_date)
        self._lock = threading.RLock()
        self._views: OrderedDict[tuple, pl.DataFrame] = OrderedDict()
        self._version = 0
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
        """Update rows with the same key, append new keys at their key-order position."""
        parsed = [_parse_record(r) for r in records]
        with self._lock:
            snap = self._snap
            frame, overrides, bad = snap.frame, dict(snap.overrides), dict(snap.bad)
            next_id = (frame["_id"].max() or -1) + 1 if frame.height else 0
            updated = inserted = 0
            for values, raw in parsed:
                match = _key_mask(frame, values["WellCode"], values["ProductionDate"])
                hit_ids = frame.filter(match)["_id"].to_list() if values["WellCode"] is not None else []
                if hit_ids:
                    updated += len(hit_ids)
                    frame = frame.with_columns(
                        pl.when(match).then(pl.lit(values[c], dtype=SCHEMA[c])).otherwise(pl.col(c)).alias(c)
                        for c in VOLUMES
                    )
                    for rid in hit_ids:
                        overrides.pop(rid, None)
                        bad.pop(rid, None)
                        if raw:
                            overrides[rid] = dict(raw)
                    continue
                row = pl.DataFrame({"_id": [next_id], **{p: [values[p]] for p in PROPS}}, schema=SCHEMA)
                if raw:
                    overrides[next_id] = dict(raw)
                next_id += 1
                inserted += 1
                pos = _insert_position(frame, values["WellCode"], values["ProductionDate"])
                frame = pl.concat([frame.slice(0, pos), row, frame.slice(pos)], rechunk=False)
            self._replace(frame.rechunk(), overrides, bad)
        return {"updated": updated, "inserted": inserted, "rows": frame.height}

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
            gone = frame.filter(mask)["_id"].to_list()
            for rid in gone:
                overrides.pop(rid, None)
                bad.pop(rid, None)
            frame = frame.filter(~mask)
            self._replace(frame, overrides, bad)
        return {"deleted": len(gone), "rows": frame.height}

    # -- internals -------------------------------------------------------------
    def _install(self, gen: Generated) -> None:
        with self._lock:
            self._replace(gen.frame, gen.overrides, gen.bad)

    def _replace(self, frame: pl.DataFrame, overrides: dict, bad: dict) -> None:
        self._version += 1
        self._snap = Snapshot(frame, overrides, bad, self._version)
        self._views.clear()


def _key_mask(frame: pl.DataFrame, wc: str | None, date: dt.date | None) -> pl.Expr:
    if wc is None or date is None:
        return pl.lit(False)
    return (pl.col("WellCode") == wc) & (pl.col("ProductionDate") == date)


def _insert_position(frame: pl.DataFrame, wc: str | None, date: dt.date | None) -> int:
    """Index of the first row whose (non-null) key sorts after the new key."""
    if wc is None:
        return frame.height
    after = pl.col("WellCode") > wc
    if date is not None:
        after = after | ((pl.col("WellCode") == wc) & (pl.col("ProductionDate") > date))
    found = frame.with_row_index("_pos").filter(after).select(pl.col("_pos").min()).item()
    return frame.height if found is None else int(found)


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
