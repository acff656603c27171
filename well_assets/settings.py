"""Settings from the environment, validated, and the one place that picks the source.

Every entry point (CLI, Dagster definitions, sensors) reads settings through this module,
so an environment-dependent choice (a real service or the bundled demo service) is made
in one spot. The demo service is imported lazily and only here: the OData client and the
asset code talk to whatever URL this returns, over HTTP.
"""

from __future__ import annotations

import os
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from well_assets.errors import ConfigError

DEFAULT_ENTITY_SET = "WellProduction"
DEFAULT_PAGE_SIZE = 1000
MAX_PAGE_SIZE = 5000
DEFAULT_DATABASE = "data/wells.duckdb"
ENTITY_SET_PATTERN = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")

_embedded_lock = threading.Lock()
_embedded_server = None  # the in-process demo service, started on first need


def validate_base_url(value: str, setting: str = "ODATA_BASE_URL") -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(setting, value, "an http:// or https:// URL, e.g. https://host/odata")
    return value.rstrip("/")


def validate_entity_set(value: str, setting: str = "ODATA_ENTITY_SET") -> str:
    if not ENTITY_SET_PATTERN.match(value or ""):
        raise ConfigError(setting, value, "an OData identifier: a letter or _, then letters, digits or _")
    return value


def validate_page_size(value: int | str, setting: str = "ODATA_PAGE_SIZE") -> int:
    try:
        size = int(value)
    except (TypeError, ValueError):
        raise ConfigError(setting, value, f"a whole number from 1 to {MAX_PAGE_SIZE}") from None
    if not 1 <= size <= MAX_PAGE_SIZE:
        raise ConfigError(setting, value, f"a whole number from 1 to {MAX_PAGE_SIZE}")
    return size


def validate_database(value: str, setting: str = "WELLS_DATABASE") -> str:
    if not value or value.strip() != value or value.endswith(("/", os.sep)):
        raise ConfigError(setting, value, "a file path such as data/wells.duckdb")
    if value == ":memory:":
        raise ConfigError(setting, value, "a file path (in-memory databases do not survive a run)")
    return value


@dataclass(frozen=True)
class Settings:
    """The DESIGN.md settings, read from the environment."""

    base_url: str | None
    entity_set: str
    page_size: int
    filter: str | None
    database: str

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> "Settings":
        env = os.environ if env is None else env
        base_url = env.get("ODATA_BASE_URL") or None
        return cls(
            base_url=validate_base_url(base_url) if base_url else None,
            entity_set=validate_entity_set(env.get("ODATA_ENTITY_SET", DEFAULT_ENTITY_SET)),
            page_size=validate_page_size(env.get("ODATA_PAGE_SIZE", DEFAULT_PAGE_SIZE)),
            filter=env.get("ODATA_FILTER") or None,
            database=validate_database(env.get("WELLS_DATABASE", DEFAULT_DATABASE)),
        )


def resolve_base_url(base_url: str | None) -> str:
    """The service root to use: the given URL, or the embedded demo service's.

    The embedded service is started once per process on a free loopback port with the
    default generated data, so every process (CLI, code server, run worker) sees the same
    deterministic source without anything started by hand.
    """
    if base_url:
        return validate_base_url(base_url)
    global _embedded_server
    with _embedded_lock:
        if _embedded_server is None:
            from well_assets.demo_service import DemoServer, DemoServiceConfig

            # A few salted bad rows by default so the demo shows quarantine at work.
            rows = int(os.environ.get("WELL_ASSETS_DEMO_ROWS", "150000"))
            bad_rows = float(os.environ.get("WELL_ASSETS_DEMO_BAD_ROWS", "0.001"))
            server = DemoServer(DemoServiceConfig(rows=rows, bad_rows=bad_rows))
            server.start()
            _embedded_server = server
        return _embedded_server.base_url


def database_path(database: str) -> Path:
    path = Path(validate_database(database))
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def is_embedded(base_url: str) -> bool:
    """True when the URL is this process's embedded demo service."""
    server = _embedded_server
    return server is not None and base_url.rstrip("/") == server.base_url.rstrip("/")
