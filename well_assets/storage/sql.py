"""Every SQL statement the store runs, as named constants.

Values are always bound parameters (``$name``); the only identifiers are the fixed
table and column names below and the fixed names under which a page's polars frames
are registered on the connection (``wa_page_*``). Nothing is ever formatted in from
data or settings.
"""

from importlib import resources

from well_assets.schema import COLUMNS, VOLUME_COLUMNS

SCHEMA_DDL = resources.files("well_assets.storage").joinpath("schema.sql").read_text("utf-8")

# Names under which a page's frames are registered (Arrow, zero copy) for one write.
PAGE_VALID_VIEW = "wa_page_valid"
PAGE_NEW_VIEW = "wa_page_new"
PAGE_CHANGED_VIEW = "wa_page_changed"
PAGE_REJECTS_VIEW = "wa_page_rejects"

_DATA = ", ".join(COLUMNS)  # well_code, production_date, oil/gas/water_production
_DIFFERS = " OR ".join(f"t.{c} IS DISTINCT FROM p.{c}" for c in VOLUME_COLUMNS)

# The page's rows whose key is absent from the table (is_new) or present with other
# values; rows present with identical values are not returned (they are duplicates).
# The join uses DuckDB's dynamic join filters (min/max of the page's keys), so only the
# row groups around the page's key range are scanned.
CLASSIFY_PAGE = f"""
SELECT {", ".join(f"p.{c}" for c in COLUMNS)}, t.well_code IS NULL AS is_new
FROM {PAGE_VALID_VIEW} AS p
LEFT JOIN well_production AS t
  ON t.well_code = p.well_code AND t.production_date = p.production_date
WHERE t.well_code IS NULL OR {_DIFFERS}
"""

INSERT_NEW_ROWS = f"""
INSERT INTO well_production ({_DATA}, source_page, run_id, imported_at, updated_at)
SELECT {_DATA}, $page, $run_id, $now, $now FROM {PAGE_NEW_VIEW}
"""

# imported_at is kept: it records the first import of the key.
UPDATE_CHANGED_ROWS = f"""
UPDATE well_production AS t SET
    {", ".join(f"{c} = c.{c}" for c in VOLUME_COLUMNS)},
    source_page = $page,
    run_id = $run_id,
    updated_at = $now
FROM {PAGE_CHANGED_VIEW} AS c
WHERE t.well_code = c.well_code AND t.production_date = c.production_date
"""

# A record rejected again (wherever it is now) replaces its earlier reject row.
DELETE_SEEN_REJECTS = f"""
DELETE FROM well_production_rejects AS r
USING {PAGE_REJECTS_VIEW} AS n
WHERE r.raw_record = n.raw_record
  AND r.well_code IS NOT DISTINCT FROM n.well_code
  AND r.production_date IS NOT DISTINCT FROM n.production_date
"""

INSERT_REJECTS = f"""
INSERT INTO well_production_rejects
    (page, run_id, well_code, production_date, column_name, check_name, value, reason,
     raw_record, rejected_at)
SELECT $page, $run_id, well_code, production_date, "column", "check", value, reason,
       raw_record, $now
FROM {PAGE_REJECTS_VIEW}
"""

LEDGER_COLUMNS = (
    "page",
    "partition_key",
    "run_id",
    "status",
    "skip",
    "top",
    "rows_fetched",
    "rows_new",
    "rows_updated",
    "rows_duplicate",
    "rows_rejected",
    "in_page_duplicates",
    "source_count",
    "first_key",
    "last_key",
    "fetch_seconds",
    "validate_seconds",
    "db_seconds",
    "throttle_seconds",
    "retries",
    "bytes",
    "cache_hit",
    "error",
    "started_at",
    "ended_at",
    "source",
    "page_size",
)
INSERT_LEDGER_ROW = (
    f"INSERT INTO odata_page_log ({', '.join(LEDGER_COLUMNS)}) "
    f"VALUES ({', '.join('$' + c for c in LEDGER_COLUMNS)})"
)

SELECT_PAGE_SIZE = "SELECT page_size FROM odata_import_settings WHERE source = $source"
INSERT_PAGE_SIZE = """
INSERT INTO odata_import_settings (source, page_size, created_at)
VALUES ($source, $page_size, $now)
ON CONFLICT (source) DO NOTHING
"""
DELETE_PAGE_SIZE = "DELETE FROM odata_import_settings WHERE source = $source"

# -- reads ---------------------------------------------------------------------------

LATEST_PAGE_STATUS = """
SELECT * FROM odata_page_log
WHERE CAST($source AS VARCHAR) IS NULL OR source = $source
QUALIFY row_number() OVER (PARTITION BY page ORDER BY log_id DESC) = 1
ORDER BY page
"""

PAGE_LOG = "SELECT * FROM odata_page_log ORDER BY log_id"

# Pages whose latest outcome in the given runs is a success: a retried step or a
# re-execution of the same run group skips them instead of fetching them again.
PAGES_SUCCEEDED_IN_RUNS = """
SELECT page FROM odata_page_log
WHERE list_contains($run_ids, run_id)
QUALIFY row_number() OVER (PARTITION BY page ORDER BY log_id DESC) = 1
    AND status = 'succeeded'
"""

DUPLICATE_KEY_COUNT = """
SELECT count(*) FROM (
    SELECT well_code, production_date FROM well_production
    GROUP BY well_code, production_date HAVING count(*) > 1
)
"""

_VOLUME_BAD = " OR ".join(
    f"{c} < 0 OR {c} > $max_daily_volume OR isnan({c}) OR isinf({c})" for c in VOLUME_COLUMNS
)
SCHEMA_VIOLATION_COUNT = f"""
SELECT count(*) FROM well_production
WHERE well_code IS NULL OR well_code = '' OR production_date IS NULL OR {_VOLUME_BAD}
"""

TABLE_ROW_COUNT = "SELECT count(*) FROM well_production"

LOAD_TABLE = "SELECT * FROM well_production ORDER BY well_code, production_date"

LOAD_REJECTS = "SELECT * FROM well_production_rejects ORDER BY page, well_code, production_date, raw_record"
