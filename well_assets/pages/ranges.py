"""Key-anchored pages: which rows a page commits, and where pages start (no Dagster).

Page k covers the key range [lower(k), lower(k+1)): page 0 starts at the first key, the
last page runs to the last. A page's lower key is learned once, from its first read by
offset (``$skip``): the page before it reads one row more than a page, and that row's key
is where page k starts. From then on the page is read by its range, so rows inserted or
deleted elsewhere in the source never shift it.

While a first import reads by offset, the source may change under it. An offset read is
a contiguous slice of the ordered source, so it holds every row between its first key and
the key after it: when that slice covers the page's range, the page's rows are the
slice's rows within the range; when it does not (rows were deleted before the page while
the import ran, so the slice starts too late), the page is read again by its range.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import polars as pl

from well_assets.storage import Key, PageMap, to_key
from well_assets.validation.columns import KEY
from well_assets.validation.page import ValidatedPage


@dataclass(frozen=True)
class OffsetPlan:
    """How a page read by offset is committed."""

    lower: Key | None
    upper: Key | None
    covered: bool  # the offset read holds every row of [lower, upper)
    shifted: bool  # the read did not start where the page starts: the source changed


def plan_offset_page(page: int, lower: Key | None, upper: Key | None, first_key: tuple | None,
                     next_key: tuple | None) -> OffsetPlan:
    """The range of page ``page`` read by offset, and whether the read covers it.

    ``lower``/``upper``: what is known of the page's bounds (None: not yet); ``first_key``
    and ``next_key``: the read's first key and the key after it (as the source sent them;
    None: the read was empty / reached the end)."""
    first, following = to_key(first_key), to_key(next_key)
    known_upper = upper
    if page > 0 and lower is None:
        lower = first  # no earlier read set it: the page starts where its first read does
    if upper is None:
        upper = following
    starts_in_time = page == 0 or (lower is not None and first is not None and first <= lower)
    ends_in_time = next_key is None or (upper is not None and following is not None and upper <= following)
    shifted = (page > 0 and lower is not None and first != lower) or (
        known_upper is not None and following != known_upper)
    return OffsetPlan(lower=lower, upper=upper, covered=starts_in_time and ends_in_time, shifted=shifted)


def key_in_range(lower: Key | None, upper: Key | None) -> pl.Expr:
    """True for rows of a frame with typed key columns within [lower, upper)."""
    code, day = (pl.col(name) for name in KEY)
    condition = pl.lit(True)
    if lower is not None:
        condition &= (code > lower[0]) | ((code == lower[0]) & (day >= lower[1]))
    if upper is not None:
        condition &= (code < upper[0]) | ((code == upper[0]) & (day < upper[1]))
    return condition


def _reject_in_range(lower: Key | None, upper: Key | None, well_code: str | None, production_date: str | None) -> bool:
    key = to_key((well_code, production_date))
    if key is None:
        return True  # a record without a usable key is reported with the page that read it
    return (lower is None or key >= lower) and (upper is None or key < upper)


def within(page: ValidatedPage, lower: Key | None, upper: Key | None) -> ValidatedPage:
    """The page's rows and rejects that fall in [lower, upper)."""
    rejects = page.rejects
    if rejects.height:
        keep = [_reject_in_range(lower, upper, code, day)
                for code, day in zip(rejects["well_code"].to_list(), rejects["production_date"].to_list())]
        rejects = rejects.filter(pl.Series(keep, dtype=pl.Boolean))
    valid = page.valid
    if not (page.keys_ascending and _ends_within(valid, lower, upper)):  # else every row is in range
        valid = valid.filter(key_in_range(lower, upper))
    return ValidatedPage(valid=valid, rejects=rejects, in_page_duplicates=page.in_page_duplicates,
                         validate_seconds=page.validate_seconds, keys_ascending=page.keys_ascending,
                         key_checksum=page.key_checksum if valid is page.valid else None)


def _ends_within(valid: pl.DataFrame, lower: Key | None, upper: Key | None) -> bool:
    """Whether the first and the last row of ``valid`` (in key order) are in [lower, upper)."""
    if not valid.height:
        return True
    first = (valid.get_column(KEY[0])[0], valid.get_column(KEY[1])[0])
    last = (valid.get_column(KEY[0])[-1], valid.get_column(KEY[1])[-1])
    return (lower is None or first >= lower) and (upper is None or last < upper)


def split(page: ValidatedPage, lower: Key | None, split_keys: list[tuple]) -> list[tuple[Key | None, Key | None, ValidatedPage]]:
    """The last page, grown past a page's worth, cut at ``split_keys`` (the keys at every
    page_size-th row): [(lower, upper, rows), ...], the last part open-ended."""
    bounds = [lower] + [key for key in (to_key(raw) for raw in split_keys) if key is not None]
    bounds = [bound for i, bound in enumerate(bounds) if i == 0 or (bound is not None and (bounds[i - 1] is None or bound > bounds[i - 1]))]
    uppers = bounds[1:] + [None]
    parts = [(lo, hi, within(page, lo, hi)) for lo, hi in zip(bounds, uppers)]
    # in-page duplicates were counted once for the whole read: keep them with the first part
    for i, (lo, hi, part) in enumerate(parts[1:], start=1):
        parts[i] = (lo, hi, ValidatedPage(part.valid, part.rejects, 0, 0.0, part.keys_ascending, part.key_checksum))
    return parts


def raw_key(key: Key | None) -> tuple | None:
    """A key as the OData client addresses it (the date as ISO text)."""
    return None if key is None else (key[0], key[1].isoformat())


def known_ranges(mapped: PageMap, pages: list[int]) -> dict[int, tuple]:
    """Of ``pages``, those synced before (``mapped``: the page map), with their key ranges as
    the client addresses them: they are read by range."""
    lowers = {page: lower for page, lower, _synced in mapped}
    synced = {page for page, _lower, was_synced in mapped if was_synced}
    return {page: (raw_key(lowers.get(page)), raw_key(lowers.get(page + 1)))
            for page in pages if page in synced and (page == 0 or lowers.get(page) is not None)}


GROUP_PAGES = 8


CountRanges = Callable[[list[tuple[tuple | None, tuple | None]]], list[int]]


def changed_pages(pages: list[int], lowers: dict[int, Key | None], synced_rows: dict[int, int],
                  count_ranges: CountRanges, group_pages: int = GROUP_PAGES) -> tuple[list[int], int]:
    """Of ``pages`` (ascending), those whose key range the source now counts another number
    of records in than at the page's last sync (``synced_rows``), and the number of counts
    it took: one count per stretch of at most ``group_pages`` consecutive pages, then one
    per page inside a stretch that differs. ``count_ranges`` counts a batch of key ranges
    (the client sends a batch's requests concurrently). ``lowers``: every known page's lower
    key (a page's range ends where the next one starts; the last known page is open-ended)."""

    def bounds(first: int, last: int) -> tuple[tuple | None, tuple | None]:
        return raw_key(lowers.get(first)), raw_key(lowers.get(last + 1))

    def on_file(first: int, last: int) -> int:
        return sum(synced_rows.get(page, 0) for page in range(first, last + 1))

    groups: list[list[int]] = []
    for page in pages:
        if groups and groups[-1][-1] == page - 1 and len(groups[-1]) < group_pages:
            groups[-1].append(page)
        else:
            groups.append([page])
    counts = count_ranges([bounds(group[0], group[-1]) for group in groups])
    differing = [group for group, count in zip(groups, counts) if count != on_file(group[0], group[-1])]
    inside = [page for group in differing if len(group) > 1 for page in group]
    page_counts = dict(zip(inside, count_ranges([bounds(page, page) for page in inside]))) if inside else {}
    changed = [page for group in differing for page in group
               if len(group) == 1 or page_counts[page] != on_file(page, page)]
    return changed, len(groups) + len(inside)


def changed_synced_pages(mapped: PageMap, synced_rows: dict[int, int],
                         count_ranges: CountRanges) -> tuple[list[int], int]:
    """``changed_pages`` over the synced pages of the page map: those whose key range the
    source now counts another number of records in than at their last sync, and the counts
    it took (the sensor's tick and the reconciliation check)."""
    synced = [page for page, _lower, was_synced in mapped if was_synced]
    return changed_pages(synced, {page: lower for page, lower, _ in mapped}, synced_rows, count_ranges)
