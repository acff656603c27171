"""The pages of a run that applies OData delta changes (no Dagster).

A delta holds new and changed entities in full and removed ones by key, so no page is read
again: each change goes to the page whose key range holds its key (the page map's lower
keys; keys past the last page's lower key belong to the last page, which is open-ended),
and each page's changes are validated and committed in the page's own transaction. The
delta is read once, by the first run that needs it, and staged in DuckDB with the link
after it (``storage.tracking``); every run applies the staged changes of its own pages.
"""

from __future__ import annotations

import bisect
import json
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Iterator

import duckdb

from well_assets import errors
from well_assets.odata import ODataClient
from well_assets.pages.fetcher import JUDGED_TOGETHER, PageItem, judge
from well_assets.pages.stream import PageStream
from well_assets.storage import PageMap, page_map, to_key, tracking
from well_assets.validation.page import parse_page


@dataclass(frozen=True)
class DeltaRead:
    """What a run read from the source's delta link (zero: it applied changes staged before)."""

    changed: int = 0
    removed: int = 0
    requests: int = 0


class PageLocator:
    """The page whose key range holds a key, from the page map's lower keys."""

    def __init__(self, mapped: PageMap) -> None:
        bounded = sorted((page, lower) for page, lower, _synced in mapped if page > 0 and lower is not None)
        self._pages = [page for page, _ in bounded]
        self._lowers = [lower for _, lower in bounded]

    def page_of(self, raw_key: tuple) -> int:
        """The page of a key as the source sends it. A date that is not one (a record
        validation will reject) sorts as null, first among its well's days, as the range
        filters count it; without a well code the key goes to page 0, where OData sorts nulls."""
        key = to_key(raw_key)
        if key is None:
            code = raw_key[0] if raw_key and isinstance(raw_key[0], str) else None
            if not code:
                return 0
            key = (code, date.min)
        i = bisect.bisect_right(self._lowers, key)
        return self._pages[i - 1] if i else 0


def place(changed: list[dict], removed: list, key_names: tuple[str, ...], locator: PageLocator) -> list[tracking.StagedChange]:
    """The delta's changes as staged rows, each in the page that holds its key."""
    out = []
    for record in changed:
        raw = tuple(record.get(name) for name in key_names)
        out.append(tracking.StagedChange(locator.page_of(raw), record=json.dumps(record, sort_keys=True, default=str)))
    for entry in removed:
        code, day = (entry.key + (None, None))[:2]
        out.append(tracking.StagedChange(locator.page_of((code, day)), well_code=code, production_date=day,
                                         reason=entry.reason))
    return out


@dataclass
class DeltaStream(PageStream):
    """The pages of a delta run: their staged changes, validated, as PageItems with the
    keys to delete (``gone``). ``prepare`` (with the writer's connection) reads and stages
    the delta first if nothing is staged yet."""

    read: DeltaRead = field(default_factory=DeltaRead)
    _items: list[PageItem] = field(default_factory=list)

    def prepare(self, con: duckdb.DuckDBPyConnection) -> None:
        state = tracking.sync_state(con, self.source)
        if state is None or (state.delta_link is None and not state.staged_changes):
            raise errors.PaginationError("no delta link to read: the source's changes are synced page by page "
                                         "until a full sync takes a baseline")
        if state.staged_link is None:
            with ODataClient(self.client_config) as client:
                delta = client.read_delta(state.delta_link)
            locator = PageLocator(page_map(con, self.source))
            changes = place(delta.changed, delta.removed, self.client_config.key_names, locator)
            tracking.stage_delta(con, self.source, state.delta_link, changes, delta.delta_link)
            self.read = DeltaRead(len(delta.changed), len(delta.removed), delta.requests)
        pending = self.pending
        staged = tracking.staged_changes(con, self.source, pending[0][0], pending[-1][0]) if pending else {}
        self._items = []
        # Pandera judges many pages' changes in one call (its cost is per call, not per row).
        for at in range(0, len(pending), JUDGED_TOGETHER):
            self._items += self._items_of(pending[at:at + JUDGED_TOGETHER], staged)

    def _items_of(self, pages: list[tuple[int, str]], staged: dict[int, list]) -> list[PageItem]:
        items, parsed = [], []
        for page, key in pages:
            item = PageItem(page=page, partition_key=key, started_at=datetime.now(UTC).replace(tzinfo=None))
            changes = staged.get(page, [])
            item.gone = [(removed, True) for removed in
                         (to_key((c.well_code, c.production_date)) for c in changes if c.record is None)
                         if removed is not None]
            try:
                parsed.append((item, parse_page([json.loads(c.record) for c in changes if c.record is not None]),
                               self.validation))
            except errors.WellAssetsError as exc:
                item.error = exc
            items.append(item)
        # The page fetcher's judging: the pages together, a page whose judgement fails alone.
        for item in judge(parsed) if parsed else []:
            if item.validated is None:
                continue  # the page failed; its changes stay staged
            rejects = item.validated.rejects
            for code, day in zip(rejects["well_code"].to_list(), rejects["production_date"].to_list()):
                rejected = to_key((code, day))
                if rejected is not None:  # the source no longer has a valid row for this key
                    item.gone.append((rejected, False))
        return items

    def tasks(self) -> list:
        return []

    def __iter__(self) -> Iterator[PageItem]:
        yield from self._items


__all__ = ["DeltaRead", "DeltaStream", "PageLocator", "place"]
