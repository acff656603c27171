"""Entity-set responses: view selection, server-driven paging and the JSON payload.

`build_page` runs in a worker thread (polars releases the GIL), so the event loop keeps
serving admin calls and latency sleeps while a large view is sorted.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from typing import Any

import polars as pl

from .data import Dataset, Snapshot
from .edmx import ENTITY_SET
from .faults import Plan
from .generate import PROPS, VOLUMES
from .query import Query, encode_deltatoken, encode_skiptoken


@dataclass
class Page:
    head: dict[str, Any]  # annotations before "value"
    value: bytes  # the JSON array of records
    tail: dict[str, Any]  # annotations after "value" (nextLink)
    rows: int
    total: int

    def to_bytes(self) -> bytes:
        parts = [dumps(self.head)[:-1], b',"value":', self.value]
        for k, v in self.tail.items():
            parts.append(b"," + dumps(k) + b":" + dumps(v))
        parts.append(b"}")
        return b"".join(parts)

    def body(self) -> dict[str, Any]:
        return json.loads(self.to_bytes())


def filtered_view(dataset: Dataset, q: Query, snap: Snapshot | None = None) -> pl.DataFrame:
    snap = snap or dataset.snapshot()
    if q.filter_expr is None and not q.sort_by:
        return snap.frame  # natural order, no copy

    def build(frame: pl.DataFrame) -> pl.DataFrame:
        if q.filter_expr is not None:
            frame = snap.candidates(q.filter_span).filter(q.filter_expr)
        if q.sort_by:
            names = [n for n, _ in q.sort_by]
            desc = [d for _, d in q.sort_by]
            # OData: nulls first ascending, last descending; stable keeps natural order on ties
            frame = frame.sort(names, descending=desc, nulls_last=desc, maintain_order=True)
        return frame.rechunk()

    return dataset.view(snap, q.view_key, build)


def count(dataset: Dataset, q: Query) -> int:
    return filtered_view(dataset, q).height


def build_page(dataset: Dataset, q: Query, page_size: int, plan: Plan, track_url: str | None = None) -> Page:
    """One response of a read; with ``track_url`` (the entity set's absolute URL) the read
    tracks changes: its last page carries a delta link to the changes made after its
    first page was served."""
    snap = dataset.snapshot()  # one snapshot for rows and overrides
    if track_url is not None and q.delta_start is None:
        # Read after the snapshot: had a reset come in between, the link names a version
        # below the new history's start and answers 410 instead of a wrong delta.
        history, _ = dataset.changes.position()
        q = replace(q, delta_start=(history, snap.version))
    view = filtered_view(dataset, q, snap)
    total = view.height
    want = page_size if q.remaining is None else min(page_size, q.remaining)
    rows = view.slice(q.position, want) if q.position < total else view.clear()
    got = rows.height
    position = q.position + got
    remaining = None if q.remaining is None else q.remaining - got
    more = position < total and (remaining is None or remaining > 0)

    link_state: tuple[int, int | None] | None = None
    if more or (plan.trailing_empty_page and got > 0):
        link_state = (position, remaining)
    if link_state is not None and plan.loop_next_link:
        link_state = (q.position, q.remaining)  # point back at the page just served

    props = list(q.select or PROPS)
    page_ids = snap.overrides.keys() & set(rows["_id"].to_list()) if snap.overrides else ()
    if not page_ids and not plan.decimals_as_strings and not plan.renames:
        value = rows.select(props).write_json().encode()  # fast path: polars writes the JSON
    else:
        value = dumps(_records(dataset, rows, snap, props, plan))

    prefix = "@" if plan.annotations_401 else "@odata."
    context = "$metadata#" + ENTITY_SET + (f"({','.join(q.select)})" if q.select else "")
    head: dict[str, Any] = {prefix + "context": context}
    if q.count:
        head[prefix + "count"] = total
    tail: dict[str, Any] = {}
    if link_state is not None:
        link = f"{ENTITY_SET}?$skiptoken={encode_skiptoken(q, *link_state)}"
        if plan.foreign_host:
            link = f"{plan.foreign_host}/odata/{link}"
        tail[prefix + "nextLink"] = link
    elif track_url is not None and q.delta_start is not None:
        history, version = q.delta_start
        tail[prefix + "deltaLink"] = f"{track_url}?$deltatoken={encode_deltatoken(history, version, q.filter, q.select)}"
    return Page(head=head, value=value, tail=tail, rows=got, total=total)


def _records(dataset: Dataset, rows: pl.DataFrame, snap: Snapshot, props: list[str], plan: Plan) -> list[dict]:
    """Slow path: Python records with raw override values and payload faults applied."""
    records = dataset.records(rows, snap.overrides, props)
    if plan.decimals_as_strings:
        for rec in records:
            for c in VOLUMES:
                v = rec.get(c)
                if isinstance(v, float):
                    rec[c] = f"{v:.3f}"
    for old, new in plan.renames:
        records = [{(new if k == old else k): v for k, v in rec.items()} for rec in records]
    return records


def dumps(body: Any) -> bytes:
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()
