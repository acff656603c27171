"""The `odata_pages` dynamic partitions: one partition per OData page.

Key ``00042`` is page 42, i.e. ``$skip = 42 * page_size``. Keys are added in ascending
order because Dagster returns dynamic keys in insertion order.
"""

from __future__ import annotations

import dagster as dg

from well_assets.pages.keys import PARTITIONS_NAME, page_count, page_index, page_key

odata_pages = dg.DynamicPartitionsDefinition(name=PARTITIONS_NAME)

__all__ = ["odata_pages", "page_count", "page_index", "page_key", "register_pages", "registered_page_count"]


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
