"""Parsing of OData system query options and the opaque `$skiptoken` and `$deltatoken`.

The raw query string is split and percent-decoded here (not by the framework) so both
`%20` and `+` are accepted for spaces. `Query` is the normalized request: filter and
orderby text (the view cache key), parsed polars expressions, select list, top/skip,
count. A continuation token is base64-url JSON of the original options plus the position
of the next row and the remaining `$top` budget, and, when the read tracks changes, the
change-log point its first page was served at (the last page's delta link names it).

A `$deltatoken` is base64-url JSON too: the change-log history and version the changes are
counted from, the tracked read's `$filter` and `$select` (never its `$top`, `$skip` or
`$orderby`: a delta covers the whole filtered set), and for a page of a delta the version
range's end and the position in its keys, so every page answers from the same range.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from dataclasses import dataclass, field, replace
from urllib.parse import unquote_plus

import polars as pl

from .filters import ANY, PROPERTY_TYPES, QueryError, Span, parse_filter, parse_filter_span

SUPPORTED = {"$filter", "$orderby", "$select", "$top", "$skip", "$count", "$format", "$skiptoken"}
_INT = re.compile(r"[0-9]+")


@dataclass(frozen=True)
class Query:
    filter: str | None = None
    orderby: str | None = None
    select: tuple[str, ...] | None = None
    top: int | None = None
    skip: int = 0
    count: bool = False
    # continuation state: next row position, remaining $top budget, original $skip
    position: int = 0
    remaining: int | None = None
    original_skip: int = 0
    continuation: bool = False
    # change tracking: (history, version) of the first page's data; None: not tracked
    delta_start: tuple[str, int] | None = None
    filter_expr: pl.Expr | None = field(default=None, compare=False, repr=False)
    filter_span: Span = field(default=ANY, compare=False, repr=False)  # WellCode values it can match
    sort_by: tuple[tuple[str, bool], ...] = ()

    @property
    def view_key(self) -> tuple:
        return (self.filter, self.sort_by)


def parse_query_string(raw: str) -> dict[str, str]:
    """Percent-decode (`+` and `%20` are spaces); a repeated system option is an error."""
    params: dict[str, str] = {}
    for part in raw.split("&"):
        if not part:
            continue
        name, _, value = part.partition("=")
        name, value = unquote_plus(name), unquote_plus(value)
        if name in params and name.startswith("$"):
            raise QueryError(f"query option {name} specified more than once")
        params[name] = value
    return params


def parse_orderby(text: str) -> tuple[tuple[str, bool], ...]:
    items = []
    for item in text.split(","):
        words = item.split()
        if not words or len(words) > 2 or (len(words) == 2 and words[1] not in ("asc", "desc")):
            raise QueryError(f"$orderby: invalid item {item.strip()!r}; use 'Property [asc|desc]'")
        _check_property(words[0])
        items.append((words[0], len(words) == 2 and words[1] == "desc"))
    return tuple(items)


def parse_select(text: str) -> tuple[str, ...] | None:
    names = [s.strip() for s in text.split(",")]
    if "*" in names:
        return None
    for name in names:
        if not name:
            raise QueryError("$select: empty property name")
        _check_property(name)
    return tuple(n for n in PROPERTY_TYPES if n in names)  # entity-type order


def _check_property(name: str) -> None:
    if name not in PROPERTY_TYPES:
        raise QueryError(
            f"Could not find a property named '{name}' on type 'WellProduction'",
            code="PropertyNotFound",
        )


def _non_negative_int(name: str, value: str) -> int:
    if not _INT.fullmatch(value.strip()):
        raise QueryError(f"{name} must be a non-negative integer, got {value!r}")
    return int(value)


def _check_format(params: dict[str, str]) -> None:
    fmt = params.get("$format")
    if fmt is not None and fmt.split(";")[0].strip() not in ("json", "application/json"):
        raise QueryError(f"$format={fmt!r} is not supported; use json", code="NotAcceptable", status=406)


def parse_options(params: dict[str, str]) -> Query:
    """Build a Query from decoded parameters (a `$skiptoken` overrides the rest)."""
    unknown = sorted(n for n in params if n.startswith("$") and n not in SUPPORTED)
    if unknown:
        raise QueryError(f"unsupported query option(s): {', '.join(unknown)}", code="NotImplemented", status=501)
    _check_format(params)
    if "$skiptoken" in params:
        return decode_skiptoken(params["$skiptoken"])
    return _build(params)


def _build(params: dict[str, str]) -> Query:
    count_text = params.get("$count", "false")
    if count_text not in ("true", "false"):
        raise QueryError(f"$count must be true or false, got {count_text!r}")
    top = _non_negative_int("$top", params["$top"]) if "$top" in params else None
    skip = _non_negative_int("$skip", params["$skip"]) if "$skip" in params else 0
    filt = params.get("$filter")
    orderby = params.get("$orderby")
    expr, span = parse_filter_span(filt) if filt is not None else (None, ANY)
    q = Query(
        filter=filt,
        orderby=orderby,
        select=parse_select(params["$select"]) if "$select" in params else None,
        top=top,
        skip=skip,
        count=count_text == "true",
        position=skip,
        remaining=top,
        original_skip=skip,
        filter_expr=expr,
        filter_span=span,
        sort_by=parse_orderby(orderby) if orderby is not None else (),
    )
    return q


def encode_skiptoken(q: Query, position: int, remaining: int | None) -> str:
    state = {
        "f": q.filter,
        "o": q.orderby,
        "s": list(q.select) if q.select is not None else None,
        "c": q.count,
        "k": q.original_skip,
        "t": q.top,
        "p": position,
        "r": remaining,
    }
    if q.delta_start is not None:
        state["dh"], state["dv"] = q.delta_start
    raw = json.dumps(state, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_skiptoken(token: str) -> Query:
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        st = json.loads(raw)
        params = {"$count": "true" if st["c"] else "false"}
        if st["f"] is not None:
            params["$filter"] = st["f"]
        if st["o"] is not None:
            params["$orderby"] = st["o"]
        if st["s"] is not None:
            params["$select"] = ",".join(st["s"]) or "*"
        if st["t"] is not None:
            params["$top"] = str(int(st["t"]))
        params["$skip"] = str(int(st["k"]))
        position, remaining = int(st["p"]), st["r"]
        if position < 0 or (remaining is not None and int(remaining) < 0):
            raise ValueError("negative position")
        delta_start = (str(st["dh"]), int(st["dv"])) if "dv" in st else None
        base = _build(params)
    except (ValueError, KeyError, TypeError, binascii.Error, json.JSONDecodeError, QueryError):
        raise QueryError("invalid $skiptoken", code="InvalidSkipToken") from None
    return replace(
        base,
        position=position,
        remaining=None if remaining is None else int(remaining),
        continuation=True,
        delta_start=delta_start,
    )


# -- change tracking ------------------------------------------------------------------


@dataclass(frozen=True)
class DeltaRequest:
    """A GET of a delta link (``upto`` None: the changes up to now) or of a page of a delta
    (the changes in (since, upto], from the ``position``-th changed key on)."""

    history: str
    since: int
    upto: int | None = None
    position: int = 0
    filter: str | None = None
    select: tuple[str, ...] | None = None
    filter_expr: pl.Expr | None = field(default=None, compare=False, repr=False)


def _b64(state: dict) -> str:
    raw = json.dumps(state, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def encode_deltatoken(history: str, since: int, filter: str | None, select: tuple[str, ...] | None,
                      upto: int | None = None, position: int = 0) -> str:
    state = {"h": history, "v": since, "f": filter, "s": list(select) if select is not None else None}
    if upto is not None:
        state.update(u=upto, p=position)
    return _b64(state)


def parse_delta_options(params: dict[str, str]) -> DeltaRequest:
    """A delta link's options: its `$deltatoken` and at most `$format` (it is used as is)."""
    others = sorted(n for n in params if n.startswith("$") and n not in ("$deltatoken", "$format"))
    if others:
        raise QueryError(f"a delta link takes no other query options, got {', '.join(others)}")
    _check_format(params)
    token = params["$deltatoken"]
    try:
        st = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        history, since = str(st["h"]), int(st["v"])
        upto = int(st["u"]) if "u" in st else None
        position = int(st.get("p", 0))
        if since < 0 or position < 0 or (upto is not None and upto < since):
            raise ValueError("negative version or position")
        filt = st["f"]
        select = parse_select(",".join(st["s"]) or "*") if st["s"] is not None else None
        expr = parse_filter(filt) if filt is not None else None
    except (ValueError, KeyError, TypeError, AttributeError, binascii.Error, json.JSONDecodeError, QueryError):
        raise QueryError("invalid $deltatoken", code="InvalidDeltaToken") from None
    return DeltaRequest(history=history, since=since, upto=upto, position=position, filter=filt, select=select,
                        filter_expr=expr)
