"""The import summary: DESIGN.md's JSON shape, built from the page ledger.

Used by the CLI (`--json` and the table it prints) and by the
`well_production_import_report` asset, so both report the same figures.
"""

from __future__ import annotations

from typing import Any

import polars as pl

from well_assets import storage

ERROR_CODES = ("EXTERNAL_API_ERROR", "PAGINATION_ERROR", "VALIDATION_ERROR", "DATABASE_ERROR")


def _sum(frame: pl.DataFrame, column: str) -> float:
    if frame.is_empty() or column not in frame.columns:
        return 0
    value = frame.get_column(column).sum()
    return value or 0


def build_summary(
    ledger: pl.DataFrame,
    *,
    total_pages: int | None = None,
    wall_seconds: float | None = None,
    memory_usage_mb: float | None = None,
) -> dict[str, Any]:
    """Summary of the given ledger rows (the latest row per page of one import)."""
    ok = ledger.filter(pl.col("status") == "succeeded") if not ledger.is_empty() else ledger
    failed = ledger.filter(pl.col("status") == "failed") if not ledger.is_empty() else ledger
    processed = int(_sum(ok, "rows_fetched"))
    new = int(_sum(ok, "rows_new"))
    updated = int(_sum(ok, "rows_updated"))
    duplicate = int(_sum(ok, "rows_duplicate"))
    rejected = int(_sum(ok, "rows_rejected"))
    api = float(_sum(ledger, "fetch_seconds"))
    database = float(_sum(ledger, "db_seconds"))
    validation = float(_sum(ledger, "validate_seconds"))
    throttle = float(_sum(ledger, "throttle_seconds"))
    if wall_seconds is None and not ledger.is_empty():
        span = ledger.select((pl.col("ended_at").max() - pl.col("started_at").min()).dt.total_microseconds())
        wall_seconds = (span.item() or 0) / 1e6
    wall_seconds = float(wall_seconds or 0.0)
    page_size = int(ledger.get_column("top").max()) if not ledger.is_empty() else 0
    source_counts = ledger.get_column("source_count").drop_nulls() if not ledger.is_empty() else pl.Series([])
    pages_seen = ledger.height
    failed_pages = [
        {"page": int(row["page"]), "partition_key": row["partition_key"], "error": row["error"],
         "run_id": row["run_id"]}
        for row in failed.sort("page").iter_rows(named=True)
    ]
    success = not failed_pages
    data = {
        "batch_result": {
            "total_items": int(source_counts.max()) if len(source_counts) else processed,
            "processed_items": processed,
            "failed_items": rejected,
            "success_rate": round(100.0 * (processed - rejected) / processed, 3) if processed else 100.0,
            "memory_usage_mb": round(memory_usage_mb, 1) if memory_usage_mb is not None else None,
        },
        "pagination_summary": {
            "total_pages": int(total_pages if total_pages is not None else pages_seen),
            "processed_pages": ok.height,
            "failed_pages": failed.height,
            "page_size": page_size,
            "average_page_time_seconds": round(wall_seconds / pages_seen, 4) if pages_seen else 0.0,
        },
        "import_summary": {
            "new_records": new,
            "updated_records": updated,
            "duplicate_records": duplicate,
            "error_records": rejected,
        },
        "performance": {
            "total_execution_time_seconds": round(wall_seconds, 3),
            "average_throughput_per_second": round(processed / wall_seconds, 1) if wall_seconds else 0.0,
            "api_request_time_seconds": round(api, 3),
            "validation_time_seconds": round(validation, 3),
            "database_time_seconds": round(database, 3),
            "throttle_wait_seconds": round(throttle, 3),
        },
        "failed_page_list": failed_pages,
    }
    if success:
        message = f"Imported {processed} records from {ok.height} page(s): {new} new, {updated} updated, {duplicate} duplicate, {rejected} rejected"
    else:
        message = f"{failed.height} of {pages_seen} page(s) failed: " + ", ".join(p["partition_key"] for p in failed_pages)
    return {"success": success, "data": data, "message": message}


def failure_envelope(summary: dict[str, Any]) -> dict[str, Any]:
    """The seed's failure shape for a summary with failed pages."""
    failed = summary["data"]["failed_page_list"]
    codes = [str(p["error"] or "").split(":", 1)[0] for p in failed]
    code = next((c for c in codes if c in ERROR_CODES), "EXTERNAL_API_ERROR")
    return {
        "success": False,
        "error": {
            "code": code,
            "message": summary["message"],
            "details": {"failed_pages": failed, "summary": summary["data"]},
        },
    }


def summary_from_store(con, *, total_pages: int | None = None, pages: list[int] | None = None,
                       wall_seconds: float | None = None, memory_usage_mb: float | None = None) -> dict[str, Any]:
    ledger = storage.latest_page_status(con)
    if pages is not None:
        ledger = ledger.filter(pl.col("page").is_in(pages))
    return build_summary(ledger, total_pages=total_pages, wall_seconds=wall_seconds,
                         memory_usage_mb=memory_usage_mb)


def to_markdown(summary: dict[str, Any]) -> str:
    data = summary["data"]
    lines = ["| section | figure | value |", "|---|---|---|"]
    for section in ("batch_result", "pagination_summary", "import_summary", "performance"):
        for name, value in data[section].items():
            lines.append(f"| {section} | {name} | {value} |")
    text = f"**{summary['message']}**\n\n" + "\n".join(lines)
    if data["failed_page_list"]:
        text += "\n\n**Failed pages**\n\n| page | run | error |\n|---|---|---|\n"
        text += "\n".join(
            f"| {p['partition_key']} | {p['run_id']} | {str(p['error']).replace('|', '/')} |"
            for p in data["failed_page_list"]
        )
    return text


def headline_metadata(summary: dict[str, Any]) -> dict[str, Any]:
    data = summary["data"]
    return {
        "processed_records": data["batch_result"]["processed_items"],
        "new_records": data["import_summary"]["new_records"],
        "updated_records": data["import_summary"]["updated_records"],
        "duplicate_records": data["import_summary"]["duplicate_records"],
        "error_records": data["import_summary"]["error_records"],
        "processed_pages": data["pagination_summary"]["processed_pages"],
        "failed_pages": data["pagination_summary"]["failed_pages"],
        "throughput_per_second": data["performance"]["average_throughput_per_second"],
    }
