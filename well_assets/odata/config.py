"""ClientConfig: every setting of the OData client, validated before any request.

The dataclass is frozen so one config can be shared by threads (the prefetching
page stream) without anyone changing it under the client. ``validate()`` raises
``ConfigError`` naming the setting and its allowed values; secrets are never
echoed back in the error (their value is rendered as ``'***'``).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from urllib.parse import urlsplit

from well_assets.errors import ConfigError

from .paging import KEY_TYPES, redact_url

MAX_PAGE_SIZE = 5000
MAX_CONCURRENCY = 16
CHANGE_TRACKING = ("auto", "on", "off")
ENTITY_SET_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")
_IDENT = r"[A-Za-z_][A-Za-z0-9_]*(?:/[A-Za-z_][A-Za-z0-9_]*)*"
ORDERBY_RE = re.compile(rf"{_IDENT}(?: (?:asc|desc))?(?:,{_IDENT}(?: (?:asc|desc))?)*")
SELECT_RE = re.compile(rf"(?:{_IDENT}|\*)(?:,(?:{_IDENT}|\*))*")
# run_id goes verbatim into the X-Request-ID header: keep it header- and log-safe.
RUN_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")
_SECRET = "'***'"


@dataclass(frozen=True)
class ClientConfig:
    base_url: str  # http(s) service root
    entity_set: str = "WellProduction"
    page_size: int = 1000  # 1..5000
    orderby: str = "WellCode,ProductionDate"
    # The entity's key in $orderby order, with its OData types: pages are read by key range.
    key: tuple[tuple[str, str], ...] = (("WellCode", "Edm.String"), ("ProductionDate", "Edm.Date"))
    filter: str | None = None
    select: str | None = None
    token: str | None = None
    username: str | None = None
    password: str | None = None
    connect_timeout: float = 5.0
    read_timeout: float = 60.0
    max_retries: int = 5
    backoff_base: float = 0.5
    backoff_cap: float = 30.0
    min_interval: float = 0.0  # seconds between requests, process-wide per host
    adaptive_throttle: bool = True
    concurrency: int = 4  # requests in flight to the host at most, 1..MAX_CONCURRENCY (adaptive below that)
    max_retry_after: float = 120.0  # a longer Retry-After fails fast
    cache_dir: str | None = None  # None: cache off
    cache_ttl_seconds: float = 3600.0
    run_id: str = "local"  # goes into X-Request-ID
    # OData change tracking (delta links): "auto" uses it when the service applies
    # odata.track-changes, "on" requires it, "off" never asks
    change_tracking: str = "auto"

    def __repr__(self) -> str:  # the dataclass repr would print the token/password
        shown = {
            k: ("***" if k in ("token", "password") and v is not None else v)
            for k, v in self.__dict__.items()
        }
        if isinstance(self.base_url, str):
            shown["base_url"] = redact_url(self.base_url)
        return "ClientConfig(" + ", ".join(f"{k}={v!r}" for k, v in shown.items()) + ")"

    @property
    def key_names(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self.key)

    @property
    def key_types(self) -> tuple[str, ...]:
        return tuple(edm_type for _, edm_type in self.key)

    def validate(self) -> None:
        """Raise ConfigError for the first invalid setting; send nothing."""
        self._validate_url()
        if not isinstance(self.entity_set, str) or not ENTITY_SET_RE.fullmatch(self.entity_set):
            raise ConfigError(
                "entity_set", self.entity_set, "an identifier matching [A-Za-z_][A-Za-z0-9_]{0,127}"
            )
        if (
            not isinstance(self.page_size, int)
            or isinstance(self.page_size, bool)
            or not 1 <= self.page_size <= MAX_PAGE_SIZE
        ):
            raise ConfigError("page_size", self.page_size, f"integers 1..{MAX_PAGE_SIZE}")
        if not isinstance(self.orderby, str) or not ORDERBY_RE.fullmatch(self.orderby):
            raise ConfigError(
                "orderby", self.orderby, "comma-separated property names, each optionally ' asc'/' desc'"
            )
        if (not isinstance(self.key, tuple) or not self.key
                or not all(isinstance(k, tuple) and len(k) == 2 and k[1] in KEY_TYPES for k in self.key)):
            raise ConfigError("key", self.key, f"(property, type) pairs with types from {', '.join(KEY_TYPES)}")
        if [term.split(" ")[0] for term in self.orderby.split(",")] != list(self.key_names) or " desc" in self.orderby:
            raise ConfigError("orderby", self.orderby,
                              f"the key in ascending order ({','.join(self.key_names)}): pages are ranges of the key")
        if self.filter is not None and (
            not isinstance(self.filter, str)
            or not self.filter.strip()
            or any(ord(c) < 32 for c in self.filter)
        ):
            raise ConfigError(
                "filter", self.filter, "None or a non-empty OData expression without control characters"
            )
        if self.select is not None and (
            not isinstance(self.select, str) or not SELECT_RE.fullmatch(self.select)
        ):
            raise ConfigError("select", self.select, "None or comma-separated property names")
        self._validate_auth()
        for name in ("connect_timeout", "read_timeout"):
            _positive(name, getattr(self, name))
        _int_range("max_retries", self.max_retries, 0, 100)
        _int_range("concurrency", self.concurrency, 1, MAX_CONCURRENCY)
        for name in ("backoff_base", "backoff_cap", "min_interval", "max_retry_after", "cache_ttl_seconds"):
            _non_negative(name, getattr(self, name))
        if self.backoff_cap < self.backoff_base:
            raise ConfigError("backoff_cap", self.backoff_cap, f"numbers >= backoff_base ({self.backoff_base})")
        if not isinstance(self.adaptive_throttle, bool):
            raise ConfigError("adaptive_throttle", self.adaptive_throttle, "True or False")
        if self.cache_dir is not None and (not isinstance(self.cache_dir, str) or not self.cache_dir):
            raise ConfigError("cache_dir", self.cache_dir, "None (cache off) or a directory path")
        if not isinstance(self.run_id, str) or not RUN_ID_RE.fullmatch(self.run_id):
            raise ConfigError("run_id", self.run_id, "1..128 characters from [A-Za-z0-9._:-]")
        if self.change_tracking not in CHANGE_TRACKING:
            raise ConfigError("change_tracking", self.change_tracking, "auto, on or off")

    def _validate_url(self) -> None:
        allowed = "an absolute http:// or https:// URL with a host and no credentials, query or fragment"
        if not isinstance(self.base_url, str):
            raise ConfigError("base_url", self.base_url, allowed)
        try:
            parts = urlsplit(self.base_url)
            parts.port  # noqa: B018 - raises ValueError on a malformed port
        except ValueError:
            raise ConfigError("base_url", self.base_url, allowed) from None
        if parts.username is not None or parts.password is not None:
            # Credentials in the URL would end up in logs; never echo them back.
            raise ConfigError("base_url", f"{parts.scheme}://***@{parts.hostname}", allowed)
        if (
            parts.scheme not in ("http", "https")
            or not parts.hostname
            or parts.query
            or parts.fragment
            or any(c.isspace() for c in self.base_url)
        ):
            raise ConfigError("base_url", self.base_url, allowed)

    def _validate_auth(self) -> None:
        for name in ("token", "username", "password"):
            v = getattr(self, name)
            if v is not None and (not isinstance(v, str) or not v or any(ord(c) < 32 for c in v)):
                shown = _SECRET if name != "username" else v
                raise ConfigError(name, shown, "None or a non-empty string without control characters")
        if self.token is not None and (self.username is not None or self.password is not None):
            raise ConfigError("token", _SECRET, "either token (bearer) or username+password (basic), not both")
        if (self.username is None) != (self.password is None):
            missing = "password" if self.password is None else "username"
            raise ConfigError(missing, None, "a non-empty string when the other of username/password is set")


def _is_number(v: object) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _positive(name: str, v: object) -> None:
    if not _is_number(v) or v <= 0:  # type: ignore[operator]
        raise ConfigError(name, v, "finite numbers > 0 (seconds)")


def _non_negative(name: str, v: object) -> None:
    if not _is_number(v) or v < 0:  # type: ignore[operator]
        raise ConfigError(name, v, "finite numbers >= 0")


def _int_range(name: str, v: object, lo: int, hi: int) -> None:
    if not isinstance(v, int) or isinstance(v, bool) or not lo <= v <= hi:
        raise ConfigError(name, v, f"integers {lo}..{hi}")
