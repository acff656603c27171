"""Column names, dtypes, validation settings, the row rules and the Pandera model.

The contract of a stored row. ``well_assets.validation`` turns raw OData records into
frames of these columns and splits them into valid rows and rejects with these rules.
"""

import math
import threading
from dataclasses import dataclass
from functools import lru_cache

import pandera.polars as pa
import polars as pl
from pandera.errors import SchemaErrors

from well_assets import errors

# --------------------------------------------------------------------------- names

ODATA_TO_COLUMN: dict[str, str] = {
    "WellCode": "well_code",
    "ProductionDate": "production_date",
    "OilProduction": "oil_production",
    "GasProduction": "gas_production",
    "WaterProduction": "water_production",
}
COLUMN_TO_ODATA: dict[str, str] = {v: k for k, v in ODATA_TO_COLUMN.items()}

COLUMNS: dict[str, pl.DataType] = {
    "well_code": pl.Utf8(),
    "production_date": pl.Date(),
    "oil_production": pl.Float64(),
    "gas_production": pl.Float64(),
    "water_production": pl.Float64(),
}
KEY: tuple[str, str] = ("well_code", "production_date")
VOLUME_COLUMNS: tuple[str, ...] = ("oil_production", "gas_production", "water_production")

REJECT_COLUMNS: dict[str, pl.DataType] = {
    "well_code": pl.Utf8(),  # raw text of WellCode (may be null)
    "production_date": pl.Utf8(),  # raw text of ProductionDate (may be null)
    "column": pl.Utf8(),  # column of the first failure
    "check": pl.Utf8(),  # check of the first failure
    "value": pl.Utf8(),  # raw text of the first failing value (null if it was null)
    "reason": pl.Utf8(),  # every failure of the record, joined with "; "
    "raw_record": pl.Utf8(),  # the record as canonical JSON text
}

_COLUMN_POSITION = {name: i for i, name in enumerate(COLUMNS)}
_ISO_DATE = r"^\d{4}-\d{2}-\d{2}$"


# ------------------------------------------------------------------------ settings


@dataclass(frozen=True)
class ValidationSettings:
    """Runtime validation settings (hashable: the Pandera model is cached per value)."""

    max_daily_volume: float = 1e9

    def validate(self) -> None:
        v = self.max_daily_volume
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
            raise errors.ConfigError("max_daily_volume", v, "a finite number > 0 (default 1e9)")


@dataclass
class ValidatedPage:
    valid: pl.DataFrame  # COLUMNS in order/dtypes, in-page duplicate keys removed (first kept)
    rejects: pl.DataFrame  # REJECT_COLUMNS, one row per rejected record
    in_page_duplicates: int
    validate_seconds: float

    @property
    def rows_rejected(self) -> int:
        return self.rejects.height


def empty_valid_frame() -> pl.DataFrame:
    return pl.DataFrame(schema=COLUMNS)


def empty_rejects_frame() -> pl.DataFrame:
    return pl.DataFrame(schema=REJECT_COLUMNS)


def has_duplicate_keys(frame: pl.DataFrame) -> bool:
    """Whether a key occurs more than once in ``frame`` (about half the cost of unique())."""
    return frame.height > 1 and bool(frame.select(KEY).is_duplicated().any())


# -------------------------------------------------------------------- Pandera model


@lru_cache(maxsize=32)
def pandera_model(settings: ValidationSettings = ValidationSettings()) -> type[pa.DataFrameModel]:
    """The Pandera (polars backend) model for ``settings``; built once per settings value."""
    settings.validate()
    max_volume = float(settings.max_daily_volume)

    class WellProductionModel(pa.DataFrameModel):
        well_code: str = pa.Field(nullable=False, str_length={"min_value": 1})
        production_date: pl.Date = pa.Field(nullable=False)
        oil_production: float = pa.Field(nullable=True, ge=0, le=max_volume)
        gas_production: float = pa.Field(nullable=True, ge=0, le=max_volume)
        water_production: float = pa.Field(nullable=True, ge=0, le=max_volume)

        class Config:
            name = "well_production"
            strict = True
            ordered = True
            coerce = False

    return WellProductionModel


def rules(settings: ValidationSettings) -> list[tuple[str, str, pl.Expr]]:
    """The row rules as (column, check name, expression true when the cell is fine).

    The same rules as ``pandera_model``: one list feeds Pandera's row check and the
    per-cell explanation of a rejected row, so the two can never disagree.
    """
    max_volume = float(settings.max_daily_volume)
    out = [
        ("well_code", "not_null", pl.col("well_code").is_not_null()),
        ("well_code", "str_length(1, None)", (pl.col("well_code").str.len_chars() >= 1).fill_null(True)),
        ("production_date", "not_null", pl.col("production_date").is_not_null()),
    ]
    for column in VOLUME_COLUMNS:
        out.append((column, "greater_than_or_equal_to(0)", (pl.col(column) >= 0).fill_null(True)))
        out.append((column, f"less_than_or_equal_to({max_volume})", (pl.col(column) <= max_volume).fill_null(True)))
    return out


@lru_cache(maxsize=32)
def _pandera_schema(settings: ValidationSettings) -> pa.DataFrameSchema:
    """Pandera schema of a parsed page: exact columns, order and dtypes, plus ONE
    row-level check that combines every rule.

    One combined check costs Pandera a single ``collect`` per page (~5 ms for 1000 rows
    here) where one check per rule cost ~15 ms; which rule failed is then worked out
    for the failing rows only, from the same ``rules``.
    """
    settings.validate()
    row_ok = pl.all_horizontal([expr for _, _, expr in rules(settings)])

    def row_rules(data) -> pl.LazyFrame:
        return data.lazyframe.select(row_ok.alias("check_output"))

    return pa.DataFrameSchema(
        columns={name: pa.Column(dtype, nullable=True) for name, dtype in COLUMNS.items()},
        checks=[pa.Check(row_rules, name="row_rules", error="a well production rule failed")],
        strict=True,
        ordered=True,
        name="well_production_page",
    )


# pl.Config(engine_affinity=...) changes process-wide state; serialize its use so two
# threads validating at once cannot leave the setting changed behind them.
_ENGINE_LOCK = threading.Lock()
_ENGINE_SET_FOR_PROCESS = False


def use_in_memory_engine_for_process() -> None:
    """For a process that only fetches and validates (the page fetcher's worker): set the
    in-memory engine once, instead of around every page (0.5 ms per page)."""
    global _ENGINE_SET_FOR_PROCESS
    pl.Config.set_engine_affinity("in-memory")
    _ENGINE_SET_FOR_PROCESS = True


def _run_pandera(frame: pl.DataFrame, settings: ValidationSettings) -> pl.DataFrame | None:
    """Validate once (lazy); return Pandera's failure cases, or None when all rows pass."""
    schema = _pandera_schema(settings)
    if _ENGINE_SET_FOR_PROCESS:
        return _pandera_failure_cases(schema, frame)
    with _ENGINE_LOCK, pl.Config(engine_affinity="in-memory"):
        return _pandera_failure_cases(schema, frame)


def _pandera_failure_cases(schema: pa.DataFrameSchema, frame: pl.DataFrame) -> pl.DataFrame | None:
    try:
        schema.validate(frame, lazy=True)
    except SchemaErrors as exc:
        return exc.failure_cases
    return None


__all__ = [
    "COLUMNS",
    "COLUMN_TO_ODATA",
    "KEY",
    "ODATA_TO_COLUMN",
    "REJECT_COLUMNS",
    "VOLUME_COLUMNS",
    "ValidatedPage",
    "ValidationSettings",
    "empty_rejects_frame",
    "empty_valid_frame",
    "pandera_model",
    "rules",
]
