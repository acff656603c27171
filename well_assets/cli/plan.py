"""What `well-assets import` reads, worked out before its runs start (no Dagster here).

The plan is the pages and the runs they go in. On a source imported before to its end,
every mapped page is read again by its key range. Otherwise the pages not synced yet are
read by offset, as far as the source's count reaches; the count also asks for a delta link
(change tracking), taken before any page is read. Making the plan checks the page size
against the one the partitions were created with, before anything is fetched or written.

Then the first pages of the first run are handed to the page fetcher at once
(``PageFetcher.read_early``): they are read while Dagster starts the run, and the run's own
reads of them take those pages instead of asking the source again. With a source URL the
command plans before it even imports Dagster (most of its start-up); for the bundled demo
service, which the Dagster resource starts, it plans once the resource is open.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from well_assets.odata import ClientConfig, ODataClient
from well_assets.pages.fetcher import PageFetcher
from well_assets.pages.keys import MAX_PAGES_PER_RUN, page_count, page_key, pages_within, run_ranges
from well_assets.pages.ranges import known_ranges
from well_assets.pages.stream import PageStream
from well_assets.settings import SECRET_VARIABLES, Settings, validate_base_url
from well_assets.storage import DuckDBStore, source_identity, tracking, utc_now

# Pages read before the run asks for them, per page fetch in flight: at 0.1 s a response,
# about the time Dagster takes to start the run (docs/benchmarks.md). The run holds them
# until it writes them, like the pages it fetches ahead itself.
EARLY_PAGES_PER_FETCH = 12
CLI_RUN_ID = "cli"  # the X-Request-ID prefix of the requests the command sends itself


@dataclass(frozen=True)
class ImportPlan:
    pages: list[int]  # the pages to import, ascending
    n_pages: int  # the source's pages: the partitions to register
    runs: list[tuple[int, int]]  # the first and last page of each run


def source_config(settings: Settings) -> ClientConfig:
    """The client config a run reads a source with a URL with: what ``ODataResource``
    gives, from the same settings and the environment's secrets."""
    config = ClientConfig(
        base_url=validate_base_url(settings.base_url),
        run_id=CLI_RUN_ID,
        **settings.client_options(),
        **{field: os.environ.get(variable) or None for field, variable in SECRET_VARIABLES.items()},
    )
    config.validate()
    return config


def plan_for_url(settings: Settings, fetcher: PageFetcher, start_page: int = 0,
                 max_pages: int | None = None) -> ImportPlan:
    """``plan_import`` for a source with a URL, from the settings alone."""
    source = source_identity(validate_base_url(settings.base_url), settings.entity_set, settings.filter)
    return plan_import(settings, source_config(settings), source, fetcher, start_page, max_pages)


def plan_import(settings: Settings, config: ClientConfig, source: str, fetcher: PageFetcher, start_page: int = 0,
                max_pages: int | None = None) -> ImportPlan:
    """Plans the import (see the module's docstring) and starts reading its first pages."""
    store = DuckDBStore(settings.database)
    mapped = store.page_map(source)
    baseline, taken_at = None, None
    if mapped and mapped[-1][2]:
        # Imported before, to the end: every page is read again by its key range (the last
        # one, grown past a page, is split by its run).
        n_pages = len(mapped)
        pages = pages_within(n_pages, start_page, max_pages)
    else:
        taken_at = utc_now()
        with ODataClient(config) as client:
            baseline = client.start_tracking()
        n_pages = max(len(mapped), page_count(baseline.count, settings.page_size))
        pages = pages_within(n_pages, start_page, max_pages,
                             f"the source has {baseline.count} rows in {n_pages} page(s)")
    with store.connection() as con:  # a read-write connection creates the tables
        store.check_page_size(con, settings.page_size, source)
        if baseline is not None and baseline.delta_link is not None and pages:
            tracking.begin_baseline(con, source, baseline.delta_link, taken_at)
    runs = run_ranges(pages[0], pages[-1], MAX_PAGES_PER_RUN) if pages else []
    if runs:
        first, last = runs[0]
        early = list(range(first, min(last, first + EARLY_PAGES_PER_FETCH * settings.concurrency - 1) + 1))
        fetcher.read_early(PageStream(fetcher=fetcher, client_config=config,
                                      pages=[(page, page_key(page)) for page in early],
                                      page_size=settings.page_size, source=source,
                                      ranges=known_ranges(mapped, early)).tasks())
    return ImportPlan(pages=pages, n_pages=n_pages, runs=runs)
