"""Terminal output of `well-assets import`: the progress bar and the summary table."""

from __future__ import annotations

import sys
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table


class ProgressDisplay:
    """Page X of Y, percent, records and ETA on stderr; silent when disabled (cron, --json)."""

    def __init__(self, total_pages: int, enabled: bool) -> None:
        self.enabled = enabled
        self.total_pages = total_pages
        self.pages = 0
        self.records = 0
        self.failed = 0
        self._progress = Progress(
            TextColumn("page {task.completed:.0f} of {task.total:.0f}"),
            BarColumn(),
            TaskProgressColumn(),
            TextColumn("{task.fields[records]} records"),
            TextColumn("{task.fields[failed]}"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=Console(file=sys.stderr),
            disable=not enabled,
            transient=False,
        )
        self._task = None

    def __enter__(self) -> "ProgressDisplay":
        self._progress.start()
        self._task = self._progress.add_task("import", total=self.total_pages, records=0, failed="")
        return self

    def __exit__(self, *exc) -> None:
        self._progress.stop()

    def started(self, total: int) -> None:
        # A run may skip pages an earlier attempt committed; the bar counts them as done.
        pass

    def page_done(self, figures: dict[str, Any]) -> None:
        self.pages += 1
        self.records += int(figures.get("rows_fetched") or 0)
        if figures.get("status") == "failed":
            self.failed += 1
        if self._task is not None:
            self._progress.update(
                self._task,
                advance=1,
                records=f"{self.records:,}",
                failed=f"[red]{self.failed} failed[/red]" if self.failed else "",
            )


def print_summary(summary: dict[str, Any]) -> None:
    console = Console()
    data = summary["data"]
    table = Table(title="well-assets import", show_lines=False)
    table.add_column("section")
    table.add_column("figure")
    table.add_column("value", justify="right")
    for section in ("batch_result", "pagination_summary", "import_summary", "performance"):
        for name, value in data[section].items():
            table.add_row(section, name, "" if value is None else str(value))
    console.print(table)
    for page in data["failed_page_list"]:
        console.print(f"[red]page {page['partition_key']} failed[/red]: {page['error']}")
    style = "green" if summary["success"] else "red"
    console.print(f"[{style}]{summary['message']}[/{style}]")
