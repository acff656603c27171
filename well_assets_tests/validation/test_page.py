"""validate_page: parsing, Pandera checks, rejects, in-page duplicates, page shape."""

import datetime as dt
import json
import math

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from well_assets import errors
from well_assets.validation.columns import COLUMNS, KEY, ODATA_TO_COLUMN, REJECT_COLUMNS, VOLUME_COLUMNS
from well_assets.validation.model import ValidationSettings, well_production_model
from well_assets.validation.page import validate_page


def rec(code="WELL_001", date="2023-01-01", oil=1.0, gas=2.0, water=3.0, **extra):
    r = {
        "WellCode": code,
        "ProductionDate": date,
        "OilProduction": oil,
        "GasProduction": gas,
        "WaterProduction": water,
    }
    r.update(extra)
    return r


def test_constants_fix_order_and_dtypes():
    assert list(COLUMNS) == [
        "well_code",
        "production_date",
        "oil_production",
        "gas_production",
        "water_production",
    ]
    assert list(COLUMNS.values()) == [pl.Utf8, pl.Date, pl.Float64, pl.Float64, pl.Float64]
    assert KEY == ("well_code", "production_date")
    assert VOLUME_COLUMNS == ("oil_production", "gas_production", "water_production")
    assert list(ODATA_TO_COLUMN.values()) == list(COLUMNS)
    assert list(REJECT_COLUMNS) == [
        "well_code",
        "production_date",
        "column",
        "check",
        "value",
        "reason",
        "raw_record",
    ]


@pytest.mark.parametrize(
    "raw, expected",
    [
        (408, 408.0),
        (408.0, 408.0),
        ("408.000", 408.0),
        ("408", 408.0),
        ("2.5e+2", 250.0),
        ("2.5E+2", 250.0),
        (2.5e2, 250.0),
        (0, 0.0),
        ("0.000", 0.0),
        (None, None),
        (10**6, 1e6),
        (" 12.5 ", 12.5),
    ],
)
def test_volume_forms_that_parse(raw, expected):
    page = validate_page([rec(oil=raw)])
    assert page.rejects.height == 0
    assert page.valid.height == 1
    assert page.valid["oil_production"][0] == expected


@pytest.mark.parametrize(
    "raw, check, value_text",
    [
        ("n/a", "parse_float", "n/a"),
        ("", "parse_float", ""),
        ("NaN", "parse_float", "NaN"),
        ("inf", "parse_float", "inf"),
        ("-Infinity", "parse_float", "-Infinity"),
        (float("nan"), "parse_float", "nan"),
        (True, "parse_float", "true"),
        ({"v": 1}, "parse_float", '{"v": 1}'),
        (-1, "greater_than_or_equal_to(0)", "-1"),
        ("-0.5", "greater_than_or_equal_to(0)", "-0.5"),
        (2.5e21, "less_than_or_equal_to(1000000000.0)", "2.5e+21"),
        ("2.5e+21", "less_than_or_equal_to(1000000000.0)", "2.5e+21"),
        (5e12, "less_than_or_equal_to(1000000000.0)", "5000000000000.0"),
    ],
)
def test_volume_forms_that_reject(raw, check, value_text):
    page = validate_page([rec(gas=raw), rec(date="2023-01-02")])
    assert page.valid.height == 1
    assert page.valid["production_date"].to_list() == [dt.date(2023, 1, 2)]
    assert page.rejects.height == 1
    r = page.rejects.row(0, named=True)
    assert r["column"] == "gas_production"
    assert r["check"] == check
    assert r["value"] == value_text
    assert r["well_code"] == "WELL_001" and r["production_date"] == "2023-01-01"
    assert "gas_production" in r["reason"] and check in r["reason"]
    assert json.loads(r["raw_record"])["WellCode"] == "WELL_001"


def test_not_a_number_reason_and_max_volume_setting():
    page = validate_page([rec(oil="NaN")])
    assert "not a number" in page.rejects["reason"][0]
    # max_daily_volume is a runtime setting: 2e3 passes at the default, fails at 1e3
    assert validate_page([rec(oil=2000)]).rejects.height == 0
    strict = validate_page([rec(oil=2000)], ValidationSettings(max_daily_volume=1000))
    assert strict.rejects["check"].to_list() == ["less_than_or_equal_to(1000.0)"]
    # the model is built once per settings value
    assert well_production_model(ValidationSettings(1000)) is well_production_model(ValidationSettings(1000.0))


def test_invalid_max_volume_is_a_config_error():
    with pytest.raises(errors.ConfigError, match="max_daily_volume"):
        validate_page([rec()], ValidationSettings(max_daily_volume=-1))


@pytest.mark.parametrize(
    "raw, ok",
    [
        ("2023-01-01", True),
        ("2024-02-29", True),
        ("2023-02-30", False),
        ("2023-13-01", False),
        ("not-a-date", False),
        ("2023-1-5", False),
        ("2023-01-01T00:00:00Z", False),
        ("20230101", False),
        ("", False),
        (20230101, False),
        (None, False),
    ],
)
def test_dates(raw, ok):
    page = validate_page([rec(date=raw)])
    if ok:
        assert page.valid["production_date"].to_list() == [dt.date.fromisoformat(raw)]
        assert page.rejects.height == 0
        return
    assert page.valid.height == 0
    r = page.rejects.row(0, named=True)
    assert r["column"] == "production_date"
    assert r["check"] == ("not_nullable" if raw is None else "parse_date")
    assert r["production_date"] == (None if raw is None else str(raw))


@pytest.mark.parametrize("code, check", [(None, "not_nullable"), ("", "str_length(1, None)")])
def test_missing_key(code, check):
    page = validate_page([rec(code=code), rec(code="WELL_002")])
    assert page.valid["well_code"].to_list() == ["WELL_002"]
    r = page.rejects.row(0, named=True)
    assert (r["column"], r["check"], r["well_code"]) == ("well_code", check, code)


def test_property_missing_from_some_records_is_null():
    r = rec()
    del r["WellCode"]
    w = rec(date="2023-01-02")
    del w["WaterProduction"]
    page = validate_page([r, w])
    assert page.rejects["check"].to_list() == ["not_nullable"]
    assert page.valid["water_production"].to_list() == [None]


def test_several_failures_one_reject_row_first_failure_named():
    page = validate_page([rec(date="2023-02-30", oil=-1, gas="n/a", water=2.5e21), rec(code=None, oil="NaN")])
    assert page.rejects.height == 2
    first, second = page.rejects.iter_rows(named=True)
    assert (first["column"], first["check"], first["value"]) == ("production_date", "parse_date", "2023-02-30")
    parts = first["reason"].split("; ")
    assert [p.split(":")[0] for p in parts] == [
        "production_date",
        "oil_production",
        "gas_production",
        "water_production",
    ]
    # an unparseable cell is reported once, not also as a null by Pandera
    assert "not_nullable" not in first["reason"]
    assert (second["column"], second["check"]) == ("well_code", "not_nullable")
    assert "oil_production: parse_float" in second["reason"]


def test_in_page_duplicates_first_kept_and_counted():
    records = [
        rec(oil=1.0),
        rec(date="2023-01-02"),
        rec(oil=99.0),  # same key as the first, different values: still a duplicate
        rec(oil=1.0),  # exact copy
        rec(oil=-5),  # same key but rejected: a reject, not a duplicate
    ]
    page = validate_page(records)
    assert page.in_page_duplicates == 2
    assert page.valid.height == 2
    assert page.valid["oil_production"].to_list() == [1.0, 1.0]
    assert page.rejects.height == 1


def test_valid_frame_exact_columns_and_dtypes():
    page = validate_page([rec(oil=None, gas=None, water=None), rec(date="2023-01-02", oil="1")])
    assert page.valid.schema == pl.Schema(COLUMNS)
    assert page.rejects.schema == pl.Schema(REJECT_COLUMNS)
    assert page.validate_seconds > 0


def test_column_order_independence():
    records = [rec(date=f"2023-01-{d:02d}", oil=d, gas=str(d), water=None) for d in range(1, 6)]
    records.append(rec(date="2023-01-09", oil="n/a"))
    shuffled = [dict(reversed(list(r.items()))) for r in records]
    a, b = validate_page(records), validate_page(shuffled)
    assert_frame_equal(a.valid, b.valid)
    assert_frame_equal(a.rejects, b.rejects)  # raw_record is canonical JSON


@pytest.mark.parametrize(
    "mutate, missing, unexpected",
    [
        (lambda r: r.update(OilProd=r.pop("OilProduction")), ["OilProduction"], ["OilProd"]),
        (lambda r: r.pop("WellCode"), ["WellCode"], []),
        (lambda r: r.update(Extra=1), [], ["Extra"]),
    ],
)
def test_wrong_shape_names_the_columns(mutate, missing, unexpected):
    records = [rec(), rec(date="2023-01-02")]
    for r in records:
        mutate(r)
    with pytest.raises(errors.ValidationError) as info:
        validate_page(records)
    msg = str(info.value)
    assert msg.startswith("page shape is wrong")
    for name in missing:
        assert f"missing column(s) {name}" in msg
    for name in unexpected:
        assert f"unexpected column(s) {name}" in msg
    assert info.value.details.get("missing", []) == missing
    assert info.value.details.get("unexpected", []) == unexpected
    assert info.value.to_dict()["error"]["code"] == "VALIDATION_ERROR"


def test_renamed_column_in_one_record_is_a_shape_error():
    records = [rec(), rec(date="2023-01-02")]
    records[1]["OilProd"] = records[1].pop("OilProduction")
    with pytest.raises(errors.ValidationError, match="unexpected column\\(s\\) OilProd"):
        validate_page(records)


def test_annotations_are_ignored():
    page = validate_page([rec(**{"@odata.etag": "W/1", "OilProduction@odata.type": "#Decimal"})])
    assert page.valid.height == 1


def test_non_object_record_is_a_shape_error():
    with pytest.raises(errors.ValidationError, match="record 1"):
        validate_page([rec(), ["not", "an", "object"]])


def test_empty_page():
    page = validate_page([])
    assert page.valid.height == 0 and page.rejects.height == 0
    assert page.valid.schema == pl.Schema(COLUMNS)
    assert page.rejects.schema == pl.Schema(REJECT_COLUMNS)
    assert page.in_page_duplicates == 0


def test_big_page_values_roundtrip():
    records = [
        rec(code=f"WELL_{i // 100:03d}", date=str(dt.date(2023, 1, 1) + dt.timedelta(days=i % 100)), oil=i * 0.5, gas=str(i), water=None)
        for i in range(1000)
    ]
    page = validate_page(records)
    assert page.valid.height == 1000 and page.rejects.height == 0
    assert page.valid["oil_production"].sum() == pytest.approx(sum(i * 0.5 for i in range(1000)))
    assert page.valid["gas_production"][999] == 999.0
    assert not any(math.isnan(v) for v in page.valid["oil_production"].to_list())


def _page_of(day0: int, bad: dict[int, dict]) -> list[dict]:
    """Ten records of consecutive days; the records at the given positions changed."""
    start = dt.date(2023, 1, 1)
    return [rec(**{"date": (start + dt.timedelta(days=day0 + i)).isoformat(), **bad.get(i, {})}) for i in range(10)]


@pytest.mark.parametrize(
    "pages, rejected, duplicates",
    [
        pytest.param([{}, {}, {}], [0, 0, 0], [0, 0, 0], id="all-good"),
        pytest.param([{3: {"oil": -1}}, {}, {0: {"gas": "n/a"}, 9: {"water": 2e9}}], [1, 0, 2], [0, 0, 0],
                     id="bad-rows-in-several-pages"),
        pytest.param([{}, {i: {"oil": -1} for i in range(10)}, {}], [0, 10, 0], [0, 0, 0], id="a-page-all-rejected"),
        pytest.param([{5: {"code": None}}, None, {2: {"date": "2023-02-30"}}], [1, 0, 1], [0, 0, 0],
                     id="with-an-empty-page"),
        pytest.param([{1: {"date": "2023-01-01"}}, {}], [0, 0], [1, 0], id="in-page-duplicate"),
        pytest.param([{}, {0: {"date": "2023-01-01"}}], [0, 0], [0, 0], id="a-key-in-two-pages-is-no-duplicate"),
        pytest.param([{0: {"oil": -1}, 1: {"date": "2023-01-01"}}], [1], [0], id="a-rejected-copy-is-no-duplicate"),
    ],
)
def test_judging_pages_together_gives_each_page_what_it_gets_alone(pages, rejected, duplicates):
    from well_assets.validation.page import judge_pages, parse_page

    records = [[] if bad is None else _page_of(10 * n, bad) for n, bad in enumerate(pages)]
    together = judge_pages([parse_page(r) for r in records])
    for alone, batched in zip((validate_page(r) for r in records), together, strict=True):
        assert_frame_equal(batched.valid, alone.valid)
        assert_frame_equal(batched.rejects, alone.rejects)
        assert batched.in_page_duplicates == alone.in_page_duplicates
    assert [b.rejects.height for b in together] == rejected
    assert [b.in_page_duplicates for b in together] == duplicates
