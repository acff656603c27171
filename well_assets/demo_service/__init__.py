"""The bundled OData v4 demo service: generated well production data + fault injection.

    from well_assets.demo_service import DemoServiceConfig, DemoServer
    with DemoServer(DemoServiceConfig(rows=3000, bad_rows=0.01)) as srv:
        srv.base_url   # http://127.0.0.1:PORT/odata
        srv.admin_url  # http://127.0.0.1:PORT/admin
        srv.state      # ServiceState: dataset, faults, stats (in-process)

See docs/demo-service.md for the endpoints, query options and fault rules.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .config import DemoServiceConfig
    from .server import DemoServer

__all__ = ["DemoServiceConfig", "DemoServer"]


def __getattr__(name: str):
    # Lazy: `well-assets import` loads this package only for the `demo-server`
    # subcommand's parser; pulling in starlette and uvicorn then cost ~0.7 s per import.
    if name == "DemoServer":
        from .server import DemoServer

        return DemoServer
    if name == "DemoServiceConfig":
        from .config import DemoServiceConfig

        return DemoServiceConfig
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
