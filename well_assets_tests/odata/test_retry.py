"""Retry policy: Retry-After in both forms, full-jitter backoff, retryable statuses."""

from __future__ import annotations

import random
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from well_assets.odata.retry import backoff_delay, is_retryable_status, parse_retry_after, retry_wait

NOW = datetime(2026, 11, 26, 12, 0, 0, tzinfo=timezone.utc)
# HTTP dates have one-second resolution: keep "now" on a whole second.
nows = st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2090, 1, 1)).map(
    lambda d: d.replace(microsecond=0, tzinfo=timezone.utc))


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 10**7))
def test_retry_after_seconds(n):
    assert parse_retry_after(str(n)) == float(n)
    assert parse_retry_after(f"  {n} ") == float(n)


@settings(max_examples=60, deadline=None)
@given(now=nows, delta=st.integers(0, 10**6))
def test_retry_after_http_date_in_the_future(now, delta):
    header = format_datetime(now + timedelta(seconds=delta), usegmt=True)
    assert parse_retry_after(header, now=now) == pytest.approx(delta)


@settings(max_examples=60, deadline=None)
@given(now=nows, delta=st.integers(1, 10**6))
def test_retry_after_http_date_in_the_past_is_zero(now, delta):
    header = format_datetime(now - timedelta(seconds=delta), usegmt=True)
    assert parse_retry_after(header, now=now) == 0.0


@pytest.mark.parametrize("header", [
    "Wed, 26 Nov 2026 12:00:30 GMT",      # IMF-fixdate
    "Wednesday, 26-Nov-26 12:00:30 GMT",  # obsolete RFC 850
    "Wed Nov 26 12:00:30 2026",           # asctime
])
def test_retry_after_all_http_date_formats(header):
    assert parse_retry_after(header, now=NOW) == pytest.approx(30.0)


@pytest.mark.parametrize("header", [None, "", "soon", "-5", "1e3", "Mon, 99 Foo 2026", "12 seconds", "²", "１２"])
def test_retry_after_unparseable_is_none(header):
    assert parse_retry_after(header, now=NOW) is None


@settings(max_examples=60, deadline=None)
@given(st.text(max_size=40))
def test_retry_after_never_raises_and_is_never_negative(text):
    value = parse_retry_after(text, now=NOW)
    assert value is None or value >= 0


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 200), base=st.floats(0, 10), cap=st.floats(0, 100), seed=st.integers(0, 2**32))
def test_full_jitter_backoff_bounds(n, base, cap, seed):
    d = backoff_delay(n, base, cap, random.Random(seed))
    assert 0.0 <= d <= min(cap, base * 2 ** (n - 1)) + 1e-12


def test_full_jitter_grows_and_varies():
    rng = random.Random(1)
    samples = [backoff_delay(4, 0.5, 30, rng) for _ in range(200)]
    assert max(samples) > 3.0 and min(samples) < 1.0  # spread over [0, 4], not fixed


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 50), retry_after=st.one_of(st.none(), st.floats(0, 1000)), seed=st.integers(0, 99))
def test_wait_is_max_of_backoff_and_retry_after(n, retry_after, seed):
    w = retry_wait(n, 0.01, 0.05, retry_after, random.Random(seed))
    assert w >= (retry_after or 0.0)
    assert w <= max(0.05, retry_after or 0.0)


@pytest.mark.parametrize("status", [408, 429, 500, 502, 503, 504])
def test_retryable(status):
    assert is_retryable_status(status)


@pytest.mark.parametrize("status", [200, 301, 400, 401, 403, 404, 405, 409, 410, 501])
def test_not_retryable(status):
    assert not is_retryable_status(status)
