"""Page keys and page ranges: the one planner of which pages a run covers.

Key ``00042`` is page 42: first read as ``$skip = 42 * page_size``. Dagster returns dynamic
partition keys in insertion order and a ranged run covers the keys between its two ends
in that order, so keys are always registered from ``00000`` upward without gaps, and a
range is only launched over keys that are contiguous and ascending. The CLI, the sensor,
the schedule and the trigger all plan with these functions. No Dagster import: the light
entry points (the trigger) use them too.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

from well_assets.errors import PaginationError
from well_assets.names import PARTITIONS_NAME

_KEY_PATTERN = re.compile(r"^\d{5,}$")
# Pages per run of a backfill, an import or a refresh: enough to amortise a run's start-up,
# small enough that one failing run does not hold up a whole large import.
MAX_PAGES_PER_RUN = 500


def page_key(page: int) -> str:
    if page < 0:
        raise PaginationError(f"page must be >= 0, got {page}", page=page)
    return f"{page:05d}"


def page_index(key: str) -> int:
    if not _KEY_PATTERN.match(key):
        raise PaginationError(
            f"partition key {key!r} is not a page key: allowed are zero-padded page numbers such as 00000, 00042",
            partition_key=key,
        )
    return int(key)


def page_count(source_count: int, page_size: int) -> int:
    """Pages needed for the source's rows (an empty source has no pages)."""
    return math.ceil(max(source_count, 0) / page_size)


def missing_keys(registered: Sequence[str], n_pages: int) -> list[str]:
    """The keys ``00000``..``n_pages-1`` not registered yet, ascending (the order to add them)."""
    present = set(registered)
    return [page_key(k) for k in range(n_pages) if page_key(k) not in present]


def pages_to_import(source_count: int, page_size: int, start_page: int = 0, max_pages: int | None = None) -> list[int]:
    """The pages a first import covers: from ``start_page``, at most ``max_pages``, within the source."""
    return pages_within(page_count(source_count, page_size), start_page, max_pages,
                        f"the source has {source_count} rows in {page_count(source_count, page_size)} page(s) of {page_size}")


def pages_within(n_pages: int, start_page: int = 0, max_pages: int | None = None, what: str | None = None) -> list[int]:
    """Pages ``start_page``.. of ``n_pages``, at most ``max_pages`` of them."""
    if n_pages == 0:
        return []
    if start_page >= n_pages:
        raise PaginationError(
            f"--start-page {start_page} is past the last page: {what or f'there are {n_pages} page(s)'} "
            f"(pages 0..{n_pages - 1})",
            start_page=start_page,
            pages=n_pages,
        )
    end = n_pages if max_pages is None else min(n_pages, start_page + max_pages)
    return list(range(start_page, end))


def run_ranges(first: int, last: int, max_pages_per_run: int) -> list[tuple[int, int]]:
    """``first..last`` (inclusive) cut into runs of at most ``max_pages_per_run`` pages."""
    return [(lo, min(lo + max_pages_per_run - 1, last)) for lo in range(first, last + 1, max_pages_per_run)]


def blocks(pages: Sequence[int], max_pages_per_run: int) -> list[tuple[int, int]]:
    """The contiguous stretches of the given (sorted) pages, each at most ``max_pages_per_run`` long."""
    out: list[tuple[int, int]] = []
    for page in pages:
        if out and out[-1][1] == page - 1 and page - out[-1][0] < max_pages_per_run:
            out[-1] = (out[-1][0], page)
        else:
            out.append((page, page))
    return out


def range_problem(keys: Sequence[str], first: int, last: int) -> str | None:
    """Why a ranged run ``first..last`` would not cover exactly those pages with these
    registered keys (in Dagster's order), or None when it would."""
    wanted = [page_key(k) for k in range(first, last + 1)]
    if wanted[0] not in keys or wanted[-1] not in keys:
        missing = [key for key in (wanted[0], wanted[-1]) if key not in keys]
        return f"the {PARTITIONS_NAME} keys {', '.join(missing)} are not registered"
    lo, hi = keys.index(wanted[0]), keys.index(wanted[-1])
    if list(keys[lo:hi + 1]) != wanted:
        return (f"the {PARTITIONS_NAME} keys are not contiguous and in ascending page order over "
                f"{wanted[0]}..{wanted[-1]} (Dagster orders dynamic partitions by insertion), so a range run "
                "would import other pages; delete and re-add the keys in order (Dagster UI > Partitions)")
    return None
