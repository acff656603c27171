"""Configuration of the bundled demo OData service.

`DemoServiceConfig` is the single description of a demo service instance: how much
data to generate, which seed, page-size cap, optional bearer token, the fault rules
active at start and how it tracks changes (delta links). `validate()` raises `well_assets.errors.ConfigError` naming the field and
the allowed values, so the CLI and the Python API report bad settings the same way.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from well_assets.errors import ConfigError

LOG_LEVELS = ("critical", "error", "warning", "info", "debug", "trace")
DELTA_FORMATS = ("4.01", "4.0")


@dataclass
class DemoServiceConfig:
    rows: int = 150_000
    bad_rows: float = 0.0
    seed: int = 42
    max_page_size: int = 5000  # like Dataverse's default cap
    token: str | None = None
    faults: list[dict[str, Any]] = field(default_factory=list)
    host: str = "127.0.0.1"
    port: int = 0  # 0: pick a free port
    days_per_well: int = 500
    start_date: dt.date = dt.date(2023, 1, 1)
    log_level: str = "warning"
    access_log: bool = False
    # OData change tracking: False = the service ignores `Prefer: odata.track-changes`
    # (a service without support, to test clients against)
    track_changes: bool = True
    delta_format: str = "4.01"  # removed entries as 4.01 `@removed` or 4.0 `$deletedEntity`
    delta_retention: int | None = None  # versions of change history kept; None: all

    def validate(self) -> None:
        _int_range("rows", self.rows, 0, 50_000_000)
        if isinstance(self.bad_rows, bool) or not isinstance(self.bad_rows, (int, float)) or not (
            0.0 <= float(self.bad_rows) <= 0.5
        ):
            raise ConfigError("bad_rows", self.bad_rows, "a number from 0.0 to 0.5")
        _int_range("seed", self.seed, 0, 2**63 - 1)
        _int_range("max_page_size", self.max_page_size, 1, 1_000_000)
        _int_range("port", self.port, 0, 65535)
        _int_range("days_per_well", self.days_per_well, 1, 100_000)
        if self.token is not None and (not isinstance(self.token, str) or not self.token.strip()):
            raise ConfigError("token", "<redacted>", "a non-empty string or None")
        if not isinstance(self.host, str) or not self.host:
            raise ConfigError("host", self.host, "a host name or IP address")
        if not isinstance(self.start_date, dt.date):
            raise ConfigError("start_date", self.start_date, "a datetime.date")
        if self.log_level not in LOG_LEVELS:
            raise ConfigError("log_level", self.log_level, ", ".join(LOG_LEVELS))
        if not isinstance(self.track_changes, bool):
            raise ConfigError("track_changes", self.track_changes, "True or False")
        if self.delta_format not in DELTA_FORMATS:
            raise ConfigError("delta_format", self.delta_format, " or ".join(DELTA_FORMATS))
        if self.delta_retention is not None:
            _int_range("delta_retention", self.delta_retention, 1, 1_000_000_000)
        if not isinstance(self.faults, (list, tuple)):
            raise ConfigError("faults", self.faults, "a list of fault rule objects")
        # Imported here to keep config importable without the fault machinery.
        from .faults import FaultRuleError, parse_rules

        try:
            parse_rules(list(self.faults))
        except FaultRuleError as exc:
            raise ConfigError("faults", "<see message>", str(exc)) from None


def _int_range(name: str, value: Any, lo: int, hi: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not (lo <= value <= hi):
        raise ConfigError(name, value, f"an integer from {lo} to {hi}")
