"""Shared pytest fixtures for the well_assets test suite.

Keep each fixture generic and documented; add new ones in their own section below.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable

import pytest


def pytest_collection_modifyitems(items):
    """The live stack keeps working in the background once started: its tests run after
    all others (so those do not share the two cores with it), and the test that stops it
    runs last."""
    def order(item) -> int:
        if item.get_closest_marker("stops_live_stack"):
            return 2
        return 1 if "live_stack" in getattr(item, "fixturenames", ()) else 0

    items.sort(key=order)

# -- demo OData service ------------------------------------------------------------


@pytest.fixture(scope="session")
def demo_server() -> Any:
    """Factory: `demo_server(rows=3000, faults=[...], ...) -> DemoServer` (started).

    Keyword arguments are `DemoServiceConfig` fields; a `DemoServiceConfig` may be passed
    positionally instead. Every call starts a new server on a free loopback port (so tests
    that mutate data or faults never share state); all are stopped at the end of the
    session, and a test may call `.stop()` earlier itself.
    """
    from well_assets.demo_service import DemoServer, DemoServiceConfig

    started: list[DemoServer] = []

    def start(config: DemoServiceConfig | None = None, **fields: Any) -> DemoServer:
        server = DemoServer(config, **fields).start()
        started.append(server)
        return server

    factory: Callable[..., DemoServer] = start
    yield factory
    # stop concurrently: each uvicorn shutdown waits for its ~0.1 s main-loop tick
    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(lambda s: s.stop(), started))


# -- environment, database, imports ---------------------------------------------------

_SETTINGS_ENV = (
    "DAGSTER_HOME", "ODATA_BASE_URL", "ODATA_ENTITY_SET", "ODATA_TOKEN", "ODATA_USERNAME",
    "ODATA_PASSWORD", "ODATA_PAGE_SIZE", "ODATA_FILTER", "WELLS_DATABASE", "ODATA_CACHE_DIR",
    "ODATA_MIN_INTERVAL", "ODATA_MAX_RETRIES", "ODATA_BACKOFF_BASE", "ODATA_BACKOFF_CAP",
    "ODATA_MAX_RETRY_AFTER", "ODATA_TIMEOUT", "ODATA_CONCURRENCY", "ODATA_CHANGE_TRACKING", "ODATA_MAX_DELETE_FRACTION",
    "WELL_ASSETS_DEMO_ROWS", "WELL_ASSETS_DEMO_BAD_ROWS",
)


@pytest.fixture(autouse=True)
def _isolated_settings(monkeypatch, tmp_path):
    """No test sees the developer's settings; retries are fast; caches live in tmp_path."""
    for name in _SETTINGS_ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("ODATA_CACHE_DIR", str(tmp_path / "odata-cache"))
    monkeypatch.setenv("ODATA_BACKOFF_BASE", "0.01")
    monkeypatch.setenv("ODATA_BACKOFF_CAP", "0.05")


@pytest.fixture
def db_path(tmp_path) -> str:
    """A fresh DuckDB file path (not created yet)."""
    return str(tmp_path / "db" / "wells.duckdb")


@pytest.fixture
def dagster_home(tmp_path, monkeypatch):
    """A fresh DAGSTER_HOME (the project's dagster.yaml in a tmp directory), set in the
    environment; returns its path."""
    import shutil
    from pathlib import Path

    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(Path(__file__).resolve().parents[1] / "dagster.yaml", home / "dagster.yaml")
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    return home


@pytest.fixture
def store(tmp_path):
    """A DuckDBStore on a fresh file in a directory that does not exist yet."""
    from well_assets.storage import DuckDBStore

    return DuckDBStore(tmp_path / "nested" / "dir" / "wells.duckdb", lock_timeout=5)


@pytest.fixture
def run_import(db_path):
    """Runs `well-assets import` in this process against a server; returns the summary.

    `run_import(server, page_size=500, start_page=0, max_pages=None, database=db_path, concurrency=4)`.
    """
    from well_assets.cli.importer import ImportRequest
    from well_assets.cli.importer import run_import as _run
    from well_assets.settings import Settings

    def run(server, *, page_size: int = 1000, start_page: int = 0, max_pages: int | None = None,
            database: str | None = None, odata_filter: str | None = None, concurrency: int = 4) -> dict:
        settings = Settings(base_url=server.base_url, entity_set="WellProduction", page_size=page_size,
                            filter=odata_filter, database=database or db_path, concurrency=concurrency)
        return _run(ImportRequest(settings=settings, start_page=start_page, max_pages=max_pages))

    return run


# -- a live Dagster stack (webserver + daemon) ----------------------------------------------

LIVE_ROWS = 5000
LIVE_PAGE_SIZE = 1000


@pytest.fixture(scope="session")
def live_source():
    """The OData source of the live stack: the bundled service, 5000 clean rows (5 pages of
    1000), in this test process so tests can change its data and faults."""
    from well_assets.demo_service import DemoServer, DemoServiceConfig

    with DemoServer(DemoServiceConfig(rows=LIVE_ROWS, days_per_well=500, max_page_size=LIVE_PAGE_SIZE)) as server:
        yield server


@pytest.fixture(scope="session")
def live_stack(live_source, tmp_path_factory):
    """dagster-webserver + dagster-daemon on the project's dagster.yaml and workspace.yaml,
    started once per session (~30 s); the sensor ticks every 10 s and the schedule every
    minute once they are turned on."""
    from well_assets_tests.live_stack import Stack

    stack = Stack(tmp_path_factory.mktemp("stack"), live_source.base_url, page_size=LIVE_PAGE_SIZE,
                  extra_env={"WELL_ASSETS_SENSOR_INTERVAL": "10", "WELL_ASSETS_REFRESH_CRON": "* * * * *"})
    try:
        stack.start()
        yield stack
    finally:
        stack.stop()


@pytest.fixture
def live(live_stack, live_source):
    """The live stack with the source back to its generated data (no faults) and a fresh
    DuckDB file; prints the stack's logs after the test (pytest shows them on failure)."""
    import httpx

    live_stack.assert_runs_left_nothing()
    httpx.post(f"{live_source.admin_url}/reset", timeout=60).raise_for_status()
    live_stack.wipe_database()
    yield live_stack
    print(live_stack.logs(), file=__import__("sys").stderr)
