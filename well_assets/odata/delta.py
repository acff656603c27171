"""OData change tracking, the pure side: delta payloads, removed entries, key predicates.

A delta response (OData 4.01 JSON "Delta Payload") mixes changed entities with removed
entries, in one of two forms: 4.01 ``{"@removed": {"reason": ...}, <key properties> or
"@id"}`` or 4.0 ``{"@odata.context": "...$deletedEntity", "id": ..., "reason": ...}``.
A 4.0 entry names its entity only by its id, so the key is read out of the id's key
predicate, e.g. ``WellProduction(WellCode='it''s',ProductionDate=2023-01-01)``.

A delta link is a secret-bearing opaque URL (whoever holds it reads the changes): logs and
errors show it only through ``redact_link``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

from . import paging, responses

# Answers that mean "this delta link is no longer served", besides 410 Gone: the error
# codes real services give for a forgotten or invalid token (Microsoft Graph, this
# project's demo service).
EXPIRED_CODES = frozenset({"resyncRequired", "syncStateNotFound", "syncStateInvalid", "InvalidDeltaToken",
                           "DeltaTokenExpired"})
TRACK_CHANGES = ("odata.track-changes", "track-changes")  # 4.01 allows the bare name


@dataclass(frozen=True)
class Baseline:
    """The source's row count when tracking began, and the delta link to the changes made
    since (None: the service does not track changes, or tracking is off)."""

    count: int
    delta_link: str | None

    def __repr__(self) -> str:  # the link is a secret
        return f"Baseline(count={self.count}, delta_link={'***' if self.delta_link else None})"


@dataclass(frozen=True)
class Removed:
    """An entity that left the tracked result: ``key`` in the configured key order, as the
    source sends it (strings; a date as its ISO text); ``reason`` "deleted" or "changed"
    (it no longer matches the filter), None when the service gave none."""

    key: tuple
    reason: str | None


@dataclass(frozen=True)
class Delta:
    """What changed since a delta link: new and changed entities as plain records, removed
    ones by key, the link to the changes after these, and the HTTP requests it took
    (retries included)."""

    changed: list[dict]
    removed: list[Removed]
    delta_link: str
    requests: int

    def __repr__(self) -> str:  # the link is a secret
        return (f"Delta(changed={len(self.changed)} records, removed={len(self.removed)} keys, delta_link=***, "
                f"requests={self.requests})")


@dataclass
class DeltaPage:
    changed: list[dict]
    removed: list[Removed]
    next_link: str | None
    delta_link: str | None


def redact_link(url: str) -> str:
    """A delta link (or a delta page's nextLink) as logs may show it: every query value
    masked, no userinfo."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable url>"
    query = "&".join(f"{item.partition('=')[0]}=***" for item in parts.query.split("&")) if parts.query else ""
    return urlunsplit((parts.scheme, parts.netloc.rsplit("@", 1)[-1], parts.path, query, ""))


def applies_tracking(preference_applied: str | None) -> bool:
    """Whether a Preference-Applied header value includes track-changes."""
    for pref in (preference_applied or "").split(","):
        if pref.split(";")[0].partition("=")[0].strip().lower() in TRACK_CHANGES:
            return True
    return False


def parse_delta_page(body: bytes, key: tuple[tuple[str, str], ...]) -> DeltaPage:
    """One delta response; ``responses.Malformed`` when it is unusable (retried like a page)."""
    try:
        payload = responses._loads(body)
    except (ValueError, UnicodeDecodeError):
        raise responses.Malformed(f"a body that is not complete JSON ({len(body)} bytes)") from None
    if not isinstance(payload, dict):
        raise responses.Malformed("a JSON body that is not an object")
    if "error" in payload:
        code, message = responses._error_fields(payload)
        raise responses.Malformed("an OData error body", code, message)
    value = payload.get("value")
    if not isinstance(value, list) or not all(isinstance(entry, dict) for entry in value):
        raise responses.Malformed("a delta body without a 'value' array of objects")
    changed: list[dict] = []
    removed: list[Removed] = []
    for entry in value:
        gone = _removed(entry, key)
        if gone is not None:
            removed.append(gone)
        elif not _is_link_entry(entry):
            changed.append(paging.strip_annotations(entry))
    delta_link = paging.annotation(payload, "deltaLink")
    return DeltaPage(changed, removed, paging.next_link(payload),
                     delta_link if isinstance(delta_link, str) and delta_link.strip() else None)


def _context(entry: dict[str, Any]) -> str:
    context = paging.annotation(entry, "context")
    return context if isinstance(context, str) else ""


def _is_link_entry(entry: dict[str, Any]) -> bool:
    # 4.0 added/deleted links between entities: nothing this client reads.
    return _context(entry).endswith(("/$link", "/$deletedLink"))


def _removed(entry: dict[str, Any], key: tuple[tuple[str, str], ...]) -> Removed | None:
    """The removed entry's key and reason (None: the entry is not a removal)."""
    if "@removed" in entry or "@odata.removed" in entry:  # 4.01
        info = entry.get("@removed", entry.get("@odata.removed"))
        reason = info.get("reason") if isinstance(info, dict) else None
        names = [name for name, _ in key]
        if all(name in entry for name in names):
            return Removed(tuple(entry[name] for name in names), reason)
        entity_id = entry.get("@id", entry.get("@odata.id"))
    elif _context(entry).endswith("/$deletedEntity"):  # 4.0
        reason = entry.get("reason")
        entity_id = entry.get("id", entry.get("@odata.id", entry.get("@id")))
    else:
        return None
    if not isinstance(entity_id, str):
        raise responses.Malformed("a removed entry with neither its key properties nor an id")
    try:
        return Removed(parse_key_predicate(entity_id, key), reason if isinstance(reason, str) else None)
    except ValueError as exc:
        raise responses.Malformed(f"a removed entry whose id has no readable key ({exc})") from None


# -- key predicates -------------------------------------------------------------------

_NUMBER = re.compile(r"-?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")
_INTEGER = re.compile(r"-?\d+")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def parse_key_predicate(entity_id: str, key: tuple[tuple[str, str], ...]) -> tuple:
    """The key of an entity id (absolute or relative, percent-encoded or not), in the order
    of ``key`` ((name, Edm type) pairs): ``Set(Name='it''s',Other=2023-01-01)`` or, for a
    single-property key, ``Set('x')``. Strings and dates come back as text, integers as int,
    other numbers as float, ``null`` as None. ValueError when it is not such an id."""
    text = unquote(entity_id.strip())
    start, end = _last_group(text)
    items = _split_items(text[start + 1:end])
    names = [name for name, _ in key]
    types = dict(key)
    if len(items) == 1 and items[0][0] is None:
        if len(names) != 1:
            raise ValueError(f"a single key value, but the key has {len(names)} properties")
        values = {names[0]: items[0][1]}
    else:
        if any(name is None for name, _ in items):
            raise ValueError("a key value without its property name")
        values = dict(items)  # type: ignore[arg-type]
        if len(values) != len(items) or set(values) != set(names):
            raise ValueError(f"key properties {sorted(values)} are not {sorted(names)}")
    return tuple(_typed(values[name], types[name], name) for name in names)


def _last_group(text: str) -> tuple[int, int]:
    """(start, end) of the last top-level parenthesized group, outside string literals."""
    groups, depth, in_string, opened = [], 0, False, -1
    for i, ch in enumerate(text):
        if ch == "'":
            in_string = not in_string  # '' inside a literal toggles twice: still inside
        elif in_string:
            continue
        elif ch == "(":
            if depth == 0:
                opened = i
            depth += 1
        elif ch == ")":
            depth -= 1
            if depth < 0:
                raise ValueError("unbalanced parentheses")
            if depth == 0:
                groups.append((opened, i))
    if in_string or depth != 0 or not groups or groups[-1][1] != len(text) - 1:
        raise ValueError("no key predicate at the end of the id")
    return groups[-1]


def _split_items(body: str) -> list[tuple[str | None, tuple[str, str]]]:
    """``Name=literal`` items (name None for a bare literal), each literal as (kind, text)."""
    items: list[tuple[str | None, tuple[str, str]]] = []
    i = 0
    while True:
        name = None
        m = _NAME.match(body, i)
        if m and body[m.end():m.end() + 1] == "=":
            name, i = m.group(), m.end() + 1
        literal, i = _literal(body, i)
        items.append((name, literal))
        if i == len(body):
            return items
        if body[i] != ",":
            raise ValueError(f"unexpected {body[i]!r} in the key predicate")
        i += 1


def _literal(body: str, i: int) -> tuple[tuple[str, str], int]:
    if body[i:i + 1] == "'":
        out, i = [], i + 1
        while i < len(body):
            if body[i] == "'":
                if body[i + 1:i + 2] == "'":
                    out.append("'")
                    i += 2
                    continue
                return ("string", "".join(out)), i + 1
            out.append(body[i])
            i += 1
        raise ValueError("unterminated string literal")
    end = body.find(",", i)
    end = len(body) if end < 0 else end
    text = body[i:end].strip()
    if not text:
        raise ValueError("an empty key value")
    return ("bare", text), end


def _typed(literal: tuple[str, str], edm_type: str, name: str) -> Any:
    kind, text = literal
    if kind == "bare" and text == "null":
        return None
    if edm_type == "Edm.String":
        if kind != "string":
            raise ValueError(f"{name} is an Edm.String, got {text!r}")
        return text
    if edm_type == "Edm.Date":
        return text  # as the source names it; validation judges the date
    if kind == "string":
        raise ValueError(f"{name} is an {edm_type}, got a string")
    number = text.rstrip("mMdDfFlL")  # 4.0 type suffixes (2.5M, 1L)
    if _INTEGER.fullmatch(number) and edm_type in ("Edm.Int32", "Edm.Int64"):
        return int(number)
    if _NUMBER.fullmatch(number):
        return int(number) if _INTEGER.fullmatch(number) else float(number)
    raise ValueError(f"{name} is an {edm_type}, got {text!r}")
