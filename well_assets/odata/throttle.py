"""Process-wide politeness toward an OData host: minimum spacing plus adaptive slowdown.

One Throttle per (scheme, host, port), shared by every ODataClient in the
process (several clients, a prefetch thread), because the server sees the sum of
our traffic, not each client's. Slots are reserved under a lock and slept
outside it, so concurrent callers queue up fairly without holding the lock.

Adaptive rule (AIMD-like): on 429, or when a request's latency rises well above
its moving baseline, the interval grows multiplicatively; every success lets it
decay slowly back toward min_interval.
"""

from __future__ import annotations

import threading
import time
from typing import Callable

from .paging import origin

# The first slowdown from an interval of 0 needs a starting step.
ADAPTIVE_FLOOR = 0.1
MAX_INTERVAL = 30.0
BACKOFF_FACTOR_429 = 2.0
BACKOFF_FACTOR_SLOW = 1.5
DECAY_FACTOR = 0.95
# Latency counts as "well above baseline" at 3x the moving average and 50 ms more.
SLOW_RATIO = 3.0
SLOW_MARGIN = 0.05
BASELINE_ALPHA = 0.1
BASELINE_MIN_SAMPLES = 5


class Throttle:
    def __init__(self, min_interval: float = 0.0, adaptive: bool = True,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self._lock = threading.Lock()
        self._clock = clock
        self._sleep = sleep
        self.min_interval = float(min_interval)
        self.adaptive = adaptive
        self.interval = float(min_interval)
        self._next_slot = 0.0  # monotonic time before which no request may start
        self._baseline: float | None = None
        self._samples = 0
        self.slowdowns = 0  # how many times the interval was raised (observability)

    def configure(self, min_interval: float, adaptive: bool) -> None:
        """A client joining a shared throttle: the stricter spacing wins (politeness first)."""
        with self._lock:
            self.min_interval = max(self.min_interval, float(min_interval))
            self.interval = max(self.interval, self.min_interval)
            self.adaptive = self.adaptive or adaptive

    def acquire(self) -> float:
        """Wait for this caller's slot; returns the seconds waited."""
        with self._lock:
            now = self._clock()
            slot = max(now, self._next_slot)
            self._next_slot = slot + self.interval
        wait = slot - now
        if wait > 0:
            self._sleep(wait)
        return max(wait, 0.0)

    def hold_off(self, seconds: float) -> None:
        """The server asked everyone to wait (Retry-After): no request from this process before then."""
        with self._lock:
            self._next_slot = max(self._next_slot, self._clock() + seconds)

    def record(self, latency: float | None, status: int | None) -> None:
        """Feed back one response (status None: the connection failed)."""
        if not self.adaptive:
            return
        with self._lock:
            if status == 429:
                self._raise(BACKOFF_FACTOR_429)
                return
            if latency is None or status is None or status >= 500:
                return  # failures are handled by retry backoff, not by the latency baseline
            slow = (
                self._baseline is not None
                and self._samples >= BASELINE_MIN_SAMPLES
                and latency > SLOW_RATIO * self._baseline
                and latency - self._baseline > SLOW_MARGIN
            )
            if slow:
                self._raise(BACKOFF_FACTOR_SLOW)
                # Fold only a bounded part of a spike into the baseline, so one
                # outlier does not teach us that slow is normal.
                latency = min(latency, SLOW_RATIO * self._baseline)  # type: ignore[operator]
            else:
                self._decay()
            self._samples += 1
            self._baseline = latency if self._baseline is None else (
                (1 - BASELINE_ALPHA) * self._baseline + BASELINE_ALPHA * latency
            )

    def _raise(self, factor: float) -> None:
        self.interval = min(MAX_INTERVAL, max(self.interval * factor, self.min_interval + ADAPTIVE_FLOOR))
        self.slowdowns += 1

    def _decay(self) -> None:
        excess = (self.interval - self.min_interval) * DECAY_FACTOR
        self.interval = self.min_interval + (excess if excess > 1e-3 else 0.0)


_registry: dict[tuple[str, str, int | None], Throttle] = {}
_registry_lock = threading.Lock()


def throttle_for(base_url: str, min_interval: float, adaptive: bool) -> Throttle:
    """The process-wide Throttle of base_url's host (created on first use)."""
    key = origin(base_url)
    with _registry_lock:
        throttle = _registry.get(key)
        if throttle is None:
            throttle = _registry[key] = Throttle(min_interval, adaptive)
            return throttle
    throttle.configure(min_interval, adaptive)
    return throttle


def reset_throttles() -> None:
    """Forget all shared throttles (tests; a long-lived process whose settings changed)."""
    with _registry_lock:
        _registry.clear()
