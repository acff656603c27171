"""One politeness budget per OData host: how many requests may be in flight at once, and
how far apart they start.

One Throttle per (scheme, host, port), shared by every ODataClient and every fetching
thread in the process, because the server sees the sum of our traffic, not each
client's. Callers take a ticket before a request (``acquire``) and hand it back with the
outcome (``release``); slots are reserved under a lock and slept outside it, so
concurrent callers queue up fairly without holding the lock.

The budget adapts (AIMD) when ``adaptive``:

- Concurrency: the requests in flight are capped by ``limit``, at most ``max_concurrency``.
  A congestion signal (429, 503, or a latency well above its moving baseline) halves it;
  every ``INCREASE_AFTER`` successes raise it by one again.
- Spacing: a latency spike starts requests at least a baseline latency per request in
  flight apart (the rate the halved concurrency reaches anyway, so the halving is the
  reaction; a fixed first step of ``ADAPTIVE_FLOOR`` starved an import from a source
  answering in milliseconds whenever the client's own CPU load showed up as latency),
  a 503 at least ``ADAPTIVE_FLOOR`` apart.
- Rate: a 429 caps the request rate at a little less than the rate the server accepted
  just before (the requests of the last second it answered; the requests started in that
  second, refused ones included, overstate the server's limit by those in flight when it
  said no, and teach a cap it refuses again); every success raises that cap by
  ``RATE_STEP`` requests per second, so it creeps back towards the server's limit instead
  of bouncing off it, and ``RATE_FORGET`` seconds without a refusal lift it. Requests
  that were in flight when the refusal came and are then answered were accepted in that
  second too: each raises the learnt rate (up to the requests started in that second), so
  a burst of several in flight does not teach a rate of only the ones answered so far
  (at 8 in flight against 20 requests/s it learnt 11-12 requests/s about half the time). A 503 or a
  latency spike raises the spacing multiplicatively instead (an overloaded server, not a
  quota), and successes let it decay back to ``min_interval``.
- One episode, one cut: responses to requests sent before the last cut belong to the
  congestion already answered (several requests were in flight when the server said no)
  and do not cut again.

``Retry-After`` is honoured separately (``hold_off``): nobody in the process starts a
request before it has passed.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Callable

from .paging import origin

# The first slowdown from an interval of 0 needs a starting step.
ADAPTIVE_FLOOR = 0.1
MAX_INTERVAL = 30.0
BACKOFF_FACTOR_SLOW = 1.5
BACKOFF_FACTOR_429 = 2.0  # a 429 with no rate to learn from (fewer than 2 requests in the last second)
DECAY_FACTOR = 0.95
# Latency counts as "well above baseline" at 3x the moving average and 50 ms more.
SLOW_RATIO = 3.0
SLOW_MARGIN = 0.05
BASELINE_ALPHA = 0.1
BASELINE_MIN_SAMPLES = 5
# After a refusal the rate is capped at this share of the rate that was refused...
RATE_BACKOFF = 0.9
# ...and each success raises the cap by this many requests per second.
RATE_STEP = 0.01
RATE_WINDOW = 1.0  # seconds: the rate the server just refused is the starts in this window
RATE_FORGET = 30.0  # seconds without a refusal after which the rate cap is lifted
INCREASE_AFTER = 16  # successes per +1 of the concurrency limit
CONGESTION = (429, 503)  # statuses that cut the budget; 429 also teaches the rate


@dataclass
class _Refusal:
    """A 429 the rate was learnt from: when the refused request was sent, when the refusal
    came, and the requests started and accepted in the window before it."""

    sent_at: float
    learnt_at: float
    started: int
    accepted: int


@dataclass(frozen=True)
class Ticket:
    """One request's place in the budget: when it was sent and how long it waited."""

    sent_at: float
    waited: float


class Throttle:
    def __init__(self, min_interval: float = 0.0, adaptive: bool = True, max_concurrency: int = 1,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self._cond = threading.Condition()
        self._clock = clock
        self._sleep = sleep
        self.min_interval = float(min_interval)
        self.adaptive = adaptive
        self.interval = float(min_interval)  # spacing from latency slowdowns
        self.rate_cap: float | None = None  # requests per second, learned from refusals
        self.max_concurrency = max(1, int(max_concurrency))
        self.limit = self.max_concurrency  # requests in flight allowed now
        self.in_flight = 0
        self.peak_in_flight = 0
        self._next_slot = 0.0  # monotonic time before which no request may start
        self._starts: deque[float] = deque()
        self._accepted: deque[float] = deque()  # when the requests the server answered were sent
        self._last_cut = -math.inf
        self._refusal: _Refusal | None = None  # the last refusal the rate was learnt from
        self._good = 0
        self._baseline: float | None = None
        self._samples = 0
        self.slowdowns = 0  # how many times the budget was cut (observability)

    def configure(self, min_interval: float, adaptive: bool, max_concurrency: int) -> None:
        """A client joining a shared throttle: the stricter spacing wins (politeness first);
        the concurrency is the newest client's (one import's setting at a time)."""
        with self._cond:
            self.min_interval = max(self.min_interval, float(min_interval))
            self.interval = max(self.interval, self.min_interval)
            self.adaptive = self.adaptive or adaptive
            if int(max_concurrency) != self.max_concurrency:
                self.max_concurrency = self.limit = max(1, int(max_concurrency))
            self._cond.notify_all()

    @property
    def spacing(self) -> float:
        """Seconds between two request starts now."""
        cap = 1.0 / self.rate_cap if self.rate_cap else 0.0
        return max(self.interval, cap)

    def acquire(self) -> Ticket:
        """Wait for a place in flight and for this caller's slot."""
        began = self._clock()
        with self._cond:
            while self.in_flight >= self.limit:
                self._cond.wait()
            self.in_flight += 1
            self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
            now = self._clock()
            slot = max(now, self._next_slot)
            self._next_slot = slot + self.spacing
        if slot > now:
            self._sleep(slot - now)
        with self._cond:
            self._starts.append(slot)
            while self._starts and self._starts[0] <= slot - RATE_WINDOW:
                self._starts.popleft()
        return Ticket(sent_at=slot, waited=max(slot - began, 0.0))

    def release(self, ticket: Ticket, latency: float | None, status: int | None) -> None:
        """The request is over (status None: the connection failed); its outcome feeds back."""
        with self._cond:
            self.in_flight -= 1
            if self.adaptive:
                self._feedback(ticket, latency, status)
            self._cond.notify_all()

    def learn_rate(self, rate_cap: float) -> None:
        """Another process's throttle of this host (the page fetcher's) was refused and capped
        its rate at ``rate_cap``: this one caps at it too (the stricter cap wins), from now on
        as if refused itself. So a few requests of this process, such as a check's counts
        after the pages, start at the rate the server allows instead of finding it again."""
        with self._cond:
            if not self.adaptive:
                return
            self.rate_cap = min(self.rate_cap or math.inf, float(rate_cap))
            self._last_cut = max(self._last_cut, self._clock())

    def hold_off(self, seconds: float) -> None:
        """The server asked everyone to wait (Retry-After): no request from this process before then."""
        with self._cond:
            self._next_slot = max(self._next_slot, self._clock() + seconds)

    def _feedback(self, ticket: Ticket, latency: float | None, status: int | None) -> None:
        if status in CONGESTION:
            self._cut(ticket, refused=status == 429)
            return
        if status is not None:
            self._accepted.append(ticket.sent_at)
            while self._accepted and self._accepted[0] <= self._clock() - RATE_WINDOW:
                self._accepted.popleft()
            self._accepted_late(ticket)
        if latency is None or status is None or status >= 500:
            return  # failures are handled by retry backoff, not by the latency baseline
        slow = (
            self._baseline is not None
            and self._samples >= BASELINE_MIN_SAMPLES
            and latency > SLOW_RATIO * self._baseline
            and latency - self._baseline > SLOW_MARGIN
        )
        if slow:
            self._cut(ticket, refused=False, spacing=self._baseline)
            # Fold only a bounded part of a spike into the baseline, so one
            # outlier does not teach us that slow is normal.
            latency = min(latency, SLOW_RATIO * self._baseline)  # type: ignore[operator]
        else:
            self._recover()
        self._samples += 1
        self._baseline = latency if self._baseline is None else (
            (1 - BASELINE_ALPHA) * self._baseline + BASELINE_ALPHA * latency
        )

    def _cut(self, ticket: Ticket, *, refused: bool, spacing: float | None = None) -> None:
        """A congestion signal: ``refused`` (429), else an overloaded server (503) or, with
        ``spacing`` (the baseline latency), a latency spike."""
        if ticket.sent_at <= self._last_cut:
            return  # sent before the last cut: part of the episode already answered
        self._last_cut = self._clock()
        self.slowdowns += 1
        self._good = 0
        self.limit = max(1, self.limit // 2)
        if refused:
            started = len(self._starts)  # in the last RATE_WINDOW seconds, this one included
            accepted = sum(1 for sent in self._accepted if sent > ticket.sent_at - RATE_WINDOW)
            if started >= 2:
                # What the server took, when it took enough to tell; else what was sent.
                rate = (min(started, accepted) if accepted >= 2 else started) / RATE_WINDOW
                self.rate_cap = min(self.rate_cap or math.inf, rate) * RATE_BACKOFF
                self._refusal = _Refusal(ticket.sent_at, self._clock(), started, accepted) if accepted >= 2 else None
                return
            factor = BACKOFF_FACTOR_429
        else:
            factor = BACKOFF_FACTOR_SLOW
        step = ADAPTIVE_FLOOR if spacing is None else spacing / self.limit
        self.interval = min(MAX_INTERVAL, max(self.interval * factor, self.min_interval + step))

    def _accepted_late(self, ticket: Ticket) -> None:
        """A request sent in the window before the last refusal, before it was known, was
        accepted: the server took one more in that second than the rate was learnt from."""
        refusal = self._refusal
        if refusal is None or self.rate_cap is None or not (
                refusal.sent_at - RATE_WINDOW < ticket.sent_at < refusal.learnt_at):
            return
        refusal.accepted += 1
        rate = min(refusal.started, refusal.accepted) / RATE_WINDOW * RATE_BACKOFF
        self.rate_cap = max(self.rate_cap, rate)

    def _recover(self) -> None:
        excess = (self.interval - self.min_interval) * DECAY_FACTOR
        self.interval = self.min_interval + (excess if excess > 1e-3 else 0.0)
        if self.rate_cap is not None:
            self.rate_cap += RATE_STEP
            if self._clock() - self._last_cut > RATE_FORGET:
                self.rate_cap = None
        self._good += 1
        if self.limit < self.max_concurrency and self._good >= INCREASE_AFTER:
            self.limit += 1
            self._good = 0


_registry: dict[tuple[str, str, int | None], Throttle] = {}
_registry_lock = threading.Lock()


def throttle_for(base_url: str, min_interval: float, adaptive: bool, max_concurrency: int = 1) -> Throttle:
    """The process-wide Throttle of base_url's host (created on first use)."""
    key = origin(base_url)
    with _registry_lock:
        throttle = _registry.get(key)
        if throttle is None:
            throttle = _registry[key] = Throttle(min_interval, adaptive, max_concurrency)
            return throttle
    throttle.configure(min_interval, adaptive, max_concurrency)
    return throttle


def reset_throttles() -> None:
    """Forget all shared throttles (tests; a long-lived process whose settings changed)."""
    with _registry_lock:
        _registry.clear()
