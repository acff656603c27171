"""Retry policy: which failures are transient, how long to wait, Retry-After parsing.

The retry loop itself lives in transport.py (built on tenacity); this module holds
the pure decisions so they can be tested without a server.
"""

from __future__ import annotations

import random
import re
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime

# 408/429 and the gateway/overload family are worth another try; 400/401/403/404
# (and every other status) mean the request itself is wrong and would fail again.
RETRYABLE_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
# ASCII digits only: str.isdigit() also accepts '²' and other Unicode digits.
_SECONDS_RE = re.compile(r"[0-9]+(?:\.[0-9]+)?")


def is_retryable_status(status: int) -> bool:
    return status in RETRYABLE_STATUSES


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds to wait from a Retry-After header: delay-seconds or an HTTP date.

    Returns None when absent or unparseable (the caller then uses plain backoff),
    0.0 for a date in the past.
    """
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    if _SECONDS_RE.fullmatch(text):
        # RFC 9110 says integer seconds; tolerate "1.5" from lenient servers.
        return float(text)
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when is None:
        return None
    if when.tzinfo is None:  # HTTP dates are GMT
        when = when.replace(tzinfo=timezone.utc)
    now = now or datetime.now(timezone.utc)
    return max(0.0, (when - now).total_seconds())


def backoff_delay(retry_number: int, base: float, cap: float, rng: random.Random | None = None) -> float:
    """Exponential backoff with full jitter: uniform(0, min(cap, base * 2**(n-1))) for retry n>=1."""
    ceiling = min(cap, base * (2 ** min(max(retry_number - 1, 0), 62)))
    return (rng or random).uniform(0.0, ceiling)


def retry_wait(retry_number: int, base: float, cap: float, retry_after: float | None,
               rng: random.Random | None = None) -> float:
    """The wait before retry n: the jittered backoff, but never less than the server asked."""
    return max(backoff_delay(retry_number, base, cap, rng), retry_after or 0.0)
