"""``validate_page``: raw OData records of one page -> valid rows | rejects with reasons.

The data path of one page: raw OData records (``list[dict]``) -> shape check -> polars
frame with fixed column order and dtypes (numbers and dates parsed, vectorized) -> the
Pandera model (``validation.model``, lazy) -> valid rows | one reject row per rejected
record -> in-page duplicate keys removed (first occurrence kept).

Decisions (the README has them too):

* Shape: a required OData property missing from *every* record, or any property that is
  not one of the five known ones, raises ``errors.ValidationError`` naming them (a renamed
  column shows up as both). A property missing from *some* records is read as null. Keys
  containing ``@`` are OData annotations and are ignored.
* Parsing: JSON ints/floats, exponent form and strings (IEEE754Compatible) all parse;
  surrounding whitespace in strings is tolerated. Unparseable text ("n/a", "", true) and
  NaN/inf are rejected with check ``parse_float``; a date must be exactly ``YYYY-MM-DD``
  and a real calendar date, else ``parse_date``. A null volume is accepted as NULL.
  ``well_code`` is kept verbatim (no trimming).
* Rules: Pandera's. Its failure cases name the column and the check (``not_nullable``,
  ``str_length(1, None)``, ``greater_than_or_equal_to(0)``,
  ``less_than_or_equal_to(<max_daily_volume>)``); a cell whose text did not parse is
  reported once, as ``parse_*``, not again by Pandera as null.
* Rejects: one row per rejected record. ``column``/``check``/``value`` are those of the
  record's FIRST failure in column order (well_code, production_date, oil_production,
  gas_production, water_production); ``reason`` lists every failure of the record joined
  with ``"; "``. ``raw_record`` is the record as canonical JSON (sorted keys, compact
  separators), so re-reading the same record gives the same text (the store relies on
  this for idempotent rejects).
"""

import json
import time
from dataclasses import dataclass
from functools import lru_cache
from itertools import repeat
from typing import Any

import polars as pl

from well_assets import errors
from well_assets.validation.columns import (
    COLUMN_POSITION,
    COLUMN_TO_ODATA,
    COLUMNS,
    KEY,
    ODATA_TO_COLUMN,
    REJECT_COLUMNS,
    VOLUME_COLUMNS,
    empty_rejects_frame,
    empty_valid_frame,
    has_duplicate_keys,
)
from well_assets.validation.model import ValidationSettings, failure_cases

_ISO_DATE = r"^\d{4}-\d{2}-\d{2}$"


@dataclass
class ValidatedPage:
    valid: pl.DataFrame  # COLUMNS in order/dtypes, in-page duplicate keys removed (first kept)
    rejects: pl.DataFrame  # REJECT_COLUMNS, one row per rejected record
    in_page_duplicates: int
    validate_seconds: float
    # The valid rows' keys strictly ascend (as a source ordered by the key sends them): the
    # first row holds the smallest key and the last the largest (pages.ranges.within).
    keys_ascending: bool = False
    # The checksum of the valid rows' keys (storage.contents), computed beside validation,
    # off the writer's thread; None: not computed (the writer then computes it itself).
    key_checksum: int | None = None

    @property
    def rows_rejected(self) -> int:
        return self.rejects.height


# ----------------------------------------------------------------------- parsing


def _to_text(value: Any) -> str | None:
    """Raw text of one JSON value, as reported in rejects."""
    if value is None:
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return json.dumps(value, sort_keys=True, default=str)
    return repr(value)


def _raw_series(values: list[Any], numeric: bool) -> pl.Series:
    """One column of raw values as a Series: Float64 when every value is a JSON number
    (or null) and ``numeric`` is set, else Utf8 raw text."""
    kinds = set(map(type, values))
    if numeric and kinds <= {int, float, type(None)}:
        try:
            return pl.Series(values, dtype=pl.Float64, strict=True)
        except (TypeError, OverflowError, pl.exceptions.PolarsError):
            pass
    if kinds <= {str, type(None)}:
        return pl.Series(values, dtype=pl.Utf8)
    return pl.Series([_to_text(v) for v in values], dtype=pl.Utf8)


def _volume_exprs(column: str, raw_dtype: pl.DataType) -> tuple[pl.Expr, pl.Expr]:
    raw = pl.col(column)
    parsed = raw if raw_dtype == pl.Float64 else raw.str.strip_chars().cast(pl.Float64, strict=False)
    failed = raw.is_not_null() & (parsed.is_null() | parsed.is_nan() | parsed.is_infinite()).fill_null(True)
    value = pl.when(failed).then(None).otherwise(parsed)
    return value.alias(column), failed.alias(column)


def _date_exprs(column: str) -> tuple[pl.Expr, pl.Expr]:
    raw = pl.col(column)
    parsed = pl.when(raw.str.contains(_ISO_DATE)).then(raw.str.to_date("%Y-%m-%d", strict=False))
    return parsed.alias(column), (raw.is_not_null() & parsed.is_null()).alias(column)


def _check_shape(records: list[dict]) -> None:
    if not all(map(isinstance, records, repeat(dict))):
        i, rec = next((i, r) for i, r in enumerate(records) if not isinstance(r, dict))
        raise errors.ValidationError(
            f"page shape is wrong: record {i} is a {type(rec).__name__}, not an object",
            record_index=i,
        )
    present = {k for k in set().union(*records) if "@" not in k}
    missing = [c for c in ODATA_TO_COLUMN if c not in present]
    unexpected = sorted(present - ODATA_TO_COLUMN.keys())
    if missing or unexpected:
        parts = []
        if missing:
            parts.append("missing column(s) " + ", ".join(missing))
        if unexpected:
            parts.append("unexpected column(s) " + ", ".join(unexpected))
        raise errors.ValidationError(
            "page shape is wrong: " + "; ".join(parts),
            missing=missing or None,
            unexpected=unexpected or None,
            expected=list(ODATA_TO_COLUMN),
        )


@lru_cache(maxsize=16)
def _parse_exprs(volume_dtypes: tuple[pl.DataType, ...]) -> list[pl.Expr]:
    """The parse step's expressions for raw volume columns of these dtypes: the typed
    columns, then one failure mask per parsed column. Built once per dtype combination
    (building them anew was a measurable share of every page)."""
    values: list[pl.Expr] = [pl.col("well_code")]
    failed: list[pl.Expr] = []
    date_value, date_failed = _date_exprs("production_date")
    values.append(date_value)
    failed.append(date_failed)
    for column, dtype in zip(VOLUME_COLUMNS, volume_dtypes):
        v, f = _volume_exprs(column, dtype)
        values.append(v)
        failed.append(f)
    return [e.cast(COLUMNS[c]) for e, c in zip(values, COLUMNS)] + [
        f.alias(f"__failed_{i}") for i, f in enumerate(failed)
    ]


def _raw_frame(records: list[dict]) -> pl.DataFrame:
    """The records' five columns as sent: volumes Float64 when every value is a JSON number
    (or null), else text; the rest text. The only per-record Python work of a page."""
    return pl.DataFrame(
        [
            _raw_series([r.get(name) for r in records], numeric=column in VOLUME_COLUMNS).alias(column)
            for name, column in ODATA_TO_COLUMN.items()
        ]
    )


def _parse(raw: pl.DataFrame) -> pl.DataFrame:
    """COLUMNS (order + dtypes) of ``raw``, then one parse failure mask per parsed column
    (``__failed_<i>``): one polars ``select`` over all columns and every row given."""
    return raw.select(_parse_exprs(tuple(raw.schema[c] for c in VOLUME_COLUMNS)))


def _split_parsed(both: pl.DataFrame) -> tuple[pl.DataFrame, dict[str, pl.Series]]:
    frame = both.select(list(COLUMNS))
    parse_failures = {}
    for i, column in enumerate(list(COLUMNS)[1:]):
        mask = both[f"__failed_{i}"]
        if mask.any():
            parse_failures[column] = mask
    return frame, parse_failures


def records_to_frame(records: list[dict]) -> tuple[pl.DataFrame, dict[str, pl.Series]]:
    """Parse records into a frame with COLUMNS (order + dtypes) and per-column parse
    failure masks (only for columns that had failures). Shape must be checked first."""
    return _split_parsed(_parse(_raw_frame(records)))


# -------------------------------------------------------------------- validation


def _failures(parse_failures: dict[str, pl.Series], cases: pl.DataFrame | None) -> list[tuple[int, str, str]]:
    """All cell failures as (row index, column, check), sorted by row then column order:
    the parse step's, then Pandera's failure cases (a cell that did not parse is null for
    Pandera, and reported once, as a parse failure)."""
    out: set[tuple[int, str, str]] = set()
    for column, mask in parse_failures.items():
        check = "parse_date" if column == "production_date" else "parse_float"
        out.update((idx, column, check) for idx in mask.arg_true().to_list())
    parsed_cells = {(idx, column) for idx, column, _ in out}
    if cases is not None and cases.height:
        if cases["index"].null_count():
            # A failure of the frame as a whole (columns, order, dtypes): a bug in the parse step.
            raise errors.ValidationError(
                "page failed schema-level validation: "
                + "; ".join(f"{r['column']}: {r['check']}" for r in cases.filter(pl.col("index").is_null()).iter_rows(named=True))
            )
        for idx, column, check in cases.select("index", "column", "check").iter_rows():
            if (idx, column) not in parsed_cells:
                out.add((int(idx), column, check))
    return sorted(out, key=lambda f: (f[0], COLUMN_POSITION[f[1]], f[2]))


def _describe(column: str, check: str, raw: str | None) -> str:
    shown = "null" if raw is None else repr(raw)
    if check == "parse_float":
        return f"{column}: {check}: {shown} is not a number"
    if check == "parse_date":
        return f"{column}: {check}: {shown} is not a valid YYYY-MM-DD date"
    return f"{column}: {check} failed for {shown}"


def _build_rejects(
    records: list[dict], failures: list[tuple[int, str, str]]
) -> tuple[pl.DataFrame, list[int]]:
    by_row: dict[int, list[tuple[str, str]]] = {}
    for idx, column, check in failures:
        by_row.setdefault(idx, []).append((column, check))
    rows = []
    for idx, fails in by_row.items():  # insertion order = row order
        rec = records[idx]
        raw = {c: _to_text(rec.get(COLUMN_TO_ODATA[c])) for c, _ in fails}
        first_col, first_check = fails[0]
        rows.append(
            (
                _to_text(rec.get("WellCode")),
                _to_text(rec.get("ProductionDate")),
                first_col,
                first_check,
                raw[first_col],
                "; ".join(_describe(c, k, raw[c]) for c, k in fails),
                json.dumps(rec, sort_keys=True, separators=(",", ":"), default=str),
            )
        )
    frame = pl.DataFrame(rows, schema=REJECT_COLUMNS, orient="row")
    return frame, list(by_row)


@dataclass
class ParsedPage:
    """One page after the shape check, waiting for the parse step and the Pandera model
    (``judge_pages``, which does both for the pages waiting together)."""

    records: list[dict]
    raw: pl.DataFrame  # the records' columns as sent (see _raw_frame)
    parse_seconds: float


def parse_page(records: list[dict]) -> ParsedPage:
    """The shape check of one page and its records as columns (see the module docstring).

    Raises ``errors.ValidationError`` when the page shape is wrong (missing or
    unexpected columns)."""
    started = time.perf_counter()
    if not records:
        return ParsedPage(records, pl.DataFrame(), time.perf_counter() - started)
    _check_shape(records)
    return ParsedPage(records, _raw_frame(records), time.perf_counter() - started)


def _judged(parsed: ParsedPage, frame: pl.DataFrame, parse_failures: dict[str, pl.Series],
            cases: pl.DataFrame | None, judge_seconds: float, keys_ascending: bool) -> ValidatedPage:
    """One page's outcome, given its parsed frame, Pandera's failure cases of its rows, and
    whether its keys strictly ascend (then none repeats)."""
    started = time.perf_counter()
    records = parsed.records
    failures = _failures(parse_failures, cases) if (parse_failures or cases is not None) else []
    if failures:
        rejects, rejected_idx = _build_rejects(records, failures)
        keep = pl.repeat(True, frame.height, dtype=pl.Boolean, eager=True)
        keep.scatter(rejected_idx, False)
        valid = frame.filter(keep)
    else:
        rejects, valid = empty_rejects_frame(), frame
    before = valid.height
    if not keys_ascending and has_duplicate_keys(valid):
        valid = valid.unique(subset=list(KEY), keep="first", maintain_order=True)
    return ValidatedPage(
        valid=valid,
        rejects=rejects,
        in_page_duplicates=before - valid.height,
        validate_seconds=parsed.parse_seconds + judge_seconds + time.perf_counter() - started,
        keys_ascending=keys_ascending,
    )


def _ascending_by_page(tagged: pl.DataFrame) -> list[bool]:
    """Per page of ``tagged`` (KEY and ``__page``): whether its keys strictly ascend (a null
    key counts as out of order)."""
    code, day, page = (pl.col(name) for name in (*KEY, "__page"))
    up = (page != page.shift()).fill_null(True) | (
        (code > code.shift()) | ((code == code.shift()) & (day > day.shift()))).fill_null(False)
    return (tagged.with_columns(up=up).group_by("__page").agg(pl.col("up").all()).sort("__page")
            .get_column("up").to_list())


def _parsed_frames(pages: list[ParsedPage]) -> tuple[list[pl.DataFrame], pl.DataFrame]:
    """The parse step over ``pages`` (none empty): every page's ``_parse`` result, and all of
    them as one frame. Pages whose raw columns have the same dtypes (nearly always all of
    them) are parsed in one select: the step's cost is mostly per call, like Pandera's."""
    groups: dict[tuple, list[int]] = {}
    for n, page in enumerate(pages):
        groups.setdefault(tuple(page.raw.schema.dtypes()), []).append(n)
    parsed: list[pl.DataFrame | None] = [None] * len(pages)
    whole = None
    for members in groups.values():
        raws = [pages[n].raw for n in members]
        both = _parse(pl.concat(raws, how="vertical", rechunk=False) if len(raws) > 1 else raws[0])
        offset = 0
        for n in members:
            parsed[n] = both.slice(offset, pages[n].raw.height)
            offset += pages[n].raw.height
        if len(groups) == 1:
            whole = both
    if whole is None:
        whole = pl.concat(parsed, how="vertical", rechunk=False)
    return parsed, whole


def judge_pages(pages: list[ParsedPage], settings: ValidationSettings = ValidationSettings()) -> list[ValidatedPage]:
    """The parse step and the Pandera model over several pages at once; one ValidatedPage each.

    Both cost mostly per call (a query per check), not per row: judging the pages waiting
    together costs little more than judging one (docs/benchmarks.md). Each page's parse
    failures and failure cases are its own rows', and its key order and in-page duplicates
    its own keys', so the outcome of a page does not depend on the pages judged with it. A
    failure of the frame as a whole (a bug in the parse step) raises
    ``errors.ValidationError`` for the whole call (``pages.fetcher.judge`` then judges the
    pages one by one, so only the page it belongs to fails)."""
    if not pages:
        return []
    started = time.perf_counter()
    judged = [p for p in pages if p.raw.height]
    cases = None
    if judged:
        parsed, both = _parsed_frames(judged)
        frame = both.select(list(COLUMNS))
        cases = failure_cases(frame, settings)
        # Whether each page's keys strictly ascend, for all of them at once: a page whose
        # keys do is in key order and repeats none (only the others are looked at for that).
        tagged = frame.select(KEY).with_columns(__page=pl.concat(
            [pl.repeat(n, p.raw.height, dtype=pl.Int32, eager=True) for n, p in enumerate(judged)]))
        ascending = _ascending_by_page(tagged)
    rows = sum(p.raw.height for p in judged) or 1
    share = (time.perf_counter() - started) / rows
    out, offset, at = [], 0, 0
    for page in pages:
        height = page.raw.height
        if not height:
            out.append(ValidatedPage(valid=empty_valid_frame(), rejects=empty_rejects_frame(), in_page_duplicates=0,
                                     validate_seconds=page.parse_seconds))
            continue
        own = None
        if cases is not None:
            own = cases.filter(pl.col("index").is_null() | pl.col("index").is_between(offset, offset + height - 1))
            own = own.with_columns(pl.col("index") - offset) if own.height else None
        offset += height
        page_frame, parse_failures = _split_parsed(parsed[at])
        out.append(_judged(page, page_frame, parse_failures, own, share * height, ascending[at]))
        at += 1
    return out


def validate_page(
    records: list[dict], settings: ValidationSettings = ValidationSettings()
) -> ValidatedPage:
    """Validate one page of raw OData records; see the module docstring for the rules.

    Raises ``errors.ValidationError`` when the page shape is wrong (missing or
    unexpected columns); bad rows never raise, they become rejects.
    """
    return judge_pages([parse_page(records)], settings)[0]


__all__ = ["ParsedPage", "judge_pages", "parse_page", "records_to_frame", "validate_page"]
