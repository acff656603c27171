"""DuckDB storage of well production pages.

``store`` is plain Python (no Dagster): ``DuckDBStore`` and the page types. The Dagster
IO manager that wraps it lives next to it and is not imported here.
"""

from well_assets.storage.store import (
    DATABASE_SETTING,
    DuckDBStore,
    PageCounts,
    PageFailure,
    PageWrite,
    duplicate_key_count,
    import_page_status,
    latest_page_status,
    load_rejects,
    load_table,
    page_log,
    pages_succeeded_in_runs,
    schema_violation_count,
    source_identity,
    table_row_count,
    utc_now,
)

__all__ = [
    "DATABASE_SETTING",
    "DuckDBStore",
    "PageCounts",
    "PageFailure",
    "PageWrite",
    "duplicate_key_count",
    "import_page_status",
    "latest_page_status",
    "load_rejects",
    "load_table",
    "page_log",
    "pages_succeeded_in_runs",
    "schema_violation_count",
    "source_identity",
    "table_row_count",
    "utc_now",
]
