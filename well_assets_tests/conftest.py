"""Shared pytest fixtures for the well_assets test suite.

Keep each fixture generic and documented; add new ones in their own section below.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable

import pytest

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
