"""Delta responses: what changed since a delta link's version, as OData delta payloads.

For every key changed in the link's version range the response holds that key's current
state: its entities when they match the link's `$filter` (in full, `$select` applied), a
removed entry with reason `deleted` when the key is gone, or with reason `changed` when
its entity no longer matches the filter. Keys are served in key order and paged by key; a
page's nextLink pins the version range, so every page reads the same set of keys, and the
last page's new delta link starts where the first page's range ended.

Two payload forms (`DemoServiceConfig.delta_format`): "4.01" removed entries carry
`@removed`, `@id` and the key properties; "4.0" ones are `$deletedEntity` objects with an
`id` only (a client has to read the key out of the id).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import polars as pl

from .changes import ServedKey
from .data import Dataset, Snapshot
from .edmx import ENTITY_SET
from .faults import Plan
from .generate import PROPS
from .payload import Page, _records, dumps
from .query import DeltaRequest, encode_deltatoken

DELTA_FORMATS = ("4.01", "4.0")
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
# Left as-is in an entity id: the key predicate's syntax and unreserved characters.
_ID_SAFE = "'(),=:-._~!$*+;@"


@dataclass
class Gone:
    """The link's history was forgotten (expired, reset, beyond retention): 410."""


def entity_id(key: ServedKey) -> str:
    """`WellProduction(WellCode='X',ProductionDate=2023-01-01)`, percent-encoded as an IRI."""
    wc, date = key
    wc_lit = "null" if wc is None else "'" + wc.replace("'", "''") + "'"
    if date is None:
        date_lit = "null"
    elif _DATE.fullmatch(date):
        date_lit = date
    else:  # a raw value that is no date (a salted bad row) can only be named as text
        date_lit = "'" + date.replace("'", "''") + "'"
    return quote(f"{ENTITY_SET}(WellCode={wc_lit},ProductionDate={date_lit})", safe=_ID_SAFE)


def removed_entry(key: ServedKey, reason: str, delta_format: str) -> dict[str, Any]:
    if delta_format == "4.0":
        return {"@odata.context": f"$metadata#{ENTITY_SET}/$deletedEntity", "id": entity_id(key), "reason": reason}
    return {"@removed": {"reason": reason}, "@id": entity_id(key), "WellCode": key[0], "ProductionDate": key[1]}


def build_delta_page(dataset: Dataset, req: DeltaRequest, page_size: int, plan: Plan, delta_format: str,
                     track_url: str) -> Page | Gone:
    snap = dataset.snapshot()
    upto = snap.version if req.upto is None else req.upto
    keys = dataset.changes.changed(req.history, req.since, upto)
    if keys is None:
        return Gone()
    start = min(req.position, len(keys))
    entries, taken = _entries(dataset, snap, keys[start:start + page_size], req, page_size, plan, delta_format)
    position = start + taken
    more = position < len(keys)

    link_position: int | None = None
    if more or (plan.trailing_empty_page and taken > 0):
        link_position = start if plan.loop_next_link else position
    prefix = "@" if plan.annotations_401 else "@odata."
    context = "$metadata#" + ENTITY_SET + (f"({','.join(req.select)})" if req.select else "") + "/$delta"
    tail: dict[str, Any] = {}
    if link_position is not None:
        token = encode_deltatoken(req.history, req.since, req.filter, req.select, upto=upto, position=link_position)
        link = f"{ENTITY_SET}?$deltatoken={token}"
        if plan.foreign_host:
            link = f"{plan.foreign_host}/odata/{link}"
        tail[prefix + "nextLink"] = link
    else:
        tail[prefix + "deltaLink"] = f"{track_url}?$deltatoken={encode_deltatoken(req.history, upto, req.filter, req.select)}"
    return Page(head={prefix + "context": context}, value=dumps(entries), tail=tail, rows=len(entries), total=len(keys))


def _entries(dataset: Dataset, snap: Snapshot, keys: list[ServedKey], req: DeltaRequest, page_size: int,
             plan: Plan, delta_format: str) -> tuple[list[dict], int]:
    """The entries of the first keys of ``keys`` that fill a page (a key's entries are never
    split over two pages), and how many keys they cover."""
    if not keys:
        return [], 0
    rows = _current_rows(snap, keys)
    if req.filter_expr is not None:
        rows = rows.with_columns(_match=req.filter_expr)
    else:
        rows = rows.with_columns(_match=pl.lit(True))
    matching = rows.filter(pl.col("_match"))
    records = _records(dataset, matching, snap, list(req.select or PROPS), plan) if matching.height else []
    by_key: dict[ServedKey, list[dict]] = {}
    for key, rec in zip(matching.select("WellCode", "_d").iter_rows(), records):
        by_key.setdefault(key, []).append(rec)
    present = set(rows.select("WellCode", "_d").iter_rows())

    entries: list[dict] = []
    taken = 0
    for key in keys:
        if len(entries) >= page_size:
            break
        taken += 1
        if key in by_key:
            entries.extend(by_key[key])
        else:
            entries.append(removed_entry(key, "changed" if key in present else "deleted", delta_format))
    return entries, taken


def _current_rows(snap: Snapshot, keys: list[ServedKey]) -> pl.DataFrame:
    """The snapshot's rows with one of ``keys`` (matched as served, raw dates included),
    in served order, with their served date text in ``_d``."""
    wells = sorted({wc for wc, _ in keys if wc is not None})
    candidates = pl.col("WellCode").is_in(wells)
    if any(wc is None for wc, _ in keys):
        candidates = candidates | pl.col("WellCode").is_null()
    rows = snap.frame.filter(candidates).with_columns(_d=pl.col("ProductionDate").cast(pl.Utf8))
    raw_dates = {rid: ov["ProductionDate"] for rid, ov in snap.overrides.items() if "ProductionDate" in ov}
    if raw_dates:
        raw = pl.DataFrame({"_id": list(raw_dates), "_raw": [None if v is None else str(v) for v in raw_dates.values()]},
                           schema={"_id": pl.Int64, "_raw": pl.Utf8})
        rows = rows.join(raw, on="_id", how="left", maintain_order="left").with_columns(
            _d=pl.coalesce("_raw", "_d")).drop("_raw")
    wanted = pl.DataFrame({"WellCode": [k[0] for k in keys], "_d": [k[1] for k in keys]},
                          schema={"WellCode": pl.Utf8, "_d": pl.Utf8})
    return rows.join(wanted, on=["WellCode", "_d"], how="semi", nulls_equal=True, maintain_order="left")

