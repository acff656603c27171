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

import dataclasses
import os
import shutil
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import dagster as dg
from pydantic import Field, PrivateAttr

from well_assets import settings, storage
from well_assets.defs.io_manager import WellsDuckDBIOManager
from well_assets.errors import ConfigError
from well_assets.odata import ClientConfig, ODataClient
from well_assets.pages.fetcher import PageFetcher
from well_assets.storage import DuckDBStore, PageMap

_CLIENT_DEFAULTS = ClientConfig(base_url="http://defaults.invalid")  # the one place the client's defaults live
# The resource's fields that are the client's own settings, passed on by name.
# (The key, in $orderby order, is the well production entity's: ClientConfig's default.)
_CLIENT_FIELDS = tuple(f.name for f in dataclasses.fields(ClientConfig)
                       if f.name not in ("base_url", "cache_dir", "run_id", "key"))


class ODataResource(dg.ConfigurableResource):
    """An OData v4 entity set, read page by page with retries, throttling and a cache.

    Leave ``base_url`` empty to use the bundled demo service, started on a free loopback
    port when first needed while the resource is open. Credentials come from ``dg.EnvVar`` and never reach
    logs, metadata or storage.
    """

    base_url: str | None = Field(default=None, description="Service root; empty: bundled demo service.")
    entity_set: str = Field(default=_CLIENT_DEFAULTS.entity_set, description="Entity set name.")
    page_size: int = Field(default=_CLIENT_DEFAULTS.page_size, description="Records per page, 1..5000.")
    orderby: str = Field(default=_CLIENT_DEFAULTS.orderby, description="$orderby: must be a stable total order.")
    filter: str | None = Field(default=None, description="$filter applied to every request.")
    select: str | None = Field(default=None, description="$select (the five production properties are required).")
    token: str | None = Field(default=None, description="Bearer token (use dg.EnvVar).")
    username: str | None = Field(default=None, description="Basic auth user (use dg.EnvVar).")
    password: str | None = Field(default=None, description="Basic auth password (use dg.EnvVar).")
    connect_timeout: float = Field(default=_CLIENT_DEFAULTS.connect_timeout, description="Seconds to connect.")
    read_timeout: float = Field(default=_CLIENT_DEFAULTS.read_timeout, description="Seconds to read a response.")
    max_retries: int = Field(default=_CLIENT_DEFAULTS.max_retries, description="Retries per request after the first attempt.")
    backoff_base: float = Field(default=_CLIENT_DEFAULTS.backoff_base,
                                description="First backoff delay, seconds (exponential, full jitter).")
    backoff_cap: float = Field(default=_CLIENT_DEFAULTS.backoff_cap, description="Longest backoff delay, seconds.")
    min_interval: float = Field(default=_CLIENT_DEFAULTS.min_interval,
                                description="Minimum seconds between requests (process-wide).")
    adaptive_throttle: bool = Field(default=_CLIENT_DEFAULTS.adaptive_throttle,
                                    description="Slow down on 429 or rising latency.")
    concurrency: int = Field(default=_CLIENT_DEFAULTS.concurrency,
                             description="Page fetches in flight at most, 1..16, sharing one politeness budget "
                                         "(fewer while the source pushes back).")
    change_tracking: str = Field(default=_CLIENT_DEFAULTS.change_tracking,
                                 description="OData change tracking (delta links): auto (when the service applies "
                                             "odata.track-changes), on (required) or off (never asked for).")
    max_retry_after: float = Field(default=_CLIENT_DEFAULTS.max_retry_after,
                                   description="Longest Retry-After honoured before failing fast.")
    cache_dir: str | None = Field(default=None, description="Directory for the response cache; empty: off.")
    cache_ttl_seconds: float = Field(default=_CLIENT_DEFAULTS.cache_ttl_seconds, description="Response cache time-to-live.")
    demo_rows: int = Field(default=150_000, description="Rows of the bundled demo service (no base_url only).")
    demo_bad_rows: float = Field(default=0.001, description="Share of salted bad rows of the bundled demo service.")

    _embedded: Any = PrivateAttr(default=None)  # the bundled demo service while open
    _fetcher: PageFetcher | None = PrivateAttr(default=None)
    _owns_fetcher: bool = PrivateAttr(default=False)
    _open: bool = PrivateAttr(default=False)

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        self._open = True

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        self._open = False
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
            self._fetcher, self._owns_fetcher = PageFetcher(concurrency=self.concurrency).start(), True
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
            if not self._open:
                raise ConfigError(
                    "ODATA_BASE_URL", None,
                    "a service URL, or an open resource (a Dagster step or tick, or dg.build_resources) "
                    "that starts the bundled demo service",
                )
            from well_assets.demo_service import DemoServer, DemoServiceConfig

            # Started when first needed: a tick or a check that never talks to the source
            # starts nothing.
            self._embedded = DemoServer(DemoServiceConfig(rows=self.demo_rows, bad_rows=self.demo_bad_rows)).start()
        return self._embedded.base_url

    def client_config(self, run_id: str = "local", cache_namespace: str | None = None) -> ClientConfig:
        # The cache serves retries within one run group only (namespace = root run id):
        # a later import must see the source as it is now, not as it was.
        config = ClientConfig(
            base_url=self.service_url,
            cache_dir=self.run_cache_dir(cache_namespace) if cache_namespace else None,
            run_id=run_id,
            **{name: getattr(self, name) for name in _CLIENT_FIELDS if name != "change_tracking"},
            change_tracking=self.change_tracking_mode,
        )
        config.validate()
        return config

    @property
    def change_tracking_mode(self) -> str:
        """``change_tracking``, except with the bundled service started for this resource
        (no ODATA_BASE_URL): it starts anew for every command, run and tick, with a change
        history of its own, so a delta link could never outlive it. Run `well-assets
        demo-server` and point ODATA_BASE_URL at it to use change tracking with it."""
        return self.change_tracking if self.base_url else "off"

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
    """The DuckDB file that holds the production table, rejects, deletions and the page ledger."""

    path: str = Field(default=settings.DEFAULT_DATABASE, description="DuckDB file (WELLS_DATABASE).")
    lock_timeout: float = Field(default=120.0, description="Seconds to wait for another writer's file lock.")
    max_delete_fraction: float = Field(
        default=0.5, ge=0.0, le=1.0,
        description="A page sync that would delete more than this share of the page's stored rows fails "
                    "instead (ODATA_MAX_DELETE_FRACTION).")

    def store(self) -> DuckDBStore:
        return DuckDBStore(self.path, lock_timeout=self.lock_timeout)

    def page_map(self, source: str) -> PageMap:
        """The page map of ``source`` (empty before the first import)."""
        return self.store().page_map(source)


def _secret(name: str):
    """An EnvVar for a set secret (resolved at run time, never shown), else None."""
    return dg.EnvVar(name) if os.environ.get(name) else None


def resources_from_settings(s: settings.Settings) -> dict:
    """The code location's resources for the given settings (secrets from the environment)."""
    odata = ODataResource(
        base_url=s.base_url,
        **s.client_options(),
        **{field: _secret(variable) for field, variable in settings.SECRET_VARIABLES.items()},
        cache_dir=s.cache_directory,
        demo_rows=s.demo_rows,
        demo_bad_rows=s.demo_bad_rows,
    )
    return {
        "odata": odata,
        "wells_db": WellsDatabase(path=s.database, max_delete_fraction=s.max_delete_fraction),
        "wells_io_manager": WellsDuckDBIOManager(database=s.database),
    }
