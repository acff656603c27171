"""Test helpers for the storage tests: page records and PageWrite values."""

import datetime as dt

from well_assets.storage import PageWrite
from well_assets.validation.page import validate_page

SOURCE = "http://127.0.0.1:8000/odata/WellProduction"


def rec(code="WELL_001", day=1, oil=1.0, gas=2.0, water=3.0):
    return {
        "WellCode": code,
        "ProductionDate": str(dt.date(2023, 1, 1) + dt.timedelta(days=day - 1)),
        "OilProduction": oil,
        "GasProduction": gas,
        "WaterProduction": water,
    }


def make_page(page, records, run_id="run-1", **kw):
    v = validate_page(records)
    return PageWrite(
        page=page,
        partition_key=f"{page:05d}",
        run_id=run_id,
        valid=v.valid,
        rejects=v.rejects,
        in_page_duplicates=v.in_page_duplicates,
        skip=page * 1000,
        top=1000,
        source=SOURCE,
        page_size=1000,
        rows_fetched=len(records),
        validate_seconds=v.validate_seconds,
        **kw,
    )
