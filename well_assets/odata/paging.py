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


def record_key(record: dict[str, Any]) -> tuple[Any, Any]:
    return record.get("WellCode"), record.get("ProductionDate")
