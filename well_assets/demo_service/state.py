"""`ServiceState`: everything a running demo service knows, shared by routes and tests.

One object per server (`DemoServer.state`): the dataset (with mutation and its change
log), the fault rules, the request statistics and the effective settings. All parts are thread-safe, because
uvicorn serves from its own thread while tests mutate data from theirs.
"""

from __future__ import annotations

import threading
import time
from collections import Counter, deque
from typing import Any

from .config import DemoServiceConfig
from .data import Dataset
from .faults import FaultSet


class Stats:
    def __init__(self, keep: int = 1000) -> None:
        self._lock = threading.Lock()
        self._keep = keep
        self.in_flight = 0
        self.reset()

    def reset(self) -> None:
        with self._lock:
            self.requests = 0
            self.by_status: Counter[str] = Counter()
            self.by_endpoint: Counter[str] = Counter()
            self.recent: deque[dict[str, Any]] = deque(maxlen=self._keep)
            self.delta: Counter[str] = Counter()  # links_issued, delta_requests, gone
            self.started = time.time()
            self.peak_in_flight = self.in_flight

    def begin(self) -> None:
        """An OData request arrived (it is in flight until ``end``)."""
        with self._lock:
            self.in_flight += 1
            self.peak_in_flight = max(self.peak_in_flight, self.in_flight)

    def end(self) -> None:
        with self._lock:
            self.in_flight -= 1

    def record(self, entry: dict[str, Any]) -> None:
        with self._lock:
            self.requests += 1
            self.by_status[str(entry["status"])] += 1
            self.by_endpoint[entry.get("endpoint") or "other"] += 1
            self.recent.append(entry)

    def count_delta(self, what: str) -> None:
        with self._lock:
            self.delta[what] += 1

    def delta_counts(self) -> dict[str, int]:
        with self._lock:
            return {name: self.delta[name] for name in ("links_issued", "delta_requests", "gone")}

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {
                "requests": self.requests,
                "by_status": dict(self.by_status),
                "by_endpoint": dict(self.by_endpoint),
                "since": self.started,
                "peak_in_flight": self.peak_in_flight,
            }

    def recent_requests(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self.recent)


class ServiceState:
    """Facade over dataset, faults and stats (tests may call these directly)."""

    def __init__(self, config: DemoServiceConfig) -> None:
        config.validate()
        self.config = config
        self.dataset = Dataset(
            rows=config.rows,
            seed=config.seed,
            bad_rows=float(config.bad_rows),
            days_per_well=config.days_per_well,
            start_date=config.start_date,
            delta_retention=config.delta_retention,
        )
        self.faults = FaultSet(list(config.faults))
        self.stats = Stats()
        self.max_page_size = config.max_page_size
        self.token = config.token
        self.track_changes = config.track_changes
        self.delta_format = config.delta_format

    # data
    @property
    def row_count(self) -> int:
        return len(self.dataset)

    def records(self) -> list[dict]:
        """Every record as served in natural order (raw bad values included)."""
        return self.dataset.all_records()

    def bad_rows(self) -> list[dict]:
        return self.dataset.bad_rows()

    def upsert(self, records: list[dict]) -> dict[str, int]:
        return self.dataset.upsert(records)

    def delete(self, keys: list[dict]) -> dict[str, int]:
        return self.dataset.delete(keys)

    def expire_deltas(self) -> dict[str, Any]:
        """Every delta link and delta nextLink issued so far answers 410 Gone from now on."""
        self.dataset.expire_changes()
        return {"expired": True, "version": self.dataset.version}

    def reset(self) -> None:
        """Back to the generated data (a new change history), no fault rules, fresh statistics."""
        self.dataset.reset()
        self.faults.replace([])
        self.stats.reset()

    # faults
    def set_faults(self, rules: list[dict]) -> None:
        self.faults.replace(rules)

    def get_faults(self) -> list[dict]:
        return self.faults.specs()

    def stats_snapshot(self) -> dict[str, Any]:
        out = self.stats.snapshot()
        out.update(
            rows=self.row_count,
            data_version=self.dataset.version,
            faults=self.faults.fired(),
            max_page_size=self.max_page_size,
            change_tracking={
                "enabled": self.track_changes,
                "delta_format": self.delta_format,
                **self.dataset.changes.snapshot(),
                **self.stats.delta_counts(),
            },
        )
        return out
