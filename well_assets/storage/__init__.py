"""DuckDB storage of well production pages (no Dagster): the store (connections, tables,
the page size per source), one page's transaction, the records it takes, and the reads
the report and the checks run. The Dagster IO manager that uses it is ``defs.io_manager``.
"""

from well_assets.storage.reads import (
    duplicate_key_count,
    has_table,
    import_page_status,
    latest_page_status,
    load_rejects,
    load_table,
    page_log,
    page_map,
    pages_succeeded_in_runs,
    schema_violation_count,
    synced_source_rows,
    table_by_page,
    table_row_count,
)
from well_assets.storage.records import Key, PageCounts, PageMap, PageFailure, PageWrite, source_identity, to_key, utc_now
from well_assets.storage.store import DATABASE_SETTING, DuckDBStore

__all__ = [
    "DATABASE_SETTING",
    "DuckDBStore",
    "Key",
    "PageCounts",
    "PageFailure",
    "PageMap",
    "PageWrite",
    "duplicate_key_count",
    "has_table",
    "import_page_status",
    "latest_page_status",
    "load_rejects",
    "load_table",
    "page_log",
    "page_map",
    "pages_succeeded_in_runs",
    "schema_violation_count",
    "synced_source_rows",
    "source_identity",
    "table_by_page",
    "table_row_count",
    "to_key",
    "utc_now",
]
