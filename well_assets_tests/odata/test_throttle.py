"""Throttle: spacing, adaptive slowdown/decay, thread safety, process-wide sharing."""

from __future__ import annotations

import threading
import time

from well_assets.odata import ClientConfig, ODataClient
from well_assets.odata.throttle import ADAPTIVE_FLOOR, Throttle, reset_throttles, throttle_for


class FakeClock:
    def __init__(self) -> None:
        self.t = 1000.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.t

    def sleep(self, s: float) -> None:
        self.slept.append(s)
        self.t += s


def test_min_interval_spaces_requests():
    clock = FakeClock()
    th = Throttle(0.2, adaptive=False, clock=clock, sleep=clock.sleep)
    waits = [th.acquire() for _ in range(4)]
    assert waits[0] == 0 and all(abs(w - 0.2) < 1e-9 for w in waits[1:])
    clock.t += 5  # idle time is not "saved up" beyond one slot
    assert th.acquire() == 0


def test_429_slows_down_multiplicatively_and_successes_decay_slowly():
    clock = FakeClock()
    th = Throttle(0.0, adaptive=True, clock=clock, sleep=clock.sleep)
    th.record(0.01, 429)
    first = th.interval
    assert first >= ADAPTIVE_FLOOR
    th.record(0.01, 429)
    assert th.interval >= 2 * first
    peak = th.interval
    th.record(0.01, 200)
    assert 0.8 * peak < th.interval < peak  # slow decay, not a reset
    for _ in range(500):
        th.record(0.01, 200)
    assert th.interval == 0.0


def test_latency_spike_above_baseline_slows_down():
    clock = FakeClock()
    th = Throttle(0.1, adaptive=True, clock=clock, sleep=clock.sleep)
    for _ in range(10):
        th.record(0.01, 200)
    assert th.interval == 0.1
    th.record(0.012, 200)  # noise: no reaction
    assert th.interval == 0.1
    th.record(0.5, 200)
    assert th.interval > 0.1 and th.slowdowns == 1


def test_non_adaptive_ignores_feedback():
    th = Throttle(0.0, adaptive=False)
    th.record(0.01, 429)
    assert th.interval == 0.0


def test_hold_off_delays_everyone():
    clock = FakeClock()
    th = Throttle(0.0, adaptive=False, clock=clock, sleep=clock.sleep)
    th.hold_off(3.0)
    assert th.acquire() == 3.0


def test_thread_safe_slots_are_distinct_and_spaced():
    th = Throttle(0.02, adaptive=False)
    starts: list[float] = []
    lock = threading.Lock()

    def worker():
        for _ in range(5):
            th.acquire()
            with lock:
                starts.append(time.monotonic())

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    starts.sort()
    gaps = [b - a for a, b in zip(starts, starts[1:])]
    assert len(starts) == 20
    # 20 slots 20 ms apart: total >= 19 * 20 ms (small slack for the timer).
    assert starts[-1] - starts[0] >= 19 * 0.02 * 0.95
    assert sum(g < 0.01 for g in gaps) <= 2


def test_throttle_is_shared_by_clients_of_the_same_host():
    reset_throttles()
    a = ODataClient(ClientConfig(base_url="http://127.0.0.1:18080/odata", min_interval=0.1))
    b = ODataClient(ClientConfig(base_url="http://127.0.0.1:18080/other", min_interval=0.0))
    c = ODataClient(ClientConfig(base_url="http://127.0.0.1:18081/odata"))
    try:
        assert a.throttle is b.throttle is throttle_for("http://127.0.0.1:18080/x", 0, True)
        assert a.throttle is not c.throttle
        assert b.throttle.min_interval == 0.1  # the stricter setting wins
    finally:
        for cl in (a, b, c):
            cl.close()
        reset_throttles()
