"""The import summary: the JSON shape of the README, built from the page ledger.

One function, ``import_summary``, serves the CLI (`--json` and the table it prints) and
the `well_production_import_report` asset, so both report the same figures for the same
import. An import is what one `well-assets import` command, one backfill, or one run
(with its re-executions) wrote: the ledger records it with every page, together with the
start of the page's run and the peak memory of the importing processes. Its wall time
runs from the start of its first run to its last page's commit.

``page_charts`` draws the per-page figures of every page across pages, for the report's
metadata: the asset page's partition plots cover only the newest 120 page keys.
"""

from __future__ import annotations

from typing import Any

import polars as pl

from well_assets import storage
from well_assets.reporting import charts

ERROR_CODES = ("EXTERNAL_API_ERROR", "PAGINATION_ERROR", "VALIDATION_ERROR", "DATABASE_ERROR")


def _sum(frame: pl.DataFrame, column: str) -> float:
    if frame.is_empty() or column not in frame.columns:
        return 0
    value = frame.get_column(column).sum()
    return value or 0


def build_summary(ledger: pl.DataFrame) -> dict[str, Any]:
    """Summary of the given ledger rows (the latest row per page of one import)."""
    ok = ledger.filter(pl.col("status") == "succeeded") if not ledger.is_empty() else ledger
    failed = ledger.filter(pl.col("status") == "failed") if not ledger.is_empty() else ledger
    processed = int(_sum(ok, "rows_fetched"))
    new = int(_sum(ok, "rows_new"))
    updated = int(_sum(ok, "rows_updated"))
    duplicate = int(_sum(ok, "rows_duplicate"))
    deleted = int(_sum(ok, "rows_deleted"))
    repaired = int(_sum(ok, "rows_repaired"))
    rejected = int(_sum(ok, "rows_rejected"))
    # pages whose changes came from the source's change-tracking delta (no page read)
    by_delta = ok.filter(pl.col("read_by") == "delta").height if "read_by" in ok.columns else 0
    api = float(_sum(ledger, "fetch_seconds"))
    database = float(_sum(ledger, "db_seconds"))
    validation = float(_sum(ledger, "validate_seconds"))
    throttle = float(_sum(ledger, "throttle_seconds"))
    wall_seconds = 0.0
    memory_usage_mb = None
    if not ledger.is_empty():
        began = pl.coalesce(pl.col("run_started_at").min(), pl.col("started_at").min())
        span = ledger.select((pl.col("ended_at").max() - began).dt.total_microseconds())
        wall_seconds = max((span.item() or 0) / 1e6, 0.0)
        memory_usage_mb = ledger.get_column("rss_mb").max()
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
            "memory_usage_mb": round(float(memory_usage_mb), 1) if memory_usage_mb is not None else None,
        },
        "pagination_summary": {
            "total_pages": pages_seen,
            "processed_pages": ok.height,
            "failed_pages": failed.height,
            "delta_pages": by_delta,
            "page_size": page_size,
            "average_page_time_seconds": round(wall_seconds / pages_seen, 4) if pages_seen else 0.0,
        },
        "import_summary": {
            "new_records": new,
            "updated_records": updated,
            "duplicate_records": duplicate,
            "deleted_records": deleted,
            "error_records": rejected,
            "repaired_records": repaired,
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
        message = (f"Imported {processed} records from {ok.height} page(s): {new} new, {updated} updated, "
                   f"{duplicate} duplicate, {deleted} deleted, {rejected} rejected"
                   + (f"; {repaired} repaired after the source changed during the import" if repaired else "")
                   + (f"; {by_delta} page(s) applied from the source's change-tracking delta" if by_delta else ""))
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


def import_summary(con, import_id: str | None = None) -> dict[str, Any]:
    """The summary of one import (default: the newest one in the ledger)."""
    return build_summary(storage.import_page_status(con, import_id))


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
        "deleted_records": data["import_summary"]["deleted_records"],
        "error_records": data["import_summary"]["error_records"],
        "processed_pages": data["pagination_summary"]["processed_pages"],
        "failed_pages": data["pagination_summary"]["failed_pages"],
        "throughput_per_second": data["performance"]["average_throughput_per_second"],
    }


# What the report charts across pages: (title, {legend: ledger column}).
PAGE_CHARTS = (
    ("Seconds per page", {"fetch": "fetch_seconds", "validate": "validate_seconds", "database": "db_seconds",
                          "throttle": "throttle_seconds"}),
    ("Rows per page", {"new": "rows_new", "updated": "rows_updated", "duplicate": "rows_duplicate",
                       "deleted": "rows_deleted", "rejected": "rows_rejected"}),
    ("Retries per page", {"retries": "retries"}),
)


def page_charts(ledger: pl.DataFrame) -> str:
    """Markdown with one chart per PAGE_CHARTS entry over the given ledger rows (one per
    page, in page order); failed pages are listed under the charts."""
    if ledger.is_empty():
        return "No page has been imported yet."
    ledger = ledger.sort("page")
    keys = ledger.get_column("partition_key").to_list()
    images = []
    for title, columns in PAGE_CHARTS:
        series = {name: ledger.get_column(column).cast(pl.Float64).to_list() for name, column in columns.items()}
        images.append(charts.markdown_image(charts.line_chart(f"{title} ({ledger.height} pages)", keys, series), title))
    failed = ledger.filter(pl.col("status") == "failed").get_column("partition_key").to_list()
    note = f"\n\nFailed pages: {', '.join(failed)}" if failed else ""
    return "\n\n".join(images) + note
