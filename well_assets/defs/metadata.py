"""Dagster metadata: column schemas of the tables and the per-page figures.

Per-page metadata is numeric where it can be, so the Dagster UI plots it across
partitions (rows, timings, retries) and an operator spots a slow or failing page.
"""

from __future__ import annotations

from typing import Any

import dagster as dg

_DESCRIPTIONS = {
    "well_code": "Well identifier from the source (WellCode); part of the key.",
    "production_date": "Production day (ProductionDate); part of the key.",
    "oil_production": "Oil volume for the day; NULL when the source has none.",
    "gas_production": "Gas volume for the day; NULL when the source has none.",
    "water_production": "Water volume for the day; NULL when the source has none.",
    "source_page": "Page (partition) that last wrote the row.",
    "run_id": "Dagster run that last wrote the row.",
    "imported_at": "When the row was first inserted (UTC).",
    "updated_at": "When the row's values last changed (UTC).",
}

COLUMN_SCHEMA = dg.TableSchema(
    columns=[
        dg.TableColumn("well_code", "VARCHAR", description=_DESCRIPTIONS["well_code"],
                       constraints=dg.TableColumnConstraints(nullable=False)),
        dg.TableColumn("production_date", "DATE", description=_DESCRIPTIONS["production_date"],
                       constraints=dg.TableColumnConstraints(nullable=False)),
        dg.TableColumn("oil_production", "DOUBLE", description=_DESCRIPTIONS["oil_production"]),
        dg.TableColumn("gas_production", "DOUBLE", description=_DESCRIPTIONS["gas_production"]),
        dg.TableColumn("water_production", "DOUBLE", description=_DESCRIPTIONS["water_production"]),
        dg.TableColumn("source_page", "INTEGER", description=_DESCRIPTIONS["source_page"]),
        dg.TableColumn("run_id", "VARCHAR", description=_DESCRIPTIONS["run_id"]),
        dg.TableColumn("imported_at", "TIMESTAMP", description=_DESCRIPTIONS["imported_at"]),
        dg.TableColumn("updated_at", "TIMESTAMP", description=_DESCRIPTIONS["updated_at"]),
    ],
    constraints=dg.TableConstraints(other=["PRIMARY KEY (well_code, production_date)"]),
)

REJECTS_COLUMN_SCHEMA = dg.TableSchema(
    columns=[
        dg.TableColumn("page", "INTEGER", description="Page the record came from."),
        dg.TableColumn("run_id", "VARCHAR"),
        dg.TableColumn("well_code", "VARCHAR", description="Raw key text as received."),
        dg.TableColumn("production_date", "VARCHAR", description="Raw date text as received."),
        dg.TableColumn("column_name", "VARCHAR", description="Column that failed."),
        dg.TableColumn("check_name", "VARCHAR", description="Check that failed."),
        dg.TableColumn("value", "VARCHAR", description="Offending raw value."),
        dg.TableColumn("reason", "VARCHAR", description="All failures of the record, readable."),
        dg.TableColumn("raw_record", "VARCHAR", description="The record as received (JSON)."),
        dg.TableColumn("rejected_at", "TIMESTAMP"),
    ]
)


def page_metadata(figures: dict[str, Any]) -> dict[str, Any]:
    """Metadata for one page's materialization, from the ledger's figures."""
    md: dict[str, Any] = {
        "dagster/row_count": dg.MetadataValue.int(int(figures.get("rows_new", 0) + figures.get("rows_updated", 0)
                                                      + figures.get("rows_duplicate", 0))),
        "status": figures["status"],
        "page": dg.MetadataValue.int(int(figures["page"])),
        "top": dg.MetadataValue.int(int(figures["top"])),
    }
    if figures.get("skip") is not None:  # read by offset
        md["skip"] = dg.MetadataValue.int(int(figures["skip"]))
    for name in ("rows_fetched", "rows_new", "rows_updated", "rows_duplicate", "rows_deleted", "rows_rejected",
                 "rows_repaired", "in_page_duplicates", "retries", "bytes"):
        if figures.get(name) is not None:
            md[name] = dg.MetadataValue.int(int(figures[name]))
    if figures.get("source_count") is not None:
        md["source_count"] = dg.MetadataValue.int(int(figures["source_count"]))
    for name in ("fetch_seconds", "validate_seconds", "db_seconds", "throttle_seconds"):
        if figures.get(name) is not None:
            md[name] = dg.MetadataValue.float(round(float(figures[name]), 4))
    if figures.get("cache_hit") is not None:
        md["cache_hit"] = dg.MetadataValue.bool(bool(figures["cache_hit"]))
    for name in ("first_key", "last_key"):
        if figures.get(name):
            md[name] = dg.MetadataValue.text(str(figures[name]))
    if figures.get("read_by"):
        md["read_by"] = dg.MetadataValue.text(str(figures["read_by"]))
    if figures.get("error"):
        md["error"] = dg.MetadataValue.text(str(figures["error"]))
    # The column schema is definition metadata of the asset (the UI shows it there):
    # repeating it on every page's event doubled the cost of storing each event.
    return md
