"""What the import should produce, computed independently from the demo service's data."""

from __future__ import annotations

import duckdb

VOLUMES = ("OilProduction", "GasProduction", "WaterProduction")


def expected_table(server) -> dict[tuple[str, str], tuple]:
    """Good records by key (first occurrence), from the records served minus the salted bad ones."""
    bad = {(b["index"]) for b in server.state.bad_rows() if b["kind"] != "duplicate_key"}
    rows: dict[tuple[str, str], tuple] = {}
    for index, record in enumerate(server.state.records()):
        if index in bad:
            continue
        key = (record["WellCode"], record["ProductionDate"])
        rows.setdefault(key, tuple(None if record[v] is None else float(record[v]) for v in VOLUMES))
    return rows


def stored_table(db_path: str) -> dict[tuple[str, str], tuple]:
    con = duckdb.connect(db_path, read_only=True)
    try:
        data = con.execute(
            "select well_code, strftime(production_date, '%Y-%m-%d'), oil_production, gas_production,"
            " water_production from well_production"
        ).fetchall()
    finally:
        con.close()
    return {(r[0], r[1]): tuple(r[2:]) for r in data}


def query(db_path: str, sql: str, params=None) -> list[tuple]:
    con = duckdb.connect(db_path, read_only=True)
    try:
        return con.execute(sql, params or []).fetchall()
    finally:
        con.close()
