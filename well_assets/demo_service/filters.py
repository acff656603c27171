"""A small OData `$filter` parser: tokenizer + recursive descent -> polars expression.

Grammar (a subset of OData v4 ABNF, enough for production data):

    expr    := and_ ("or" and_)*
    and_    := unary ("and" unary)*
    unary   := "not" unary | compare
    compare := operand (("eq"|"ne"|"gt"|"ge"|"lt"|"le") operand)?
    operand := "(" expr ")" | Property | literal
    literal := 'string' ('' escapes a quote) | 2024-01-01 | -12.5e3 | null | true | false

Comparisons are type-checked against the entity type (string, date, decimal). Null
semantics follow OData: `eq null` / `ne null` test for null, `ne` is true for a null
value, ordering comparisons with null are false.

Beside the expression, the parser works out a ``Span``: the `WellCode` values a record can
have and still match (a superset, never a subset). A database-backed OData service answers
a key-range `$filter` from its primary-key index; the demo service does the same with the
span (``Snapshot.candidates``), so a range read or count costs the rows near the range,
not a scan of the whole set.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from typing import Any

import polars as pl

PROPERTY_TYPES = {
    "WellCode": "string",
    "ProductionDate": "date",
    "OilProduction": "decimal",
    "GasProduction": "decimal",
    "WaterProduction": "decimal",
}
COMPARISONS = ("eq", "ne", "gt", "ge", "lt", "le")


class QueryError(ValueError):
    """A query option is invalid; `status` is the HTTP status to answer with."""

    def __init__(self, message: str, code: str = "BadRequest", status: int = 400) -> None:
        super().__init__(message)
        self.message, self.code, self.status = message, code, status


_TOKEN = re.compile(
    r"""\s*(?:
        (?P<string>'(?:[^']|'')*')
      | (?P<date>\d{4}-\d{2}-\d{2}(?![\w.:]))
      | (?P<number>-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?(?![\w.]))
      | (?P<ident>[A-Za-z_][A-Za-z0-9_]*)
      | (?P<punct>[()])
    )""",
    re.VERBOSE,
)


@dataclass(frozen=True)
class Token:
    kind: str  # string | date | number | ident | punct | end
    text: str
    pos: int


def tokenize(text: str) -> list[Token]:
    tokens, pos = [], 0
    while pos < len(text):
        if text[pos:].strip() == "":
            break
        m = _TOKEN.match(text, pos)
        if not m:
            raise QueryError(f"$filter: unexpected character {text[pos:].lstrip()[:1]!r} at {pos}")
        kind = m.lastgroup or ""
        tokens.append(Token(kind, m.group(kind), m.start(kind)))
        pos = m.end()
    tokens.append(Token("end", "", len(text)))
    return tokens


@dataclass(frozen=True)
class Span:
    """The `WellCode` values a matching record can have: non-null ones in [lo, hi] (None:
    unbounded on that side) when ``values``, and null when ``null``."""

    lo: str | None = None
    hi: str | None = None
    values: bool = True
    null: bool = True

    @property
    def bounded(self) -> bool:
        return not self.values or self.lo is not None or self.hi is not None

    def both(self, other: "Span") -> "Span":
        return Span(_pick(max, self.lo, other.lo), _pick(min, self.hi, other.hi),
                    self.values and other.values, self.null and other.null)

    def either(self, other: "Span") -> "Span":
        if not self.values or not other.values:
            lo, hi = (other.lo, other.hi) if not self.values else (self.lo, self.hi)
        else:
            lo = None if self.lo is None or other.lo is None else min(self.lo, other.lo)
            hi = None if self.hi is None or other.hi is None else max(self.hi, other.hi)
        return Span(lo, hi, self.values or other.values, self.null or other.null)


ANY = Span()


def _pick(fn, a: str | None, b: str | None) -> str | None:
    return b if a is None else a if b is None else fn(a, b)


@dataclass(frozen=True)
class Operand:
    expr: pl.Expr
    type: str  # string | date | decimal | boolean | null
    is_literal: bool = False
    value: Any = None
    span: Span = ANY  # a boolean operand's WellCode span
    column: str | None = None  # the property, for a property operand


class _Parser:
    def __init__(self, text: str) -> None:
        self.tokens = tokenize(text)
        self.i = 0

    def peek(self) -> Token:
        return self.tokens[self.i]

    def take(self) -> Token:
        tok = self.tokens[self.i]
        self.i += 1
        return tok

    def keyword(self, word: str) -> bool:
        tok = self.peek()
        if tok.kind == "ident" and tok.text == word:
            self.i += 1
            return True
        return False

    def parse(self) -> Operand:
        result = self.expr()
        tok = self.peek()
        if tok.kind != "end":
            raise QueryError(f"$filter: unexpected {tok.text!r} at position {tok.pos}")
        if result.type != "boolean":
            raise QueryError("$filter: the expression must be a boolean condition")
        return result

    def expr(self) -> Operand:
        left = self.and_()
        while self.keyword("or"):
            right = self.and_()
            left = Operand(_bool(left, "or") | _bool(right, "or"), "boolean", span=left.span.either(right.span))
        return left

    def and_(self) -> Operand:
        left = self.unary()
        while self.keyword("and"):
            right = self.unary()
            left = Operand(_bool(left, "and") & _bool(right, "and"), "boolean", span=left.span.both(right.span))
        return left

    def unary(self) -> Operand:
        if self.keyword("not"):
            return Operand(~_bool(self.unary(), "not"), "boolean")  # span: ANY
        return self.compare()

    def compare(self) -> Operand:
        left = self.operand()
        tok = self.peek()
        if tok.kind == "ident" and tok.text in COMPARISONS:
            self.i += 1
            return _comparison(left, tok.text, self.operand())
        return left

    def operand(self) -> Operand:
        tok = self.take()
        if tok.kind == "punct" and tok.text == "(":
            inner = self.expr()
            close = self.take()
            if close.text != ")":
                raise QueryError(f"$filter: expected ')' at position {close.pos}")
            return inner
        if tok.kind == "string":
            value = tok.text[1:-1].replace("''", "'")
            return Operand(pl.lit(value), "string", True, value)
        if tok.kind == "date":
            try:
                value = dt.date.fromisoformat(tok.text)
            except ValueError:
                raise QueryError(f"$filter: invalid date literal {tok.text}") from None
            return Operand(pl.lit(value), "date", True, value)
        if tok.kind == "number":
            value = float(tok.text)
            return Operand(pl.lit(value), "decimal", True, value)
        if tok.kind == "ident":
            if tok.text == "null":
                return Operand(pl.lit(None), "null", True, None)
            if tok.text in ("true", "false"):
                return Operand(pl.lit(tok.text == "true"), "boolean", True, tok.text == "true")
            if self.peek().text == "(":
                raise QueryError(f"$filter: function {tok.text}() is not supported; use comparisons")
            if tok.text in PROPERTY_TYPES:
                return Operand(pl.col(tok.text), PROPERTY_TYPES[tok.text], column=tok.text)
            if tok.text in COMPARISONS or tok.text in ("and", "or", "not"):
                raise QueryError(f"$filter: operand expected before {tok.text!r} at position {tok.pos}")
            raise QueryError(
                f"Could not find a property named '{tok.text}' on type 'WellProduction'",
                code="PropertyNotFound",
            )
        if tok.kind == "end":
            raise QueryError("$filter: unexpected end of expression")
        raise QueryError(f"$filter: unexpected {tok.text!r} at position {tok.pos}")


def _bool(op: Operand, word: str) -> pl.Expr:
    if op.type != "boolean":
        raise QueryError(f"$filter: '{word}' needs boolean operands")
    return op.expr


def _comparison(left: Operand, op: str, right: Operand) -> Operand:
    if left.type == "null" or right.type == "null":
        other = right if left.type == "null" else left
        if op not in ("eq", "ne"):
            return Operand(pl.lit(False), "boolean")  # ordering against null is never true
        test = other.expr.is_null() if op == "eq" else other.expr.is_not_null()
        span = ANY
        if other.column == "WellCode":
            span = Span(values=False) if op == "eq" else Span(null=False)
        return Operand(test, "boolean", span=span)
    if left.type != right.type or left.type == "boolean":
        raise QueryError(f"$filter: cannot compare {left.type} with {right.type} using '{op}'")
    a, b = left.expr, right.expr
    expr = {
        "eq": lambda: a.eq(b),
        "ne": lambda: a.ne_missing(b),
        "gt": lambda: a > b,
        "ge": lambda: a >= b,
        "lt": lambda: a < b,
        "le": lambda: a <= b,
    }[op]()
    # Nulls become false, so `not (X gt 1)` keeps OData's two-valued outcome.
    return Operand(expr.fill_null(False), "boolean", span=_well_code_span(left, op, right))


_REVERSED = {"eq": "eq", "ne": "ne", "gt": "lt", "ge": "le", "lt": "gt", "le": "ge"}


def _well_code_span(left: Operand, op: str, right: Operand) -> Span:
    """The span of `WellCode op 'literal'` (either way round); ANY for other comparisons."""
    if right.column == "WellCode" and left.is_literal:
        left, op, right = right, _REVERSED[op], left
    if left.column != "WellCode" or not right.is_literal or op == "ne":  # ne: true for null too
        return ANY
    value = right.value
    return {"eq": Span(value, value, null=False), "gt": Span(lo=value, null=False), "ge": Span(lo=value, null=False),
            "lt": Span(hi=value, null=False), "le": Span(hi=value, null=False)}[op]


def parse_filter(text: str) -> pl.Expr:
    """Parse an OData $filter string; raises QueryError (400) when invalid."""
    return parse_filter_span(text)[0]


def parse_filter_span(text: str) -> tuple[pl.Expr, Span]:
    """The $filter's expression and its WellCode span; raises QueryError (400) when invalid."""
    if not text.strip():
        raise QueryError("$filter must not be empty")
    result = _Parser(text).parse()
    return result.expr, result.span
