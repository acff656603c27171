"""The bundled OData v4 demo service: generated well production data + fault injection.

    from well_assets.demo_service import DemoServiceConfig, DemoServer
    with DemoServer(DemoServiceConfig(rows=3000, bad_rows=0.01)) as srv:
        srv.base_url   # http://127.0.0.1:PORT/odata
        srv.admin_url  # http://127.0.0.1:PORT/admin
        srv.state      # ServiceState: dataset, faults, stats (in-process)

See docs/demo-service.md for the endpoints, query options and fault rules.
"""

from .config import DemoServiceConfig
from .server import DemoServer

__all__ = ["DemoServiceConfig", "DemoServer"]
