"""The `odata_pages` dynamic partitions: one partition per OData page.

Key ``00042`` is page 42, i.e. ``$skip = 42 * page_size``. Keys are added in ascending
order because Dagster returns dynamic keys in insertion order.
"""

from __future__ import annotations

import math
import re

import dagster as dg

from well_assets.errors import PaginationError

odata_pages = dg.DynamicPartitionsDefinition(name="odata_pages")

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
    """Pages needed for the source's rows (an empty source still has no pages)."""
    return math.ceil(max(source_count, 0) / page_size)


def register_pages(instance: dg.DagsterInstance, n_pages: int) -> list[str]:
    """Adds the missing keys ``00000``..``n_pages-1`` in ascending order; returns the added ones."""
    wanted = [page_key(k) for k in range(n_pages)]
    existing = set(instance.get_dynamic_partitions(odata_pages.name))
    missing = [key for key in wanted if key not in existing]
    if missing:
        instance.add_dynamic_partitions(odata_pages.name, missing)
    return missing


def registered_page_count(instance: dg.DagsterInstance) -> int:
    return len(instance.get_dynamic_partitions(odata_pages.name))
