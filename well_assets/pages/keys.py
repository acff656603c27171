"""Page keys of the `odata_pages` partitions, without importing Dagster.

Key ``00042`` is page 42, i.e. ``$skip = 42 * page_size``. Kept apart from
partitions.py so light entry points (the demo server, the trigger) start fast.
"""

from __future__ import annotations

import math
import re

from well_assets.errors import PaginationError

PARTITIONS_NAME = "odata_pages"

_KEY_PATTERN = re.compile(r"^\d{5,}$")


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
