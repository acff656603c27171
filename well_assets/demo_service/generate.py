"""Deterministic, vectorized generation of the demo production data and its bad rows.

Rows are laid out wells x days (`days_per_well` days per well, 500 by default), in
(WellCode, ProductionDate) order. Each well follows a hyperbolic (Arps) decline curve with
its own initial rate, decline and b factor; gas follows a per-well gas/oil ratio, water a
rising water cut; a few shut-in days per well produce zeros. Everything is computed with
polars expressions from a splitmix64 hash of (seed, salt, index), written with plain
integer arithmetic so the output depends only on the seed, not on a library's RNG.

Bad rows (`bad_rows` fraction of `rows`) are salted deterministically; kinds rotate through
`BAD_KINDS`. Values that do not fit the column dtype (a non-numeric volume, an impossible
date) are stored as NULL in the frame plus an entry in an override map
{row id: {property: raw value}} that the serializer applies, so 1.5M rows stay columnar.
"""

from __future__ import annotations

import bisect
import datetime as dt
import random
from dataclasses import dataclass, field
from typing import Any

import polars as pl

PROPS = ("WellCode", "ProductionDate", "OilProduction", "GasProduction", "WaterProduction")
VOLUMES = ("OilProduction", "GasProduction", "WaterProduction")
KEY = ("WellCode", "ProductionDate")
SCHEMA = {
    "_id": pl.Int64,
    "WellCode": pl.Utf8,
    "ProductionDate": pl.Date,
    "OilProduction": pl.Float64,
    "GasProduction": pl.Float64,
    "WaterProduction": pl.Float64,
}
BAD_KINDS = (
    "negative_volume",
    "non_numeric",
    "bad_date",
    "missing_key",
    "duplicate_key",
    "absurd_magnitude",
)
_U64 = pl.UInt64
_MASK = 2**64 - 1


@dataclass
class Generated:
    frame: pl.DataFrame  # SCHEMA columns, natural (served) order, _id = 0..n-1
    overrides: dict[int, dict[str, Any]] = field(default_factory=dict)
    bad: dict[int, str] = field(default_factory=dict)  # row id -> kind


def _lit(v: int) -> pl.Expr:
    return pl.lit(v & _MASK, dtype=_U64)


def _splitmix(x: pl.Expr) -> pl.Expr:
    # splitmix64 finalizer; UInt64 multiplication wraps in polars, >> k is // 2**k.
    z = x + _lit(0x9E3779B97F4A7C15)
    z = z.xor(z // _lit(2**30)) * _lit(0xBF58476D1CE4E5B9)
    z = z.xor(z // _lit(2**27)) * _lit(0x94D049BB133111EB)
    return z.xor(z // _lit(2**31))


def uniform(index: pl.Expr, seed: int, salt: int) -> pl.Expr:
    """A deterministic U[0, 1) value per integer in `index` for (seed, salt)."""
    base = (seed * 0xD1B54A32D192ED03 + salt * 0xABC98388FB8FAC03) & _MASK
    h = _splitmix(index.cast(_U64) + _lit(base))
    return (h // _lit(2**11)).cast(pl.Float64) / float(2**53)


def well_code(number: int, width: int) -> str:
    return f"WELL_{number:0{width}d}"


def generate(
    rows: int,
    seed: int,
    bad_rows: float = 0.0,
    days_per_well: int = 500,
    start_date: dt.date = dt.date(2023, 1, 1),
) -> Generated:
    """Build the served dataset: `rows` records in total, bad ones included."""
    kinds = _bad_kinds(rows, bad_rows)
    n_dup = kinds.count("duplicate_key")
    base_rows = rows - n_dup  # duplicates are inserted copies, so the total stays `rows`
    base = _good_rows(base_rows, seed, days_per_well, start_date)
    rng = random.Random(f"well-assets-bad-rows:{seed}")
    positions = rng.sample(range(base_rows), len(kinds)) if base_rows else []
    by_pos = dict(zip(positions, kinds))

    dup_pos = sorted(p for p, k in by_pos.items() if k == "duplicate_key")
    gather = pl.concat(
        [pl.int_range(0, base_rows, eager=True, dtype=pl.Int64), pl.Series(dup_pos, dtype=pl.Int64)]
    ).sort()
    frame = base.select(pl.all().gather(gather)).with_columns(
        _id=pl.int_range(0, pl.len(), dtype=pl.Int64)
    )
    # base position -> final row id: positions shift by the duplicates inserted before them
    def final_id(p: int) -> int:
        return p + bisect.bisect_left(dup_pos, p)

    overrides: dict[int, dict[str, Any]] = {}
    bad: dict[int, str] = {}
    patches: dict[str, dict[int, Any]] = {c: {} for c in PROPS}
    for j, (pos, kind) in enumerate(sorted(by_pos.items())):
        rid = final_id(pos)
        volume = VOLUMES[j % 3]
        if kind == "duplicate_key":
            bad[rid + 1] = kind  # the copy sits right after the original
        elif kind == "negative_volume":
            patches[volume][rid] = -round(12.5 + (j % 97) * 1.25, 3)
        elif kind == "non_numeric":
            patches[volume][rid] = None
            overrides[rid] = {volume: ("n/a", "unknown", "12,5")[j % 3]}
        elif kind == "bad_date":
            patches["ProductionDate"][rid] = None
            overrides[rid] = {"ProductionDate": ("2023-02-30", "not-a-date")[j % 2]}
        elif kind == "missing_key":
            patches["WellCode"][rid] = None
        elif kind == "absurd_magnitude":
            patches[volume][rid] = 5e12 + j
        if kind != "duplicate_key":
            bad[rid] = kind
    frame = _apply_patches(frame, patches)
    return Generated(frame=frame.select(list(SCHEMA)), overrides=overrides, bad=bad)


def _bad_kinds(rows: int, rate: float) -> list[str]:
    k = min(int(round(rows * rate)), rows // 2)
    return [BAD_KINDS[j % len(BAD_KINDS)] for j in range(k)]


def _good_rows(n: int, seed: int, days: int, start: dt.date) -> pl.DataFrame:
    wells = max(1, -(-n // days))
    width = max(3, len(str(wells)))  # zero-padded so string order == well order
    df = pl.DataFrame({"i": pl.int_range(0, n, eager=True, dtype=pl.Int64)}).lazy()
    w, t = pl.col("i") // days, (pl.col("i") % days).cast(pl.Float64)
    df = df.with_columns(w=w, t=t)
    w = pl.col("w")
    qi = 40.0 + 760.0 * uniform(w, seed, 1)  # initial oil rate, bbl/d
    di = 0.0008 + 0.0042 * uniform(w, seed, 2)  # nominal daily decline
    b = 0.3 + 0.9 * uniform(w, seed, 3)  # Arps b factor
    gor = 0.4 + 2.6 * uniform(w, seed, 4)  # mcf per bbl
    wc = 0.05 + 0.5 * uniform(w, seed, 5)  # initial water per bbl of oil
    p_shut = 0.005 + 0.035 * uniform(w, seed, 6)
    idx = pl.col("i")
    noise = 1.0 + 0.16 * (uniform(idx, seed, 10) + uniform(idx, seed, 11) - 1.0)
    q = qi / (1.0 + b * di * pl.col("t")).pow(1.0 / b)
    open_ = (uniform(idx, seed, 12) >= p_shut).cast(pl.Float64)  # 0 on shut-in days
    oil = q * noise * open_
    gas = oil * gor * (0.95 + 0.1 * uniform(idx, seed, 13))
    water = q * wc * (1.0 + pl.col("t") / 365.0) * (0.9 + 0.2 * uniform(idx, seed, 14)) * open_
    codes = pl.lit("WELL_") + (w + 1).cast(pl.Utf8).str.zfill(width)
    out = df.select(
        WellCode=codes,
        ProductionDate=pl.lit(start) + pl.duration(days=(pl.col("i") % days)),
        OilProduction=oil.round(3),
        GasProduction=gas.round(3),
        WaterProduction=water.round(3),
    )
    return out.collect()


def _apply_patches(frame: pl.DataFrame, patches: dict[str, dict[int, Any]]) -> pl.DataFrame:
    """Set frame[col][row] = value for a few cells (row ids equal positions here)."""
    cols = []
    for col, cells in patches.items():
        if cells:
            series = frame[col].clone()  # scatter writes in place; never touch the input
            series.scatter(list(cells), pl.Series(list(cells.values()), dtype=SCHEMA[col]))
            cols.append(series)
    return frame.with_columns(cols) if cols else frame
