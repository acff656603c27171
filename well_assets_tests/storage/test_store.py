"""DuckDBStore against real DuckDB files: the page size, connections and locks, reads.
(The page write itself is tested in test_page_write.py.)"""

import datetime as dt
import subprocess
import sys
import textwrap
import time

import duckdb
import polars as pl
import pytest

from well_assets import errors
from well_assets.storage import (
    DuckDBStore,
    duplicate_key_count,
    load_table,
    schema_violation_count,
    source_identity,
    table_row_count,
)
from well_assets.validation.columns import COLUMNS
from well_assets_tests.storage_helpers import SOURCE, make_page, rec

# -------------------------------------------------------------------- page size


def test_page_size_is_recorded_and_enforced(store):
    with store.connection() as con:
        store.check_page_size(con, 1000, SOURCE)
        store.check_page_size(con, 1000, SOURCE)  # same: fine
        store.check_page_size(con, 500, SOURCE + "?$filter=x")  # another source: independent
        with pytest.raises(errors.ConfigError) as info:
            store.check_page_size(con, 500, SOURCE)
        assert info.value.setting == "ODATA_PAGE_SIZE"
        assert "ODATA_PAGE_SIZE=500" in str(info.value) and "1000" in str(info.value)
        assert store.reset_page_size(con, SOURCE, 500) == 1000
        store.check_page_size(con, 500, SOURCE)
        with pytest.raises(errors.ConfigError, match="ODATA_PAGE_SIZE"):
            store.check_page_size(con, 0, SOURCE)


# ------------------------------------------------------------------- connections


def _python(code: str, *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_connection_closed_on_exception(store):
    with pytest.raises(ZeroDivisionError):
        with store.connection() as con:
            con.execute("SELECT 1").fetchall()
            1 / 0
    with pytest.raises(duckdb.ConnectionException):
        con.execute("SELECT 1")
    # another process can take the write lock: nothing in this process holds the file
    proc = _python(
        "import duckdb, sys; c = duckdb.connect(sys.argv[1]); print(c.execute('select count(*) from well_production').fetchall()[0][0]); c.close()",
        str(store.path),
    )
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert out.strip() == "0"


def test_open_waits_for_the_lock_then_times_out_or_succeeds(tmp_path):
    path = tmp_path / "locked.duckdb"
    holder = _python(
        """
        import duckdb, sys, time
        c = duckdb.connect(sys.argv[1])
        print("locked", flush=True)
        time.sleep(float(sys.argv[2]))
        c.close()
        """,
        str(path),
        "2.5",
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        started = time.monotonic()
        with pytest.raises(errors.DatabaseError, match="locked by another process"):
            with DuckDBStore(path, lock_timeout=0.3).connection():
                pass
        assert time.monotonic() - started < 2.0
        with DuckDBStore(path, lock_timeout=30).connection() as con:  # waits, then opens
            assert table_row_count(con) == 0
    finally:
        holder.kill()
        holder.communicate()


@pytest.mark.parametrize("bad", ["", "   ", ":memory:", "some/dir/", None, 42])
def test_invalid_database_path(bad):
    with pytest.raises(errors.ConfigError) as info:
        DuckDBStore(bad)
    assert info.value.setting == "WELLS_DATABASE"


def test_directory_is_not_a_database_path(tmp_path):
    with pytest.raises(errors.ConfigError, match="WELLS_DATABASE"):
        DuckDBStore(tmp_path)


def test_read_only(store, tmp_path):
    with pytest.raises(errors.DatabaseError, match="does not exist"):
        with DuckDBStore(tmp_path / "missing.duckdb").connection(read_only=True):
            pass
    with store.connection() as con:
        store.write_page(con, make_page(0, [rec(day=1)]))
    with store.connection(read_only=True) as con:
        assert table_row_count(con) == 1
        with pytest.raises(duckdb.Error):
            con.execute("DELETE FROM well_production").fetchall()


# --------------------------------------------------------------------- reads


def test_duplicate_key_count_finds_keys_stored_twice_without_a_primary_key(tmp_path):
    # A table created by other tooling, without the primary key: the check must count
    # exactly (the hash screen only decides whether to count).
    path = tmp_path / "nopk.duckdb"
    with duckdb.connect(str(path)) as raw:
        raw.execute(
            "CREATE TABLE well_production (well_code VARCHAR, production_date DATE, oil_production DOUBLE, "
            "gas_production DOUBLE, water_production DOUBLE, source_page INTEGER, run_id VARCHAR, "
            "imported_at TIMESTAMP, updated_at TIMESTAMP)"
        )
        rows = [("A", dt.date(2023, 1, 1))] * 3 + [("B", dt.date(2023, 1, 1))] * 2 + [("C", dt.date(2023, 1, 1))]
        raw.executemany("INSERT INTO well_production (well_code, production_date) VALUES (?, ?)", rows)
    with DuckDBStore(path).connection(read_only=True) as con:
        assert duplicate_key_count(con) == 2 and table_row_count(con) == 6


def test_read_helpers(store):
    with store.connection() as con:
        store.write_page(con, make_page(0, [rec(day=1, oil=10), rec(day=2, oil=500)], max_daily_volume=1e9))
        store.write_page(con, make_page(1, [rec(day=3, oil=50)], max_daily_volume=100))
        table = load_table(con)
        assert table.columns[:5] == list(COLUMNS)
        assert table.columns[5:] == ["source_page", "run_id", "imported_at", "updated_at"]
        assert table.schema["production_date"] == pl.Date
        assert table_row_count(con) == 3
        assert duplicate_key_count(con) == 0
        assert schema_violation_count(con) == 0
        # each row is judged by the limit its page was validated with (the ledger's)
        store.write_page(con, make_page(2, [rec(day=4, oil=500)], max_daily_volume=100))  # bypassed validation
        assert schema_violation_count(con) == 1
        # a row that bypassed validation is found
        con.execute(
            "INSERT INTO well_production (well_code, production_date, oil_production) VALUES (?, ?, ?)",
            ["WELL_X", dt.date(2023, 1, 1), -4.0],
        ).fetchall()
        assert schema_violation_count(con) == 2
        assert table_row_count(con) == 5


def test_source_identity_has_no_credentials():
    ident = source_identity("https://user:secret@Host.example:8443/odata/?token=abc#x", "WellProduction", "ProductionDate ge 2024-01-01")
    assert ident == "https://host.example:8443/odata/WellProduction?$filter=ProductionDate ge 2024-01-01"
    assert "secret" not in ident and "abc" not in ident
