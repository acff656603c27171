"""Entity-set responses: view selection, server-driven paging and the JSON payload.

`build_page` runs in a worker thread (polars releases the GIL), so the event loop keeps
serving admin calls and latency sleeps while a large view is sorted.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import polars as pl

from .data import Dataset, Snapshot
from .edmx import ENTITY_SET
from .faults import Plan
from .generate import PROPS, VOLUMES
from .query import Query, encode_skiptoken


@dataclass
class Page:
    body: dict[str, Any]
    rows: int
    total: int


def filtered_view(dataset: Dataset, q: Query, snap: Snapshot | None = None) -> pl.DataFrame:
    snap = snap or dataset.snapshot()
    if q.filter_expr is None and not q.sort_by:
        return snap.frame  # natural order, no copy

    def build(frame: pl.DataFrame) -> pl.DataFrame:
        if q.filter_expr is not None:
            frame = frame.filter(q.filter_expr)
        if q.sort_by:
            names = [n for n, _ in q.sort_by]
            desc = [d for _, d in q.sort_by]
            # OData: nulls first ascending, last descending; stable keeps natural order on ties
            frame = frame.sort(names, descending=desc, nulls_last=desc, maintain_order=True)
        return frame.rechunk()

    return dataset.view(snap, q.view_key, build)


def count(dataset: Dataset, q: Query) -> int:
    return filtered_view(dataset, q).height


def build_page(dataset: Dataset, q: Query, page_size: int, plan: Plan) -> Page:
    snap = dataset.snapshot()  # one snapshot for rows and overrides
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

    records = dataset.records(rows, snap.overrides, q.select or PROPS)
    if plan.decimals_as_strings:
        for rec in records:
            for c in VOLUMES:
                v = rec.get(c)
                if isinstance(v, float):
                    rec[c] = f"{v:.3f}"
    for old, new in plan.renames:
        records = [{(new if k == old else k): v for k, v in rec.items()} for rec in records]

    prefix = "@" if plan.annotations_401 else "@odata."
    context = "$metadata#" + ENTITY_SET + (f"({','.join(q.select)})" if q.select else "")
    body: dict[str, Any] = {prefix + "context": context}
    if q.count:
        body[prefix + "count"] = total
    body["value"] = records
    if link_state is not None:
        link = f"{ENTITY_SET}?$skiptoken={encode_skiptoken(q, *link_state)}"
        if plan.foreign_host:
            link = f"{plan.foreign_host}/odata/{link}"
        body[prefix + "nextLink"] = link
    return Page(body=body, rows=got, total=total)


def dumps(body: Any) -> bytes:
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()
