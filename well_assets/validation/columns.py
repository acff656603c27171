"""The columns of a stored row: OData names, column names, dtypes, the key, and the
columns of a rejected record. Plain data, shared by validation, storage and metadata."""

import polars as pl

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

COLUMN_POSITION = {name: i for i, name in enumerate(COLUMNS)}


def empty_valid_frame() -> pl.DataFrame:
    return pl.DataFrame(schema=COLUMNS)


def empty_rejects_frame() -> pl.DataFrame:
    return pl.DataFrame(schema=REJECT_COLUMNS)


def has_duplicate_keys(frame: pl.DataFrame) -> bool:
    """Whether a key occurs more than once in ``frame`` (about half the cost of unique())."""
    return frame.height > 1 and bool(frame.select(KEY).is_duplicated().any())
