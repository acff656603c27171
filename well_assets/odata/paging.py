"""Pure functions of OData v4 server-driven paging: URLs, annotations, records.

Kept free of I/O so the rules that lose rows when wrong (nextLink resolution,
same-origin checks, annotation spellings) can be property-tested in isolation.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import quote, urljoin, urlsplit, urlunsplit

# Characters left as-is in query option values. Space is NOT here: it must go
# out as %20 (some servers answer 400 to form-style '+'), and '+' itself must be
# escaped (%2B) or it would be read as a space.
_VALUE_SAFE = "',()*:/@!$;"
_DEFAULT_PORTS = {"http": 80, "https": 443}
_DIGITS_RE = re.compile(r"[0-9]+")  # ASCII only: str.isdigit() accepts '²'
_SECRET_PARAM_RE = re.compile(r"(token|key|secret|passw|pwd|sig|auth|credential)", re.I)


def encode_query(params: list[tuple[str, str]]) -> str:
    """Encode query options with %20 for spaces (never '+')."""
    return "&".join(f"{quote(k, safe='$')}={quote(v, safe=_VALUE_SAFE)}" for k, v in params)


def entity_set_url(base_url: str, entity_set: str) -> str:
    return base_url.rstrip("/") + "/" + entity_set


def resolve_next_link(request_url: str, next_link: str) -> str:
    """Resolve a (possibly relative) nextLink against the URL of the request that returned it.

    The link is otherwise opaque: it is not re-encoded and no options are added.
    """
    return urljoin(request_url, next_link.strip())


def origin(url: str) -> tuple[str, str, int | None]:
    """(scheme, host, port) with default ports made explicit, for same-origin checks."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    try:
        port = parts.port
    except ValueError:
        port = -1  # malformed port: can never equal a valid origin
    return scheme, (parts.hostname or "").lower(), port if port is not None else _DEFAULT_PORTS.get(scheme)


def same_origin(a: str, b: str) -> bool:
    return origin(a) == origin(b)


def redact_url(url: str) -> str:
    """The URL without userinfo and with secret-looking query values masked (for logs/errors)."""
    try:
        parts = urlsplit(url)
        netloc = parts.netloc.rsplit("@", 1)[-1]
    except ValueError:
        return "<unparseable url>"
    query = parts.query
    if query:
        out = []
        for item in query.split("&"):
            name, sep, _ = item.partition("=")
            # OData system options ($skiptoken, ...) are server paging state, not credentials.
            if sep and not name.startswith("$") and _SECRET_PARAM_RE.search(name):
                item = f"{name}=***"
            out.append(item)
        query = "&".join(out)
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def annotation(payload: dict[str, Any], name: str) -> Any:
    """Read a control annotation in either spelling: 4.0 ``@odata.name`` or 4.01 ``@name``."""
    if f"@odata.{name}" in payload:
        return payload[f"@odata.{name}"]
    return payload.get(f"@{name}")


def next_link(payload: dict[str, Any]) -> str | None:
    link = annotation(payload, "nextLink")
    if isinstance(link, str) and link.strip():
        return link
    return None


def parse_count(value: Any) -> int | None:
    """@odata.count as a non-negative int; IEEE754Compatible servers may send it as a string."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if value >= 0 else None
    if isinstance(value, float) and value.is_integer() and value >= 0:
        return int(value)
    if isinstance(value, str) and _DIGITS_RE.fullmatch(value.strip()):
        return int(value.strip())
    return None


def strip_annotations(record: dict[str, Any]) -> dict[str, Any]:
    """Drop instance/property annotations (``@odata.etag``, ``Prop@odata.type``, 4.01 ``@etag``).

    OData property names are identifiers and cannot contain '@', so any key with
    '@' is an annotation.
    """
    return {k: v for k, v in record.items() if "@" not in k}


def record_key(record: dict[str, Any], key: tuple[str, ...]) -> tuple[Any, ...]:
    """The record's values of the key properties, as received."""
    return tuple(record.get(name) for name in key)


# -- key ranges ------------------------------------------------------------------------------
# A page can be addressed by a range of the key, in the key's order: [lower, upper). Unlike
# $skip, such a range does not move when rows are inserted or deleted elsewhere.

_DATE_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
KEY_TYPES = ("Edm.String", "Edm.Date", "Edm.Int32", "Edm.Int64", "Edm.Decimal", "Edm.Double")


def literal(value: Any, edm_type: str) -> str:
    """An OData literal of ``value`` for a property of ``edm_type`` (ValueError if it is not one)."""
    if edm_type == "Edm.String":
        if not isinstance(value, str):
            raise ValueError(f"{value!r} is not an Edm.String")
        return "'" + value.replace("'", "''") + "'"
    if edm_type == "Edm.Date":
        text = value.isoformat() if hasattr(value, "isoformat") else value
        if not isinstance(text, str) or not _DATE_RE.match(text):
            raise ValueError(f"{value!r} is not an Edm.Date")
        return text
    if edm_type in ("Edm.Int32", "Edm.Int64", "Edm.Decimal", "Edm.Double"):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"{value!r} is not a number")
        return repr(value)
    raise ValueError(f"unsupported key type {edm_type}")


def _key_compare(names: tuple[str, ...], types: tuple[str, ...], values: tuple[Any, ...], last_op: str,
                 first_op: str) -> str:
    """Lexicographic comparison of the key with ``values``: ``first_op`` (gt or lt) on every
    property but the last, ``last_op`` (ge or lt) on the last, equal on the ones before.

    Null sorts first in OData's ascending order, so "before" (lt) holds for a null property
    too; a comparison with null alone would be false, and a record with a null key part
    would belong to no range while the order places it in one."""
    terms = []
    for i, (name, edm_type, value) in enumerate(zip(names, types, values)):
        op = last_op if i == len(names) - 1 else first_op
        equal = [f"{n} eq {literal(v, t)}" for n, t, v in zip(names[:i], types[:i], values[:i])]
        compare = f"{name} {op} {literal(value, edm_type)}"
        if op == "lt":
            compare = f"({name} eq null or {compare})"
        terms.append(compare if not equal and compare.startswith("(") else "(" + " and ".join([*equal, compare]) + ")")
    return "(" + " or ".join(terms) + ")" if len(terms) > 1 else terms[0]


def range_filter(names: tuple[str, ...], types: tuple[str, ...], lower: tuple | None, upper: tuple | None) -> str | None:
    """``$filter`` of the key range [lower, upper) (None: unbounded on that side)."""
    parts = []
    if lower is not None:
        parts.append(_key_compare(names, types, tuple(lower), "ge", "gt"))
    if upper is not None:
        parts.append(_key_compare(names, types, tuple(upper), "lt", "lt"))
    return " and ".join(parts) if parts else None


def and_filters(*filters: str | None) -> str | None:
    """The conjunction of the given ``$filter`` expressions (None: no filter)."""
    given = [f for f in filters if f]
    if len(given) <= 1:
        return given[0] if given else None
    return " and ".join(f"({f})" for f in given)
