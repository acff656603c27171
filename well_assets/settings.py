"""Settings from the environment, validated before anything is written.

Every entry point (CLI, Dagster definitions, sensors) reads settings through this module.
With ODATA_BASE_URL unset the OData resource starts the bundled demo service while it is
open (see resources.ODataResource).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from well_assets.errors import ConfigError

DEFAULT_ENTITY_SET = "WellProduction"
DEFAULT_PAGE_SIZE = 1000
MAX_PAGE_SIZE = 5000
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
            database=str(validate_database(env.get("WELLS_DATABASE", DEFAULT_DATABASE))),
        )
