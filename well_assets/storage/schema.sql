-- Table layout of the well-assets DuckDB file. Idempotent: run on every read-write open.
-- Timestamps are UTC (TIMESTAMP without time zone).

-- The imported rows: one per natural key, upserted page by page. Lineage columns:
-- source_page/run_id = the page and run that last inserted or changed the row;
-- imported_at = first insert; updated_at = last change of values.
CREATE TABLE IF NOT EXISTS well_production (
    well_code        VARCHAR   NOT NULL,
    production_date  DATE      NOT NULL,
    oil_production   DOUBLE,
    gas_production   DOUBLE,
    water_production DOUBLE,
    source_page      INTEGER,
    run_id           VARCHAR,
    imported_at      TIMESTAMP,
    updated_at       TIMESTAMP,
    PRIMARY KEY (well_code, production_date)
);

-- Rejected records (one row per rejected source record). A record seen again
-- (same raw_record, well_code and production_date) replaces its earlier row, so
-- re-running pages never duplicates rejects and never loses one.
CREATE TABLE IF NOT EXISTS well_production_rejects (
    page            INTEGER,
    run_id          VARCHAR,
    well_code       VARCHAR,   -- raw text as received
    production_date VARCHAR,   -- raw text as received
    column_name     VARCHAR,   -- first failing column
    check_name      VARCHAR,   -- first failing check
    value           VARCHAR,   -- raw text of the first failing value
    reason          VARCHAR,   -- all failures of the record, joined with '; '
    raw_record      VARCHAR,   -- the record as canonical JSON
    rejected_at     TIMESTAMP
);

-- Append-only page ledger: one row per page attempt outcome. The latest row of a page
-- (highest log_id) is that page's status.
CREATE SEQUENCE IF NOT EXISTS odata_page_log_seq;
CREATE TABLE IF NOT EXISTS odata_page_log (
    log_id             BIGINT    PRIMARY KEY DEFAULT nextval('odata_page_log_seq'),
    page               INTEGER   NOT NULL,
    partition_key      VARCHAR,
    run_id             VARCHAR,
    status             VARCHAR   NOT NULL CHECK (status IN ('succeeded', 'failed')),
    skip               BIGINT,
    top                INTEGER,
    rows_fetched       INTEGER,
    rows_new           INTEGER,
    rows_updated       INTEGER,
    rows_duplicate     INTEGER,
    rows_rejected      INTEGER,
    in_page_duplicates INTEGER,
    source_count       BIGINT,
    first_key          VARCHAR,
    last_key           VARCHAR,
    fetch_seconds      DOUBLE,
    validate_seconds   DOUBLE,
    db_seconds         DOUBLE,
    throttle_seconds   DOUBLE,
    retries            INTEGER,
    bytes              BIGINT,
    cache_hit          BOOLEAN,
    error              VARCHAR,
    started_at         TIMESTAMP,
    ended_at           TIMESTAMP,
    source             VARCHAR,
    page_size          INTEGER
);

-- Added after the first release (existing files get them on the next read-write open):
-- the import a page belongs to (runs of one CLI import, of one backfill, or one run with
-- its re-executions), when that import's run started, and the peak memory of the
-- importing processes (writer + page fetcher) when the page was written.
ALTER TABLE odata_page_log ADD COLUMN IF NOT EXISTS import_id VARCHAR;
ALTER TABLE odata_page_log ADD COLUMN IF NOT EXISTS run_started_at TIMESTAMP;
ALTER TABLE odata_page_log ADD COLUMN IF NOT EXISTS rss_mb DOUBLE;
-- The largest daily volume the page was validated with (the schema check judges its rows by it).
ALTER TABLE odata_page_log ADD COLUMN IF NOT EXISTS max_daily_volume DOUBLE;

ALTER TABLE odata_page_log ADD COLUMN IF NOT EXISTS rows_deleted INTEGER;
-- Rows a page read by offset had missed because the source changed during the import,
-- fetched again by key range.
ALTER TABLE odata_page_log ADD COLUMN IF NOT EXISTS rows_repaired INTEGER;
-- How the page was read: 'offset' (its first read) or 'range' (by its key range).
ALTER TABLE odata_page_log ADD COLUMN IF NOT EXISTS read_by VARCHAR;
-- The page's key range [lower_key, upper_key) as text (NULL: unbounded), and what the table
-- held in it after the commit: rows and a checksum of their keys (the reconciliation
-- check compares both with the table now).
ALTER TABLE odata_page_log ADD COLUMN IF NOT EXISTS lower_key VARCHAR;
ALTER TABLE odata_page_log ADD COLUMN IF NOT EXISTS upper_key VARCHAR;
ALTER TABLE odata_page_log ADD COLUMN IF NOT EXISTS rows_in_range BIGINT;
ALTER TABLE odata_page_log ADD COLUMN IF NOT EXISTS key_checksum HUGEINT;

-- The key range of every page (partition): page k covers [its lower key, the next page's
-- lower key); page 0 has no lower key, the last page no upper one. A page's lower key is
-- set when it or the page before it is first read by offset, and never moves after: inserts
-- and deletes elsewhere in the source cannot shift a page. ``synced_at`` (and source_rows
-- below) were set by earlier versions; a page's syncs are now in the ledger.
CREATE TABLE IF NOT EXISTS odata_page_map (
    source      VARCHAR   NOT NULL,
    page        INTEGER   NOT NULL,
    lower_well  VARCHAR,
    lower_date  DATE,
    created_at  TIMESTAMP NOT NULL,
    synced_at   TIMESTAMP,
    PRIMARY KEY (source, page)
);
-- Kept for files written before the ledger recorded each sync's source_rows (below).
ALTER TABLE odata_page_map ADD COLUMN IF NOT EXISTS source_rows BIGINT;
-- How many records the source's count of the page's range gave at this sync (NULL: the
-- write was not a sync of the page's range): what the sensor and the reconciliation
-- compare the source's count with now. The page's latest such row is its last sync.
ALTER TABLE odata_page_log ADD COLUMN IF NOT EXISTS source_rows BIGINT;

-- Rows a page sync removed because the source no longer has them: their values as they
-- were, the page, the run and the time.
CREATE TABLE IF NOT EXISTS well_production_deleted (
    well_code        VARCHAR   NOT NULL,
    production_date  DATE      NOT NULL,
    oil_production   DOUBLE,
    gas_production   DOUBLE,
    water_production DOUBLE,
    source_page      INTEGER,
    imported_at      TIMESTAMP,
    updated_at       TIMESTAMP,
    page             INTEGER,
    run_id           VARCHAR,
    deleted_at       TIMESTAMP
);

-- The page size each source was partitioned with (page k = $skip k*page_size).
CREATE TABLE IF NOT EXISTS odata_import_settings (
    source     VARCHAR   PRIMARY KEY,
    page_size  INTEGER   NOT NULL,
    created_at TIMESTAMP NOT NULL
);

-- OData change tracking, per source (README "Change tracking"):
--   delta_link: the changes since the table was last known equal to the source (NULL: none;
--     the sensor then finds changes by counting page ranges);
--   pending_link / pending_taken_at: a baseline being taken: a link asked for before a full
--     sync's page reads; it becomes delta_link once every page was synced after it was taken;
--   staged_link: a delta read into odata_delta_staging; delta_link becomes staged_link in the
--     transaction that applies the last staged change, never before.
-- A delta link is a secret-bearing URL: it never leaves this table (no log, no metadata).
CREATE TABLE IF NOT EXISTS odata_sync_state (
    source            VARCHAR   PRIMARY KEY,
    delta_link        VARCHAR,
    link_taken_at     TIMESTAMP,
    pending_link      VARCHAR,
    pending_taken_at  TIMESTAMP,
    staged_link       VARCHAR,
    staged_at         TIMESTAMP,
    updated_at        TIMESTAMP NOT NULL
);

-- The changes of a delta read and not yet applied, by the page whose key range holds them:
-- a changed entity as its JSON record (validated when applied), a removed one by its key as
-- the source sent it. A page's rows leave this table in the transaction that applies them.
CREATE TABLE IF NOT EXISTS odata_delta_staging (
    source           VARCHAR   NOT NULL,
    page             INTEGER   NOT NULL,
    record           VARCHAR,
    well_code        VARCHAR,
    production_date  VARCHAR,
    reason           VARCHAR
);
