"""The `well-assets` command: `import`, `demo-server` and `trigger`.

`import` runs the Dagster job in this process (using DAGSTER_HOME's instance when set, so
the runs show in the UI), with a progress bar on a terminal and a quiet summary for cron.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
from typing import Sequence

from well_assets.cli.common import EXIT_FAILED, EXIT_OK, EXIT_USAGE, fail, whole_number
from well_assets.errors import ConfigError, WellAssetsError


def _add_import_parser(sub) -> None:
    p = sub.add_parser(
        "import",
        help="import OData pages into DuckDB through Dagster",
        description="Registers the page partitions for the source's current count and materializes "
        "the requested pages (one DuckDB transaction per page). Flags override the environment.",
    )
    p.add_argument("--base-url", help="OData service root (ODATA_BASE_URL); default: bundled demo service")
    p.add_argument("--entity-set", help="entity set (ODATA_ENTITY_SET, default WellProduction)")
    p.add_argument("--database", help="DuckDB file (WELLS_DATABASE, default data/wells.duckdb)")
    p.add_argument("--page-size", help="records per page, 1..5000 (ODATA_PAGE_SIZE, default 1000)")
    p.add_argument("--filter", dest="odata_filter", help="OData $filter for every request (ODATA_FILTER)")
    p.add_argument("--concurrency", help="page fetches in flight at most, 1..16 (ODATA_CONCURRENCY, default 4)")
    p.add_argument("--change-tracking", metavar="{auto,on,off}",
                   help="OData change tracking (delta links): auto, on or off (ODATA_CHANGE_TRACKING, default auto)")
    p.add_argument("--start-page", default="0", help="first page to import (default 0)")
    p.add_argument("--max-pages", default=None, help="import at most this many pages (default: all)")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.add_argument("--no-progress", action="store_true", help="no progress bar even on a terminal")


def _import(args) -> int:
    from well_assets.settings import (
        Settings,
        validate_base_url,
        validate_change_tracking,
        validate_concurrency,
        validate_database,
        validate_entity_set,
        validate_page_size,
    )

    # Every setting is checked before the heavy imports: importing the definitions builds
    # them from the environment, and a bad value must end in this clear error instead.
    try:
        base = Settings.from_env()
        # The flags replace their variables; every other setting stays as the environment has it.
        settings = base.with_overrides(
            base_url=validate_base_url(args.base_url, "--base-url") if args.base_url is not None else base.base_url,
            entity_set=(validate_entity_set(args.entity_set, "--entity-set") if args.entity_set is not None
                        else base.entity_set),
            page_size=validate_page_size(args.page_size, "--page-size") if args.page_size is not None else base.page_size,
            filter=args.odata_filter if args.odata_filter is not None else base.filter,
            database=str(validate_database(args.database, "--database")) if args.database is not None else base.database,
            concurrency=(validate_concurrency(args.concurrency, "--concurrency") if args.concurrency is not None
                         else base.concurrency),
            change_tracking=(validate_change_tracking(args.change_tracking, "--change-tracking")
                             if args.change_tracking is not None else base.change_tracking),
        )
        start_page = whole_number(args.start_page, "--start-page", 0)
        max_pages = whole_number(args.max_pages, "--max-pages", 1) if args.max_pages is not None else None
    except WellAssetsError as exc:
        return fail(exc, args.json, EXIT_USAGE)
    # The start-up below (imports, Dagster's instance and definitions) makes hundreds of
    # thousands of objects that live as long as the command and no garbage: the cyclic
    # collector's passes over them are pure cost. It is off until the runs start
    # (cli.importer freezes what the start-up made and turns it back on).
    gc.disable()
    from well_assets.pages.fetcher import PageFetcher

    # The page fetcher's process starts first: its imports (Polars, Pandera, httpx) run
    # on the other core while this process imports Dagster.
    with PageFetcher(concurrency=settings.concurrency) as fetcher:
        try:
            planned = None
            if settings.base_url:
                # Plan before importing Dagster, and start reading the first pages: they are
                # read while Dagster imports and starts the run (cli.plan).
                from well_assets.cli.plan import plan_for_url

                planned = plan_for_url(settings, fetcher, start_page, max_pages)
            from well_assets.cli.importer import ImportRequest, run_import

            request = ImportRequest(settings=settings, start_page=start_page, max_pages=max_pages)
            show_progress = not args.no_progress and not args.json and sys.stderr.isatty()
            summary = run_import(request, progress_bar=show_progress, fetcher=fetcher, planned=planned)
        except ConfigError as exc:  # a setting found invalid only when used (e.g. an uncreatable directory)
            return fail(exc, args.json, EXIT_USAGE)
        except WellAssetsError as exc:
            return fail(exc, args.json, EXIT_FAILED)
        finally:
            gc.enable()  # whatever happened before the runs (a caller's process keeps its collector)
    from well_assets.reporting import summary as report

    if args.json:
        print(json.dumps(summary if summary["success"] else report.failure_envelope(summary), indent=2, default=str))
    else:
        from well_assets.cli.console import print_summary

        print_summary(summary)
    gc.freeze()
    return EXIT_OK if summary["success"] else EXIT_FAILED


def build_parser() -> argparse.ArgumentParser:
    from well_assets.cli import trigger
    from well_assets.demo_service import cli as demo_cli

    parser = argparse.ArgumentParser(
        prog="well-assets",
        description="Import daily well production from OData v4 into DuckDB, with Dagster.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    _add_import_parser(sub)
    demo_cli.add_parser(sub)
    trigger.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "import":
        return _import(args)
    if args.command == "demo-server":
        from well_assets.demo_service import cli as demo_cli

        return demo_cli.run(args) or 0
    if args.command == "trigger":
        from well_assets.cli import trigger

        return trigger.run(args)
    parser.error(f"unknown command {args.command}")
    return EXIT_USAGE


if __name__ == "__main__":
    os.environ.setdefault("DAGSTER_DISABLE_TELEMETRY", "1")
    sys.exit(main())
