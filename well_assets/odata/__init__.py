"""Plain-Python OData v4 client (no Dagster): paging done right, retries, throttle, cache.

    from well_assets.odata import ClientConfig, ODataClient
    with ODataClient(ClientConfig(base_url="https://host/odata", page_size=1000)) as client:
        total = client.count()
        page = client.fetch_page(0)      # PageResult: records, source_count, timings, request ids
        baseline = client.start_tracking()          # Baseline: count, delta_link (None: no tracking)
        delta = client.read_delta(baseline.delta_link)  # Delta: changed, removed, delta_link, requests
"""

from .client import ODataClient, PageResult
from .config import ClientConfig
from .delta import Baseline, Delta, Removed
from .throttle import Throttle, reset_throttles, throttle_for

__all__ = ["Baseline", "ClientConfig", "Delta", "ODataClient", "PageResult", "Removed", "Throttle",
           "reset_throttles", "throttle_for"]
