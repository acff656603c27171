"""Pandera's cost per page when several pages are judged in one call (``judge_pages``).

    python benchmarks/pandera_batch.py

Fetches 16 pages of 1000 rows from the bundled service (in this process), then times, in
batches of 1, 2, 4, 8 and 16 pages (median of 5 repetitions, milliseconds per page, with
Polars' in-memory engine as the page fetcher uses): the Pandera model alone over parsed
frames, and ``judge_pages`` (the parse step, Pandera, in-page duplicates: what the page
fetcher's judging thread runs per batch).
"""

from __future__ import annotations

import statistics
import time

import polars as pl

from well_assets.demo_service import DemoServer, DemoServiceConfig
from well_assets.odata import ClientConfig, ODataClient
from well_assets.validation.model import ValidationSettings, failure_cases, use_in_memory_engine
from well_assets.validation.page import judge_pages, parse_page, records_to_frame

PAGES = 16


def main() -> None:
    use_in_memory_engine()
    with DemoServer(DemoServiceConfig(rows=PAGES * 1000, bad_rows=0)) as server:
        with ODataClient(ClientConfig(base_url=server.base_url, page_size=1000)) as client:
            records = [client.fetch_page(i).records for i in range(PAGES)]
    frames = [records_to_frame(r)[0] for r in records]
    settings = ValidationSettings()
    failure_cases(frames[0], settings)  # the model is built once per settings
    parsed = [parse_page(r) for r in records]
    for batch in (1, 2, 4, 8, 16):
        runs, judged = [], []
        for _ in range(5):
            began = time.perf_counter()
            for at in range(0, PAGES, batch):
                failure_cases(pl.concat(frames[at:at + batch]) if batch > 1 else frames[at], settings)
            runs.append((time.perf_counter() - began) / PAGES * 1000)
            began = time.perf_counter()
            for at in range(0, PAGES, batch):
                judge_pages(parsed[at:at + batch], settings)
            judged.append((time.perf_counter() - began) / PAGES * 1000)
        print(f"{batch:2d} page(s) a call: Pandera {statistics.median(runs):.2f} ms a page, "
              f"judge_pages {statistics.median(judged):.2f} ms a page")


if __name__ == "__main__":
    main()
