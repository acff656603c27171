"""Throttle: spacing, concurrency, adaptive slowdown/decay (AIMD), thread safety, process-wide sharing."""

from __future__ import annotations

import threading
import time

from well_assets.odata import ClientConfig, ODataClient
import pytest

from well_assets.odata.throttle import (
    ADAPTIVE_FLOOR,
    INCREASE_AFTER,
    RATE_BACKOFF,
    RATE_FORGET,
    Throttle,
    reset_throttles,
    throttle_for,
)


class FakeClock:
    def __init__(self) -> None:
        self.t = 1000.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.t

    def sleep(self, s: float) -> None:
        self.slept.append(s)
        self.t += s


def request(th: Throttle, latency: float = 0.01, status: int | None = 200):
    """One request through the throttle: its ticket, released with the outcome."""
    ticket = th.acquire()
    th.release(ticket, latency, status)
    return ticket


def test_min_interval_spaces_requests():
    clock = FakeClock()
    th = Throttle(0.2, adaptive=False, clock=clock, sleep=clock.sleep)
    waits = [request(th).waited for _ in range(4)]
    assert waits[0] == 0 and all(abs(w - 0.2) < 1e-9 for w in waits[1:])
    clock.t += 5  # idle time is not "saved up" beyond one slot
    assert request(th).waited == 0


def test_a_lone_429_slows_down_multiplicatively_and_successes_decay_slowly():
    clock = FakeClock()
    th = Throttle(0.0, adaptive=True, clock=clock, sleep=clock.sleep)
    request(th, status=429)  # one request in the last second: no rate to learn, the spacing grows
    first = th.interval
    assert first >= ADAPTIVE_FLOOR
    clock.t += 5
    request(th, status=429)
    assert th.interval >= 2 * first
    peak = th.interval
    request(th)
    assert 0.8 * peak < th.interval < peak  # slow decay, not a reset
    for _ in range(500):
        request(th)
    assert th.interval == 0.0


def test_a_429_caps_the_rate_below_the_accepted_rate_which_creeps_back_then_lifts():
    clock = FakeClock()
    th = Throttle(0.0, adaptive=True, max_concurrency=4, clock=clock, sleep=clock.sleep)
    for _ in range(20):  # 20 requests within one second (40 ms apart)...
        request(th)
        clock.t += 0.04
    request(th, status=429)  # ...and the 21st refused
    assert th.rate_cap == pytest.approx(20 * RATE_BACKOFF)
    assert th.spacing == pytest.approx(1 / th.rate_cap)
    capped = th.rate_cap
    for _ in range(10):
        request(th)
    assert capped < th.rate_cap < capped + 0.5  # creeps back: no jump to the refused rate
    clock.t += RATE_FORGET + 1
    request(th)
    assert th.rate_cap is None and th.spacing == 0.0


def test_the_rate_learnt_from_a_refusal_is_the_rate_the_server_accepted_not_the_rate_sent():
    clock = FakeClock()
    th = Throttle(0.0, adaptive=True, max_concurrency=8, clock=clock, sleep=clock.sleep)
    for _ in range(20):  # 20 requests answered within 0.6 s...
        request(th)
        clock.t += 0.03
    burst = [th.acquire() for _ in range(6)]  # ...then six in flight together,
    for ticket in burst:
        th.release(ticket, 0.01, 429)  # all refused: one episode, one cut
    assert th.rate_cap == pytest.approx(20 * RATE_BACKOFF)  # not the 26 sent in that second
    assert th.limit == 4


def test_requests_in_flight_at_a_refusal_and_accepted_after_it_raise_the_rate_learnt():
    """At several in flight, the refusal comes back before requests sent ahead of it: the
    server took those too, and the rate learnt counts them as they are answered."""
    clock = FakeClock()
    th = Throttle(0.0, adaptive=True, max_concurrency=16, clock=clock, sleep=clock.sleep)
    for _ in range(12):  # 12 answered within 0.24 s...
        request(th)
        clock.t += 0.02
    flying = [th.acquire() for _ in range(8)]  # ...8 more sent, not answered yet...
    clock.t += 0.01
    th.release(th.acquire(), 0.01, 429)  # ...and the 21st refused first
    assert th.rate_cap == pytest.approx(12 * RATE_BACKOFF)
    for ticket in flying:
        th.release(ticket, 0.01, 200)
    assert th.rate_cap == pytest.approx(20 * RATE_BACKOFF, abs=0.1)  # the server took 20 in that second
    later = th.acquire()  # a request sent after the refusal was known teaches nothing more
    th.release(later, 0.01, 200)
    assert th.rate_cap == pytest.approx(20 * RATE_BACKOFF, abs=0.1)


def test_a_rate_learnt_by_another_process_caps_this_one_until_forgotten():
    clock = FakeClock()
    th = Throttle(0.0, adaptive=True, max_concurrency=8, clock=clock, sleep=clock.sleep)
    th.learn_rate(18.0)  # the page fetcher was refused and capped its rate
    waits = [request(th).waited for _ in range(3)]
    assert waits[0] == 0 and all(w == pytest.approx(1 / 18.0, rel=0.01) for w in waits[1:])  # successes creep it up
    th.learn_rate(30.0)  # a laxer cap does not loosen it
    assert th.rate_cap < 18.1
    clock.t += RATE_FORGET + 1
    request(th)
    assert th.rate_cap is None


def test_congestion_halves_the_concurrency_once_per_episode_and_successes_raise_it_one_by_one():
    clock = FakeClock()
    th = Throttle(0.0, adaptive=True, max_concurrency=8, clock=clock, sleep=clock.sleep)
    tickets = [th.acquire() for _ in range(8)]
    assert th.in_flight == 8 == th.peak_in_flight
    th.release(tickets[0], 0.01, 429)
    assert th.limit == 4
    for ticket in tickets[1:]:  # the others were in flight when the server said no: one episode
        th.release(ticket, 0.01, 429)
    assert th.limit == 4 and th.slowdowns == 1
    clock.t += 2
    request(th, status=503)  # a new episode: 503 cuts too
    assert th.limit == 2 and th.slowdowns == 2
    for _ in range(INCREASE_AFTER):
        request(th)
    assert th.limit == 3
    for _ in range(100 * INCREASE_AFTER):
        request(th)
    assert th.limit == 8  # never above the setting


def test_no_more_requests_in_flight_than_the_limit():
    th = Throttle(0.0, adaptive=False, max_concurrency=3)
    peak, gate = [], threading.Event()

    def worker():
        ticket = th.acquire()
        peak.append(th.in_flight)
        gate.wait(5)
        th.release(ticket, 0.01, 200)

    threads = [threading.Thread(target=worker) for _ in range(7)]
    for t in threads:
        t.start()
    waited_for = time.monotonic() + 5
    while th.in_flight < 3 and time.monotonic() < waited_for:
        time.sleep(0.01)
    assert th.in_flight == 3  # four threads wait for a place
    gate.set()
    for t in threads:
        t.join()
    assert max(peak) == 3 == th.peak_in_flight and th.in_flight == 0


def test_latency_spike_above_baseline_slows_down():
    clock = FakeClock()
    th = Throttle(0.1, adaptive=True, max_concurrency=4, clock=clock, sleep=clock.sleep)
    for _ in range(10):
        request(th, 0.01)
    assert th.interval == 0.1
    request(th, 0.012)  # noise: no reaction
    assert th.interval == 0.1
    request(th, 0.5)
    assert th.interval > 0.1 and th.slowdowns == 1 and th.limit == 2


@pytest.mark.parametrize("baseline", [0.01, 2.0], ids=["fast source", "slow source"])
def test_a_latency_spike_halves_the_concurrency_and_spaces_requests_by_the_baseline(baseline):
    """The spacing a spike sets lets the halved concurrency run at the baseline's pace: a
    source answering in milliseconds is not held to a fixed 0.1 s between requests."""
    clock = FakeClock()
    th = Throttle(0.0, adaptive=True, max_concurrency=4, clock=clock, sleep=clock.sleep)
    for _ in range(10):
        request(th, baseline)
    request(th, 10 * baseline + 1.0)
    assert th.slowdowns == 1 and th.limit == 2
    assert th.interval == pytest.approx(baseline / 2)


def test_a_503_spaces_requests_by_at_least_the_adaptive_floor():
    clock = FakeClock()
    th = Throttle(0.0, adaptive=True, max_concurrency=4, clock=clock, sleep=clock.sleep)
    for _ in range(10):
        request(th, 0.01)
    request(th, 0.01, status=503)
    assert th.limit == 2 and th.interval == ADAPTIVE_FLOOR


def test_non_adaptive_ignores_feedback():
    th = Throttle(0.0, adaptive=False, max_concurrency=4)
    request(th, status=429)
    assert th.interval == 0.0 and th.rate_cap is None and th.limit == 4


def test_hold_off_delays_everyone():
    clock = FakeClock()
    th = Throttle(0.0, adaptive=False, clock=clock, sleep=clock.sleep)
    th.hold_off(3.0)
    assert request(th).waited == 3.0


def test_thread_safe_slots_are_distinct_and_spaced():
    th = Throttle(0.02, adaptive=False)
    starts: list[float] = []
    lock = threading.Lock()

    def worker():
        for _ in range(5):
            request(th)
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
    b = ODataClient(ClientConfig(base_url="http://127.0.0.1:18080/other", min_interval=0.0, concurrency=2))
    c = ODataClient(ClientConfig(base_url="http://127.0.0.1:18081/odata"))
    try:
        assert a.throttle is b.throttle is throttle_for("http://127.0.0.1:18080/x", 0, True, 2)
        assert a.throttle is not c.throttle
        assert b.throttle.min_interval == 0.1  # the stricter setting wins
        assert b.throttle.max_concurrency == 2  # one import's setting at a time: the newest
    finally:
        for cl in (a, b, c):
            cl.close()
        reset_throttles()
