"""Settings from the environment, validated before anything is written.

Every entry point (the code location, the CLI) reads its settings through ``Settings``,
once: the code location when Dagster loads it (``defs.definitions``), the CLI when it
starts. A bad value is a ConfigError naming the variable (or the flag) and the allowed
values. With ODATA_BASE_URL unset the OData resource starts the bundled demo service while
it is open (``defs.resources.ODataResource``).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from well_assets.errors import ConfigError

DEFAULT_ENTITY_SET = "WellProduction"
DEFAULT_PAGE_SIZE = 1000
MAX_PAGE_SIZE = 5000
MAX_CONCURRENCY = 16
CHANGE_TRACKING = ("auto", "on", "off")
DEFAULT_DATABASE = "data/wells.duckdb"
ENTITY_SET_PATTERN = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")


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


def validate_concurrency(value: int | str, setting: str = "ODATA_CONCURRENCY") -> int:
    """Page fetches in flight at most: a whole number from 1 to MAX_CONCURRENCY."""
    allowed = f"a whole number from 1 to {MAX_CONCURRENCY}"
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise ConfigError(setting, value, allowed) from None
    if not 1 <= number <= MAX_CONCURRENCY or str(value).strip() not in (str(number), f"+{number}"):
        raise ConfigError(setting, value, allowed)
    return number


def validate_change_tracking(value: str, setting: str = "ODATA_CHANGE_TRACKING") -> str:
    """OData change tracking (delta links): auto (when the service applies it), on (required)
    or off (never asked for); case and surrounding blanks do not matter."""
    mode = value.strip().lower() if isinstance(value, str) else value
    if mode not in CHANGE_TRACKING:
        raise ConfigError(setting, value, "auto, on or off")
    return mode


def validate_database(value: Any, setting: str = "WELLS_DATABASE") -> Path:
    """The DuckDB file path, or a ConfigError naming ``setting``: a file path (not a
    directory, not ``:memory:``) in a directory that exists or can be created. Checked
    without writing anything."""
    allowed = "a DuckDB file path such as data/wells.duckdb (not a directory, not :memory:)"
    if not isinstance(value, (str, os.PathLike)):
        raise ConfigError(setting, value, allowed)
    text = os.fspath(value)
    if (not isinstance(text, str) or not text.strip() or text.strip() != text or "\x00" in text
            or text == ":memory:" or text.endswith(("/", os.sep))):
        raise ConfigError(setting, value, allowed)
    path = Path(text).expanduser()
    if path.is_dir():
        raise ConfigError(setting, value, allowed)
    ancestor = path.parent
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir() or not os.access(ancestor, os.W_OK | os.X_OK):
        raise ConfigError(setting, value, f"a file path in a directory that exists or can be created "
                                          f"({ancestor} is not a writable directory)")
    return path


def _number(env: Mapping[str, str], name: str, default: float, *, whole: bool = False, least: float = 0,
            most: float | None = None) -> float:
    """A number setting from ``env`` (default when unset or empty), or a ConfigError naming it."""
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    allowed = (f"a whole number from {least:g}" if whole else f"a number >= {least:g}") + (
        f" to {most:g}" if most is not None and whole else (f" and <= {most:g}" if most is not None else ""))
    try:
        value = int(raw) if whole else float(raw)
    except ValueError:
        raise ConfigError(name, raw, allowed) from None
    if value < least or (most is not None and value > most) or value != value:
        raise ConfigError(name, raw, allowed)
    return value


CRON_FIELD = re.compile(r"^[0-9A-Za-z*/,\-?LW#]+$")


def validate_cron(value: str, setting: str) -> str:
    """Five cron fields (minute hour day month weekday); Dagster checks the values when it
    builds the schedule (``defs.schedules``), naming this setting if it refuses them."""
    fields = value.split()
    if len(fields) != 5 or not all(CRON_FIELD.match(f) for f in fields):
        raise ConfigError(setting, value, "a cron expression with 5 fields, e.g. '0 2 * * *' (02:00 every day)")
    return value


def validate_timezone(value: str, setting: str) -> str:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigError(setting, value, "an IANA time zone name, e.g. UTC, Europe/Oslo, America/Chicago") from None
    return value


# The OData client's secrets: ClientConfig's field -> the variable it is read from, when the
# client is made (never stored in Settings, so it cannot end up in a log or a repr).
SECRET_VARIABLES = {"token": "ODATA_TOKEN", "username": "ODATA_USERNAME", "password": "ODATA_PASSWORD"}
# Settings that are the OData client's own, by the same name (see Settings.client_options).
CLIENT_OPTIONS = ("entity_set", "page_size", "filter", "min_interval", "concurrency", "change_tracking",
                  "max_retries", "backoff_base", "backoff_cap", "max_retry_after", "read_timeout")


@dataclass(frozen=True)
class Settings:
    """Every setting of the README's table, read from the environment and validated in one
    place: the code location reads them when Dagster loads it, the CLI when it starts.
    Only the first five are needed to build one; the others have their defaults."""

    base_url: str | None
    entity_set: str = DEFAULT_ENTITY_SET
    page_size: int = DEFAULT_PAGE_SIZE
    filter: str | None = None
    database: str = DEFAULT_DATABASE
    # the OData client
    min_interval: float = 0.0
    concurrency: int = 4  # page fetches in flight, sharing one politeness budget
    change_tracking: str = "auto"  # delta links: auto | on | off
    max_retries: int = 5
    backoff_base: float = 0.5
    backoff_cap: float = 30.0
    max_retry_after: float = 120.0
    read_timeout: float = 60.0
    cache_dir: str | None = "<database dir>/odata-cache"  # resolved by cache_directory
    # the bundled demo service (no base_url)
    demo_rows: int = 150_000
    demo_bad_rows: float = 0.001
    # page syncs
    max_delete_fraction: float = 0.5
    # the sensor and the schedule
    sensor_interval: int = 300
    refresh_cron: str = "0 2 * * *"
    refresh_timezone: str = "UTC"

    def client_options(self) -> dict[str, Any]:
        """The OData client's settings found here, by ClientConfig's names (the URL, the
        secrets (SECRET_VARIABLES) and the cache directory aside: their users resolve them)."""
        return {name: getattr(self, name) for name in CLIENT_OPTIONS}

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> "Settings":
        env = os.environ if env is None else env
        base_url = env.get("ODATA_BASE_URL") or None
        return cls(
            base_url=validate_base_url(base_url) if base_url else None,
            entity_set=validate_entity_set(env.get("ODATA_ENTITY_SET", DEFAULT_ENTITY_SET)),
            page_size=validate_page_size(env.get("ODATA_PAGE_SIZE", DEFAULT_PAGE_SIZE)),
            filter=env.get("ODATA_FILTER") or None,
            database=str(validate_database(env.get("WELLS_DATABASE", DEFAULT_DATABASE))),
            min_interval=_number(env, "ODATA_MIN_INTERVAL", 0.0),
            concurrency=validate_concurrency(env.get("ODATA_CONCURRENCY", cls.concurrency)),
            change_tracking=validate_change_tracking(env.get("ODATA_CHANGE_TRACKING") or cls.change_tracking),
            max_retries=int(_number(env, "ODATA_MAX_RETRIES", 5, whole=True, most=100)),
            backoff_base=_number(env, "ODATA_BACKOFF_BASE", 0.5),
            backoff_cap=_number(env, "ODATA_BACKOFF_CAP", 30.0),
            max_retry_after=_number(env, "ODATA_MAX_RETRY_AFTER", 120.0),
            read_timeout=_number(env, "ODATA_TIMEOUT", 60.0, least=0.001),
            cache_dir=env.get("ODATA_CACHE_DIR", cls.cache_dir),
            demo_rows=int(_number(env, "WELL_ASSETS_DEMO_ROWS", 150_000, whole=True, most=50_000_000)),
            demo_bad_rows=_number(env, "WELL_ASSETS_DEMO_BAD_ROWS", 0.001, most=0.5),
            max_delete_fraction=_number(env, "ODATA_MAX_DELETE_FRACTION", 0.5, most=1.0),
            sensor_interval=int(_number(env, "WELL_ASSETS_SENSOR_INTERVAL", 300, whole=True, least=10, most=86400)),
            refresh_cron=validate_cron(env.get("WELL_ASSETS_REFRESH_CRON", cls.refresh_cron), "WELL_ASSETS_REFRESH_CRON"),
            refresh_timezone=validate_timezone(env.get("WELL_ASSETS_REFRESH_TIMEZONE", cls.refresh_timezone),
                                               "WELL_ASSETS_REFRESH_TIMEZONE"),
        )

    def with_overrides(self, **changes) -> "Settings":
        """These settings with some replaced (the CLI's flags)."""
        return replace(self, **changes)

    @property
    def cache_directory(self) -> str | None:
        """The response cache directory: ODATA_CACHE_DIR, by default beside the database;
        set empty to turn the cache off."""
        if self.cache_dir == Settings.cache_dir:
            return str(Path(self.database).parent / "odata-cache")
        return self.cache_dir or None
