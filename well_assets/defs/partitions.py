"""The `odata_pages` dynamic partitions: one partition per OData page (``pages.keys``)."""

from __future__ import annotations

import dagster as dg

from well_assets.names import PARTITIONS_NAME
from well_assets.pages.keys import missing_keys

odata_pages = dg.DynamicPartitionsDefinition(name=PARTITIONS_NAME)


def register_pages(instance: dg.DagsterInstance, n_pages: int) -> list[str]:
    """Adds the missing keys ``00000``..``n_pages-1`` in ascending order; returns the added ones."""
    missing = missing_keys(instance.get_dynamic_partitions(odata_pages.name), n_pages)
    if missing:
        instance.add_dynamic_partitions(odata_pages.name, missing)
    return missing
