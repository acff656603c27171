"""The Pandera model of a stored row: the validator of record.

Every rule a parsed page must meet lives here once, as a ``pandera.polars`` DataFrameModel:
exact columns, order and dtypes; keys present (a well code of at least one character, a
date); volumes either null or within ``0..max_daily_volume``. ``validate_page`` runs it
lazily on every page and takes the rejects' columns and check names straight from
Pandera's failure cases; the asset checks read the limit each page was validated with
from the page ledger.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING

import polars as pl

from well_assets import errors

if TYPE_CHECKING:
    import pandera.polars as pa

# Pandera is imported where the model is built, not with this module: the page fetcher's
# process validates, while the writer's process needs only ValidationSettings and the
# default limit, and its start-up is the import's critical path.

DEFAULT_MAX_DAILY_VOLUME = 1e9


@dataclass(frozen=True)
class ValidationSettings:
    """Runtime validation settings (hashable: the model is built once per value)."""

    max_daily_volume: float = DEFAULT_MAX_DAILY_VOLUME

    def validate(self) -> None:
        v = self.max_daily_volume
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
            raise errors.ConfigError("max_daily_volume", v, f"a finite number > 0 (default {DEFAULT_MAX_DAILY_VOLUME:g})")


@lru_cache(maxsize=32)
def well_production_model(settings: ValidationSettings = ValidationSettings()) -> type[pa.DataFrameModel]:
    """The DataFrameModel of a parsed page for ``settings``."""
    import pandera.polars as pa

    settings.validate()
    most = float(settings.max_daily_volume)

    class WellProduction(pa.DataFrameModel):
        well_code: str = pa.Field(nullable=False, str_length={"min_value": 1})
        production_date: pl.Date = pa.Field(nullable=False)
        oil_production: float = pa.Field(nullable=True, ge=0, le=most)
        gas_production: float = pa.Field(nullable=True, ge=0, le=most)
        water_production: float = pa.Field(nullable=True, ge=0, le=most)

        class Config:
            name = "well_production"
            strict = True
            ordered = True
            coerce = False

    return WellProduction


def failure_cases(frame: pl.DataFrame, settings: ValidationSettings) -> pl.DataFrame | None:
    """Pandera's failure cases for ``frame`` (lazy validation: every failing cell, with its
    column, check and row index), or None when every row passes."""
    from pandera.errors import SchemaErrors

    try:
        well_production_model(settings).validate(frame, lazy=True)
    except SchemaErrors as exc:
        return exc.failure_cases
    return None


def use_in_memory_engine() -> None:
    """For a process that only fetches and validates (the page fetcher's): Polars' in-memory
    engine for every query. Pandera's many small ``collect()`` calls cost about half as
    much as on the default engine (docs/benchmarks.md)."""
    pl.Config.set_engine_affinity("in-memory")
