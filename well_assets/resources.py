"""Dagster resources: the OData source and the DuckDB database.

These are thin typed configuration layers. The HTTP work lives in ``well_assets.odata``
(which knows nothing of Dagster) and the SQL in ``well_assets.storage``.

The OData resource owns what it starts, for as long as Dagster holds it open (a step, a
sensor or schedule evaluation, ``dg.build_resources`` in the CLI): the bundled demo
service when no ``base_url`` is set, and the page fetcher process when a step asks for
it. Its teardown stops both, on every executor and in every process, so nothing outlives
the step, tick or command that needed it.
"""

from __future__ import annotations

import os
import shutil
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import dagster as dg
from pydantic import Field, PrivateAttr

from well_assets import settings
from well_assets.odata import ClientConfig, ODataClient
from well_assets import storage
from well_assets.errors import ConfigError
from well_assets.fetch_worker import PageFetcher
from well_assets.storage import DuckDBStore
from well_assets.storage.io_manager import WellsDuckDBIOManager


class ODataResource(dg.ConfigurableResource):
    """An OData v4 entity set, read page by page with retries, throttling and a cache.

    Leave ``base_url`` empty to use the bundled demo service, started on a free loopback
    port while the resource is open. Credentials come from ``dg.EnvVar`` and never reach
    logs, metadata or storage.
    """

    base_url: str | None = Field(default=None, description="Service root; empty: bundled demo service.")
    entity_set: str = Field(default=settings.DEFAULT_ENTITY_SET, description="Entity set name.")
    page_size: int = Field(default=settings.DEFAULT_PAGE_SIZE, description="Records per page, 1..5000.")
    orderby: str = Field(default="WellCode,ProductionDate", description="$orderby: must be a stable total order.")
    filter: str | None = Field(default=None, description="$filter applied to every request.")
    select: str | None = Field(default=None, description="$select (the five production properties are required).")
    token: str | None = Field(default=None, description="Bearer token (use dg.EnvVar).")
    username: str | None = Field(default=None, description="Basic auth user (use dg.EnvVar).")
    password: str | None = Field(default=None, description="Basic auth password (use dg.EnvVar).")
    connect_timeout: float = Field(default=5.0, description="Seconds to connect.")
    read_timeout: float = Field(default=60.0, description="Seconds to read a response.")
    max_retries: int = Field(default=5, description="Retries per request after the first attempt.")
    backoff_base: float = Field(default=0.5, description="First backoff delay, seconds (exponential, full jitter).")
    backoff_cap: float = Field(default=30.0, description="Longest backoff delay, seconds.")
    min_interval: float = Field(default=0.0, description="Minimum seconds between requests (process-wide).")
    adaptive_throttle: bool = Field(default=True, description="Slow down on 429 or rising latency.")
    max_retry_after: float = Field(default=120.0, description="Longest Retry-After honoured before failing fast.")
    cache_dir: str | None = Field(default=None, description="Directory for the response cache; empty: off.")
    cache_ttl_seconds: float = Field(default=3600.0, description="Response cache time-to-live.")
    demo_rows: int = Field(default=150_000, description="Rows of the bundled demo service (no base_url only).")
    demo_bad_rows: float = Field(default=0.001, description="Share of salted bad rows of the bundled demo service.")

    _embedded: Any = PrivateAttr(default=None)  # the bundled demo service while open
    _fetcher: PageFetcher | None = PrivateAttr(default=None)
    _owns_fetcher: bool = PrivateAttr(default=False)

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        if not self.base_url:
            from well_assets.demo_service import DemoServer, DemoServiceConfig

            self._embedded = DemoServer(DemoServiceConfig(rows=self.demo_rows, bad_rows=self.demo_bad_rows)).start()

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        fetcher, self._fetcher = self._fetcher, None
        embedded, self._embedded = self._embedded, None
        try:
            if fetcher is not None and self._owns_fetcher:
                fetcher.close()
        finally:
            if embedded is not None:
                embedded.stop()

    def page_fetcher(self) -> PageFetcher:
        """The page fetcher process of this resource (started on first use, stopped at teardown)."""
        if self._fetcher is None:
            self._fetcher, self._owns_fetcher = PageFetcher().start(), True
        return self._fetcher

    def use_page_fetcher(self, fetcher: PageFetcher) -> None:
        """Fetch with ``fetcher``, which the caller started and closes (the CLI starts it
        before importing Dagster, so that the fetcher's start-up overlaps Dagster's)."""
        if self._fetcher is not None:
            raise RuntimeError("this resource already has a page fetcher")
        self._fetcher, self._owns_fetcher = fetcher, False

    @property
    def service_url(self) -> str:
        """The service root requests go to: ``base_url``, or the bundled demo service's."""
        if self.base_url:
            return settings.validate_base_url(self.base_url)
        if self._embedded is None:
            raise ConfigError(
                "ODATA_BASE_URL", None,
                "a service URL, or an open resource (a Dagster step or tick, or dg.build_resources) "
                "that starts the bundled demo service",
            )
        return self._embedded.base_url

    def client_config(self, run_id: str = "local", cache_namespace: str | None = None) -> ClientConfig:
        # The cache serves retries within one run group only (namespace = root run id):
        # a later import must see the source as it is now, not as it was.
        cache_dir = self.run_cache_dir(cache_namespace) if cache_namespace else None
        config = ClientConfig(
            base_url=self.service_url,
            entity_set=self.entity_set,
            page_size=self.page_size,
            orderby=self.orderby,
            filter=self.filter,
            select=self.select,
            token=self.token,
            username=self.username,
            password=self.password,
            connect_timeout=self.connect_timeout,
            read_timeout=self.read_timeout,
            max_retries=self.max_retries,
            backoff_base=self.backoff_base,
            backoff_cap=self.backoff_cap,
            min_interval=self.min_interval,
            adaptive_throttle=self.adaptive_throttle,
            max_retry_after=self.max_retry_after,
            cache_dir=cache_dir,
            cache_ttl_seconds=self.cache_ttl_seconds,
            run_id=run_id,
        )
        config.validate()
        return config

    def run_cache_dir(self, cache_namespace: str) -> str | None:
        """The response cache directory of one run group (None when the cache is off)."""
        return str(Path(self.cache_dir) / cache_namespace) if self.cache_dir else None

    def purge_expired_caches(self) -> int:
        """Deletes run-group caches older than the TTL; returns how many were removed."""
        if not self.cache_dir or not Path(self.cache_dir).is_dir():
            return 0
        removed = 0
        cutoff = time.time() - self.cache_ttl_seconds
        for entry in Path(self.cache_dir).iterdir():
            try:
                if entry.is_dir() and entry.stat().st_mtime < cutoff:
                    shutil.rmtree(entry, ignore_errors=True)
                    removed += 1
            except OSError:
                continue  # another process removed it first
        return removed

    def source_identity(self) -> str:
        """Names the source without credentials: it keys the recorded page size. The bundled
        demo service gets a new port every time it starts; it is the same source."""
        base_url = self.base_url or EMBEDDED_SOURCE_URL
        return storage.source_identity(settings.validate_base_url(base_url), self.entity_set, self.filter)

    @contextmanager
    def client(self, run_id: str = "local", logger=None, cache_namespace: str | None = None) -> Iterator[ODataClient]:
        with ODataClient(self.client_config(run_id, cache_namespace), logger=logger) as client:
            yield client


EMBEDDED_SOURCE_URL = "http://embedded-demo/odata"


class WellsDatabase(dg.ConfigurableResource):
    """The DuckDB file that holds the production table, rejects and the page ledger."""

    path: str = Field(default=settings.DEFAULT_DATABASE, description="DuckDB file (WELLS_DATABASE).")
    lock_timeout: float = Field(default=120.0, description="Seconds to wait for another writer's file lock.")

    def store(self) -> DuckDBStore:
        return DuckDBStore(self.path, lock_timeout=self.lock_timeout)


def _secret(name: str):
    """An EnvVar for a set secret (resolved at run time, never shown), else None."""
    return dg.EnvVar(name) if os.environ.get(name) else None


def _number(name: str, default: float, *, whole: bool = False, most: float | None = None) -> float:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    allowed = ("a whole number" if whole else "a number") + " >= 0" + (f" and <= {most:g}" if most is not None else "")
    try:
        value = int(raw) if whole else float(raw)
    except ValueError:
        raise ConfigError(name, raw, allowed) from None
    if value < 0 or (most is not None and value > most):
        raise ConfigError(name, raw, allowed)
    return value


def resources_from_env(env_settings: settings.Settings | None = None) -> dict:
    """The resources for the current environment (DESIGN.md settings)."""
    s = env_settings or settings.Settings.from_env()
    cache_dir = os.environ.get("ODATA_CACHE_DIR", str(Path(s.database).parent / "odata-cache"))
    odata = ODataResource(
        base_url=s.base_url,
        entity_set=s.entity_set,
        page_size=s.page_size,
        filter=s.filter,
        token=_secret("ODATA_TOKEN"),
        username=_secret("ODATA_USERNAME"),
        password=_secret("ODATA_PASSWORD"),
        min_interval=_number("ODATA_MIN_INTERVAL", 0.0),
        max_retries=int(_number("ODATA_MAX_RETRIES", 5)),
        backoff_base=_number("ODATA_BACKOFF_BASE", 0.5),
        backoff_cap=_number("ODATA_BACKOFF_CAP", 30.0),
        max_retry_after=_number("ODATA_MAX_RETRY_AFTER", 120.0),
        read_timeout=_number("ODATA_TIMEOUT", 60.0),
        cache_dir=cache_dir or None,
        demo_rows=int(_number("WELL_ASSETS_DEMO_ROWS", 150_000, whole=True)),
        demo_bad_rows=_number("WELL_ASSETS_DEMO_BAD_ROWS", 0.001, most=0.5),
    )
    return {
        "odata": odata,
        "wells_db": WellsDatabase(path=s.database),
        "wells_io_manager": WellsDuckDBIOManager(database=s.database),
    }
