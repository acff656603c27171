"""Every SQL statement the store runs, as named constants.

Values are always bound parameters (``$name``); the only identifiers are the fixed
table and column names below and the fixed names under which a page's polars frames
are registered on the connection (``wa_page_*``). Nothing is ever formatted in from
data or settings.
"""

from importlib import resources

from well_assets.validation.columns import COLUMNS, VOLUME_COLUMNS

SCHEMA_DDL = resources.files("well_assets.storage").joinpath("schema.sql").read_text("utf-8")

# Names under which a page's frames are registered (Arrow, zero copy) for one write.
PAGE_VALID_VIEW = "wa_page_valid"
PAGE_REJECTS_VIEW = "wa_page_rejects"

_DATA = ", ".join(COLUMNS)  # well_code, production_date, oil/gas/water_production

# ONE statement upserts a page: new keys are inserted, keys whose values changed are
# updated (values and lineage; imported_at kept), identical rows are not touched at all
# (lineage included, so a re-import leaves the table byte-identical). RETURNING yields
# one row per written row: new rows have imported_at = updated_at (both the page's
# stamp), updated rows keep their older imported_at. Unchanged = page rows - returned.
# The lineage values are bound parameters: cheaper than adding them as columns of every
# page frame (docs/benchmarks.md).
UPSERT_PAGE = f"""
INSERT INTO well_production ({_DATA}, source_page, run_id, imported_at, updated_at)
SELECT {_DATA}, $page, $run_id, $now, $now FROM {PAGE_VALID_VIEW}
ON CONFLICT (well_code, production_date) DO UPDATE SET
    {", ".join(f"{c} = excluded.{c}" for c in VOLUME_COLUMNS)},
    source_page = excluded.source_page,
    run_id = excluded.run_id,
    updated_at = excluded.updated_at
WHERE {" OR ".join(f"well_production.{c} IS DISTINCT FROM excluded.{c}" for c in VOLUME_COLUMNS)}
RETURNING imported_at = updated_at AS is_new
"""

# The fast path of a page none of whose keys is stored yet (a first import): a plain
# INSERT, about half the cost of the upsert at 1.5M rows (DuckDB's ON CONFLICT costs more
# than the primary-key check of a plain insert, and grows with the table; docs/benchmarks.md). The primary key refuses it if any key is stored; the store then
# upserts the page (page_write._upsert_rows).
INSERT_NEW_PAGE = f"""
INSERT INTO well_production ({_DATA}, source_page, run_id, imported_at, updated_at)
SELECT {_DATA}, $page, $run_id, $now, $now FROM {PAGE_VALID_VIEW}
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
    "import_id",
    "run_started_at",
    "rss_mb",
    "max_daily_volume",
    "rows_deleted",
    "rows_repaired",
    "read_by",
    "lower_key",
    "upper_key",
    "source_rows",
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

# The latest outcome of every page of one import (default: the import of the newest ledger row).
IMPORT_PAGE_STATUS = """
SELECT * FROM odata_page_log
WHERE import_id = coalesce(CAST($import_id AS VARCHAR),
                           (SELECT import_id FROM odata_page_log ORDER BY log_id DESC LIMIT 1))
QUALIFY row_number() OVER (PARTITION BY page ORDER BY log_id DESC) = 1
ORDER BY page
"""

LEAN_SETTINGS = "SET memory_limit = '64MB'; SET threads = 1"

# The page writer runs one small statement after another: a second DuckDB thread only
# adds hand-offs, and takes a core from the page fetcher process (docs/benchmarks.md).
WRITER_SETTINGS = "SET threads = 1"

# Pages whose latest outcome in the given runs is a success: a retried step or a
# re-execution of the same run group skips them instead of fetching them again.
PAGES_SUCCEEDED_IN_RUNS = """
SELECT page FROM odata_page_log
WHERE list_contains($run_ids, run_id)
QUALIFY row_number() OVER (PARTITION BY page ORDER BY log_id DESC) = 1
    AND status = 'succeeded'
"""

# A cheap screen before DUPLICATE_KEY_COUNT: rows minus distinct 64-bit key hashes. 0 means
# no key is stored twice (equal keys hash equal); anything else (a duplicate, or a hash
# collision) is then counted exactly. The screen needs about half the memory and time of
# the exact GROUP BY (docs/benchmarks.md).
KEY_HASH_SURPLUS = "SELECT count(*) - count(DISTINCT hash(well_code, production_date)) FROM well_production"

DUPLICATE_KEY_COUNT = """
SELECT count(*) FROM (
    SELECT well_code, production_date FROM well_production
    GROUP BY well_code, production_date HAVING count(*) > 1
)
"""

_VOLUME_BAD = " OR ".join(
    f"{c} < 0 OR {c} > coalesce(l.max_daily_volume, $default_max) OR isnan({c}) OR isinf({c})" for c in VOLUME_COLUMNS
)
# Stored rows that break the rules they were validated with: every row is judged by the
# limit of the page that last wrote it (the ledger records it), or the default.
SCHEMA_VIOLATION_COUNT = f"""
WITH limits AS (
    SELECT page, max_daily_volume FROM odata_page_log WHERE status = 'succeeded'
    QUALIFY row_number() OVER (PARTITION BY page ORDER BY log_id DESC) = 1
)
SELECT count(*) FROM well_production w LEFT JOIN limits l ON w.source_page = l.page
WHERE well_code IS NULL OR well_code = '' OR production_date IS NULL OR {_VOLUME_BAD}
"""

TABLE_ROW_COUNT = "SELECT count(*) FROM well_production"

LOAD_TABLE = "SELECT * FROM well_production ORDER BY well_code, production_date"

LOAD_REJECTS = "SELECT * FROM well_production_rejects ORDER BY page, well_code, production_date, raw_record"


# -- key ranges ----------------------------------------------------------------------------
# A page's range [lower, upper) over (well_code, production_date); a NULL bound is unbounded.
# The last line adds nothing to the range's meaning; it is there because DuckDB can skip
# row groups by a plain bound on well_code (their min/max), not by the ORs above: a range
# costs a few row groups instead of a scan of the table (the table is written in key order).
IN_RANGE = """
    ($lo_well IS NULL OR well_code > $lo_well OR (well_code = $lo_well AND production_date >= $lo_date))
    AND ($hi_well IS NULL OR well_code < $hi_well OR (well_code = $hi_well AND production_date < $hi_date))
    AND ($lo_well IS NULL OR well_code >= $lo_well) AND ($hi_well IS NULL OR well_code <= $hi_well)
"""

# What the table holds in a range: rows and a checksum of their keys (equal key sets have
# equal sums; a different set of the same size almost surely not).
LARGEST_KEY = "SELECT well_code, production_date FROM well_production ORDER BY well_code DESC, production_date DESC LIMIT 1"
_CONTENTS = "count(*), coalesce(sum(hash(well_code, production_date)::HUGEINT), 0)"
RANGE_CONTENTS = f"SELECT {_CONTENTS} FROM well_production WHERE {IN_RANGE}"

# A successful page's ledger row, with what its range holds after the page: computed in
# the same statement (a statement of its own cost as much as the insert). A page that
# mirrors deletes leaves exactly its own rows in its range, so their figures need no scan
# of the table.
_LEDGER_WITH_CONTENTS = (
    f"INSERT INTO odata_page_log ({', '.join(LEDGER_COLUMNS)}, rows_in_range, key_checksum) "
    f"SELECT {', '.join('$' + c for c in LEDGER_COLUMNS)}, {_CONTENTS}"
)
INSERT_LEDGER_ROW_PAGE_CONTENTS = f"{_LEDGER_WITH_CONTENTS} FROM {PAGE_VALID_VIEW}"
# The same, with the page's figures computed before the write (storage.contents).
INSERT_LEDGER_ROW_GIVEN_CONTENTS = (
    f"INSERT INTO odata_page_log ({', '.join(LEDGER_COLUMNS)}, rows_in_range, key_checksum) "
    f"VALUES ({', '.join('$' + c for c in LEDGER_COLUMNS)}, $rows_in_range, $key_checksum)"
)
# Row count and key checksum of several frames' keys at once (registered as KEYS_VIEW with
# the frame's number in ``part``): the same figures as the ledger's, outside the file.
KEYS_VIEW = "wa_keys"
KEY_CONTENTS_BY_PART = f"SELECT part, {_CONTENTS} FROM {KEYS_VIEW} GROUP BY part"
INSERT_LEDGER_ROW_RANGE_CONTENTS = f"{_LEDGER_WITH_CONTENTS} FROM well_production WHERE {IN_RANGE}"

# The stored rows of a range that the page's rows no longer have.
_STALE = f"""
FROM well_production w
WHERE {IN_RANGE.replace("well_code", "w.well_code").replace("production_date", "w.production_date")}
  AND NOT EXISTS (SELECT 1 FROM {PAGE_VALID_VIEW} v
                  WHERE v.well_code = w.well_code AND v.production_date = w.production_date)
"""
COUNT_STALE = f"SELECT count(*) {_STALE}"
ARCHIVE_STALE = f"""
INSERT INTO well_production_deleted
SELECT w.well_code, w.production_date, w.oil_production, w.gas_production, w.water_production,
       w.source_page, w.imported_at, w.updated_at, $page, $run_id, $now
{_STALE}
"""
DELETE_STALE = f"DELETE {_STALE.replace('FROM well_production w', 'FROM well_production AS w', 1)}"

# A page is synced once a ledger row of it records the source's count of its range
# (source_rows); files written before that column existed kept it in the page map.
_LAST_SYNC = """
SELECT page, arg_max(source_rows, log_id) AS source_rows FROM odata_page_log
WHERE source = $source AND status = 'succeeded' AND source_rows IS NOT NULL GROUP BY page
"""
PAGE_MAP = f"""
SELECT m.page, m.lower_well, m.lower_date, (s.page IS NOT NULL OR m.synced_at IS NOT NULL) AS synced
FROM odata_page_map m LEFT JOIN ({_LAST_SYNC}) s ON s.page = m.page
WHERE m.source = $source ORDER BY m.page
"""
# A page's lower key is set once: a later read never moves it. (NOT EXISTS and not
# ON CONFLICT DO NOTHING: the same, at half the cost; the pool keeps one writer.)
SET_PAGE_LOWER = """
INSERT INTO odata_page_map (source, page, lower_well, lower_date, created_at)
SELECT $source, $page, $lower_well, $lower_date, $now
WHERE NOT EXISTS (SELECT 1 FROM odata_page_map WHERE source = $source AND page = $page)
"""
# The same for a writer that knows the page has no row yet (PageWrite.map_known).
INSERT_PAGE_LOWER = """
INSERT INTO odata_page_map (source, page, lower_well, lower_date, created_at)
VALUES ($source, $page, $lower_well, $lower_date, $now)
"""
SYNCED_SOURCE_ROWS = f"""
SELECT m.page, coalesce(s.source_rows, m.source_rows) AS source_rows
FROM odata_page_map m LEFT JOIN ({_LAST_SYNC}) s ON s.page = m.page
WHERE m.source = $source AND coalesce(s.source_rows, m.source_rows) IS NOT NULL
  AND (s.page IS NOT NULL OR m.synced_at IS NOT NULL)
ORDER BY m.page
"""

# Every page's range and what the table holds in it, in one pass: the map's lower keys and
# the table's keys sorted together; each row belongs to the last lower key at or before it.
TABLE_BY_PAGE = """
WITH bounds AS (
    SELECT page, lower_well AS well_code, lower_date AS production_date, 0 AS is_row
    FROM odata_page_map WHERE source = $source AND page > 0
), keyed AS (
    SELECT NULL::INTEGER AS page, well_code, production_date, 1 AS is_row FROM well_production
    UNION ALL SELECT * FROM bounds
), placed AS (
    SELECT coalesce(last_value(page IGNORE NULLS) OVER (
               ORDER BY well_code, production_date, is_row ROWS UNBOUNDED PRECEDING), 0) AS page,
           well_code, production_date, is_row
    FROM keyed
)
SELECT page, count(*) FILTER (WHERE is_row = 1) AS rows,
       coalesce(sum(hash(well_code, production_date)::HUGEINT) FILTER (WHERE is_row = 1), 0) AS key_checksum
FROM placed GROUP BY page ORDER BY page
"""

TABLE_EXISTS = "SELECT count(*) FROM information_schema.tables WHERE table_name = $name"

# -- change tracking (storage.tracking) --------------------------------------------------
SYNC_STATE = """
SELECT delta_link, link_taken_at, pending_link, pending_taken_at, staged_link,
       (SELECT count(*) FROM odata_delta_staging WHERE source = $source) AS staged_changes
FROM odata_sync_state WHERE source = $source
"""
STAGED_PAGES = "SELECT DISTINCT page FROM odata_delta_staging WHERE source = $source ORDER BY page"
ENSURE_SYNC_STATE = """
INSERT INTO odata_sync_state (source, updated_at) SELECT $source, $now
WHERE NOT EXISTS (SELECT 1 FROM odata_sync_state WHERE source = $source)
"""
# A baseline is begun once: a full sync's later runs keep the first one's link.
BEGIN_BASELINE = """
UPDATE odata_sync_state SET pending_link = $link, pending_taken_at = $taken_at, updated_at = $now
WHERE source = $source AND pending_link IS NULL
RETURNING 1
"""
# The pending baseline becomes the delta link when every mapped page was synced (read by
# offset or by range, and committed) after the link was taken.
PROMOTE_BASELINE = """
UPDATE odata_sync_state SET delta_link = pending_link, link_taken_at = pending_taken_at,
       pending_link = NULL, pending_taken_at = NULL, updated_at = $now
WHERE source = $source AND pending_link IS NOT NULL
  AND EXISTS (SELECT 1 FROM odata_page_map WHERE source = $source)
  AND NOT EXISTS (
      SELECT 1 FROM odata_page_map m WHERE m.source = $source AND NOT EXISTS (
          SELECT 1 FROM odata_page_log l
          WHERE l.source = $source AND l.page = m.page AND l.status = 'succeeded'
            AND l.read_by IN ('offset', 'range') AND l.started_at >= $taken_at))
RETURNING 1
"""
# An expired delta link (and whatever was staged from it) is dropped by the full re-sync that replaces it.
DROP_DELTA_LINK = """
UPDATE odata_sync_state SET delta_link = NULL, link_taken_at = NULL, staged_link = NULL, staged_at = NULL,
       pending_link = NULL, pending_taken_at = NULL, updated_at = $now
WHERE source = $source AND delta_link IS NOT NULL
RETURNING 1
"""
CLEAR_STAGING = "DELETE FROM odata_delta_staging WHERE source = $source"
SET_STAGED_LINK = """
UPDATE odata_sync_state SET staged_link = $link, staged_at = $now, updated_at = $now
WHERE source = $source AND delta_link = $from_link AND staged_link IS NULL
RETURNING 1
"""
STAGED_DELTA_VIEW = "wa_staged_delta"
STAGE_CHANGES = f"""
INSERT INTO odata_delta_staging (source, page, record, well_code, production_date, reason)
SELECT $source, page, record, well_code, production_date, reason FROM {STAGED_DELTA_VIEW}
"""
STAGED_CHANGES_OF_PAGES = """
SELECT page, record, well_code, production_date, reason FROM odata_delta_staging
WHERE source = $source AND page BETWEEN $first AND $last
"""
UNSTAGE_PAGE = "DELETE FROM odata_delta_staging WHERE source = $source AND page = $page"
# The last staged change applied: the delta link moves on, in the same transaction.
ADVANCE_DELTA_LINK = """
UPDATE odata_sync_state SET delta_link = staged_link, link_taken_at = staged_at, staged_link = NULL,
       staged_at = NULL, updated_at = $now
WHERE source = $source AND staged_link IS NOT NULL
  AND NOT EXISTS (SELECT 1 FROM odata_delta_staging WHERE source = $source)
RETURNING 1
"""

# A delta page: the stored rows of the keys the delta removed, or whose record it brings
# but validation rejects (the source no longer has a valid row for them), are deleted and
# kept in well_production_deleted.
PAGE_GONE_VIEW = "wa_page_gone"
GONE_FIGURES = f"""
SELECT count(*) FILTER (WHERE g.removed AND w.well_code IS NOT NULL),
       count(*) FILTER (WHERE NOT g.removed AND w.well_code IS NULL)
FROM {PAGE_GONE_VIEW} g LEFT JOIN well_production w
  ON w.well_code = g.well_code AND w.production_date = g.production_date
"""
ARCHIVE_GONE = f"""
INSERT INTO well_production_deleted
SELECT w.well_code, w.production_date, w.oil_production, w.gas_production, w.water_production,
       w.source_page, w.imported_at, w.updated_at, $page, $run_id, $now
FROM well_production w JOIN {PAGE_GONE_VIEW} g
  ON w.well_code = g.well_code AND w.production_date = g.production_date
"""
DELETE_GONE = f"""
DELETE FROM well_production AS w USING {PAGE_GONE_VIEW} AS g
WHERE w.well_code = g.well_code AND w.production_date = g.production_date
RETURNING 1
"""
LAST_SOURCE_ROWS = f"SELECT max(source_rows) FROM ({_LAST_SYNC}) WHERE page = $page"
