"""Transport: one OData source's HTTP requests, each throttled, traced and retried.

Every request goes through the same path: shared throttle -> GET with a traceable
X-Request-ID -> classification (success, transient, fatal) -> tenacity retry loop with
full-jitter backoff that honours Retry-After; optionally through the response cache.
Secrets never reach logs or exceptions: messages are built from redacted URLs and
scrubbed of the token/password before they leave this module. What a page or a count
is (paging, nextLinks) is the client's business, not this module's.
"""

from __future__ import annotations

import base64
import functools
import logging
import random
import ssl
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable, TypeVar
from urllib.parse import urlsplit

import httpx
import tenacity

from well_assets import __version__
from well_assets.errors import ExternalApiError

from . import paging, responses
from .cache import ResponseCache, auth_identity, cache_key
from .config import ClientConfig
from .retry import is_retryable_status, parse_retry_after, retry_wait
from .throttle import Throttle, throttle_for

T = TypeVar("T")

USER_AGENT = f"well-assets/{__version__}"
ACCEPT_JSON = "application/json;odata.metadata=minimal"


@dataclass
class _Transient(Exception):
    """One attempt failed in a way worth retrying (never leaves this module)."""

    reason: str
    status: int | None = None
    odata_code: str | None = None
    odata_message: str | None = None
    retry_after: float | None = None
    request_id: str = ""
    elapsed: float = 0.0

    def __post_init__(self) -> None:
        super().__init__(self.reason)


@dataclass
class Stats:
    """What one fetch_page/count call spent, summed over hops and attempts."""

    http_seconds: float = 0.0
    wait_seconds: float = 0.0
    retries: int = 0
    bytes: int = 0
    request_ids: list[str] = field(default_factory=list)
    all_from_cache: bool = True


class _SecretUrls(logging.Filter):
    """httpx logs every request's full URL (INFO, logger "httpx"): while a secret URL (a
    delta link) is in flight, its log lines show the redacted form instead."""

    def __init__(self) -> None:
        super().__init__()
        self._lock = threading.Lock()
        self._shown: dict[str, str] = {}
        self._users: Counter[str] = Counter()

    def add(self, url: str, shown: str) -> str:
        key = str(httpx.URL(url))  # as httpx will log it
        with self._lock:
            self._shown[key] = shown
            self._users[key] += 1
        return key

    def remove(self, key: str) -> None:
        with self._lock:
            self._users[key] -= 1
            if self._users[key] <= 0:
                del self._users[key], self._shown[key]

    def filter(self, record: logging.LogRecord) -> bool:
        if self._shown and isinstance(record.args, tuple):
            with self._lock:
                record.args = tuple(self._shown.get(str(a), a) if isinstance(a, httpx.URL) else a
                                    for a in record.args)
        return True


_SECRET_URLS = _SecretUrls()
logging.getLogger("httpx").addFilter(_SECRET_URLS)


class _BearerAuth(httpx.Auth):
    def __init__(self, token: str) -> None:
        self._token = token

    def auth_flow(self, request: httpx.Request):
        request.headers["Authorization"] = f"Bearer {self._token}"
        yield request

    def __repr__(self) -> str:
        return "_BearerAuth(***)"


class Transport:
    """The HTTP side of an ODataClient: connection pool, auth, throttle, cache, retries."""

    def __init__(self, config: ClientConfig, log: logging.Logger) -> None:
        self.config = config
        self.log = log
        self._secrets = _secrets_of(config)
        auth: httpx.Auth | None = None
        if config.token is not None:
            auth = _BearerAuth(config.token)
        elif config.username is not None:
            auth = httpx.BasicAuth(config.username, config.password or "")
        self._http = httpx.Client(
            auth=auth,
            timeout=httpx.Timeout(connect=config.connect_timeout, read=config.read_timeout,
                                  write=config.read_timeout, pool=config.read_timeout),
            headers={"Accept": ACCEPT_JSON, "OData-MaxVersion": "4.01", "User-Agent": USER_AGENT},
            follow_redirects=False,  # a redirect could carry credentials elsewhere
            verify=_tls_context(config.base_url),
        )
        self.throttle: Throttle = throttle_for(config.base_url, config.min_interval, config.adaptive_throttle,
                                               config.concurrency)
        self._cache = ResponseCache(config.cache_dir, config.cache_ttl_seconds) if config.cache_dir else None
        self._identity = auth_identity(config.token, config.username, config.password)
        self._rng = random.Random()

    def close(self) -> None:
        self._http.close()

    def get(self, url: str, *, stats: Stats, page: int | None, parse: Callable[..., T],
            cacheable: bool, request_id: Callable[[int], str],
            extra_headers: dict[str, str] | None = None, shown_url: str | None = None,
            parse_headers: bool = False) -> T:
        """GET url with throttle, retries and (optionally) the response cache; returns parse(body),
        or parse(body, headers) with ``parse_headers`` (such responses are never cached).

        ``shown_url`` is what logs and errors say instead of the redacted URL, for URLs that
        are secrets as a whole (delta links)."""
        key = None
        if cacheable and self._cache is not None and not parse_headers:
            key = cache_key("GET", url, self._identity)
            body = self._cache.get(key)
            if body is not None:
                try:
                    result = parse(body)
                except responses.Malformed:
                    pass  # a bad entry is just a miss
                else:
                    stats.bytes += len(body)
                    self.log.debug("cache hit GET %s", self.scrub(shown_url if shown_url is not None else paging.redact_url(url)))
                    return result
        stats.all_from_cache = False
        safe_url = self.scrub(shown_url if shown_url is not None else paging.redact_url(url))
        attempts = 0
        last_rid = ""

        def attempt() -> tuple[T, bytes]:
            nonlocal attempts, last_rid
            attempts += 1
            rid = last_rid = request_id(attempts)
            stats.request_ids.append(rid)
            return self._attempt(url, safe_url, rid, attempts, page, stats, parse, extra_headers, parse_headers)

        def before_sleep(state: tenacity.RetryCallState) -> None:
            exc = state.outcome.exception()  # type: ignore[union-attr]
            stats.retries += 1
            self.log.warning(
                "%s", self.scrub(
                    f"retry {state.attempt_number}/{self.config.max_retries} request_id={exc.request_id} "
                    f"GET {safe_url} status={exc.status} elapsed={exc.elapsed:.3f}s reason={exc.reason}"
                    + (f" retry_after={exc.retry_after:.3f}s" if exc.retry_after is not None else "")
                    + f"; waiting {state.next_action.sleep:.3f}s"  # type: ignore[union-attr]
                ),
            )

        def sleep(seconds: float) -> None:
            stats.wait_seconds += seconds
            time.sleep(seconds)

        retrying = tenacity.Retrying(
            stop=tenacity.stop_after_attempt(self.config.max_retries + 1),
            retry=tenacity.retry_if_exception_type(_Transient),
            wait=self._wait,
            sleep=sleep,
            before_sleep=before_sleep,
            reraise=True,
        )
        secret = _SECRET_URLS.add(url, safe_url) if shown_url is not None else None
        try:
            result, body = retrying(attempt)
        except _Transient as exc:
            detail = f" (OData error {exc.odata_code}: {exc.odata_message})" if exc.odata_code else ""
            raise ExternalApiError(
                self.scrub(f"GET {safe_url} failed after {attempts} attempt{'s' if attempts != 1 else ''}: {exc.reason}{detail}"
                            + (f" on page {page}" if page is not None else "")),
                status=exc.status, odata_code=self.scrub_opt(exc.odata_code), page=page,
                retry_after=exc.retry_after, request_id=last_rid, url=safe_url, attempts=attempts,
            ) from None
        finally:
            if secret is not None:
                _SECRET_URLS.remove(secret)
        if key is not None:
            self._cache.put(key, body)  # type: ignore[union-attr]
        return result

    def _wait(self, state: tenacity.RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        retry_after = getattr(exc, "retry_after", None)
        return retry_wait(state.attempt_number, self.config.backoff_base, self.config.backoff_cap,
                          retry_after, self._rng)

    def _attempt(self, url: str, safe_url: str, rid: str, attempt_no: int, page: int | None, stats: Stats,
                 parse: Callable[..., T], extra_headers: dict[str, str] | None,
                 parse_headers: bool = False) -> tuple[T, bytes]:
        """One HTTP request: returns (parsed, body), raises _Transient or ExternalApiError."""
        ticket = self.throttle.acquire()
        stats.wait_seconds += ticket.waited
        headers = {"X-Request-ID": rid, **(extra_headers or {})}
        start = time.perf_counter()
        try:
            resp = self._http.get(url, headers=headers)
        except (httpx.TransportError, httpx.DecodingError) as exc:
            elapsed = time.perf_counter() - start
            stats.http_seconds += elapsed
            self.throttle.release(ticket, None, None)
            kind = "timeout" if isinstance(exc, httpx.TimeoutException) else "connection error"
            self._log_request(rid, safe_url, f"{kind} ({type(exc).__name__})", elapsed)
            raise _Transient(f"{kind} ({type(exc).__name__})", request_id=rid, elapsed=elapsed) from None
        except BaseException:
            self.throttle.release(ticket, None, None)
            raise
        elapsed = time.perf_counter() - start
        stats.http_seconds += elapsed
        status = resp.status_code
        body = resp.content
        self.throttle.release(ticket, elapsed, status)
        self._log_request(rid, safe_url, str(status), elapsed, resp.headers.get("X-Request-ID"))

        if 200 <= status < 300:
            try:
                result = parse(body, resp.headers) if parse_headers else parse(body)
            except responses.Malformed as exc:
                raise _Transient(f"HTTP {status} with {exc}", status=status, odata_code=exc.odata_code,
                                 odata_message=exc.odata_message, request_id=rid, elapsed=elapsed) from None
            stats.bytes += len(body)
            return result, body

        code, message = responses.odata_error(body)
        retry_after = parse_retry_after(resp.headers.get("Retry-After"))
        if is_retryable_status(status):
            if retry_after is not None and retry_after > self.config.max_retry_after:
                raise ExternalApiError(
                    self.scrub(f"GET {safe_url} answered HTTP {status} asking to retry after "
                                f"{retry_after:.0f}s, more than max_retry_after={self.config.max_retry_after:g}s"
                                + (f" on page {page}" if page is not None else "")),
                    status=status, odata_code=self.scrub_opt(code), page=page, retry_after=retry_after,
                    request_id=rid, url=safe_url, attempts=attempt_no,
                )
            if retry_after is not None:
                self.throttle.hold_off(retry_after)  # the whole process should back off, not just us
            raise _Transient(f"HTTP {status}", status=status, odata_code=code, odata_message=message,
                             retry_after=retry_after, request_id=rid, elapsed=elapsed)
        detail = f" (OData error {code}: {message})" if code or message else ""
        raise ExternalApiError(
            self.scrub(f"GET {safe_url} answered HTTP {status}{detail}"
                        + (f" on page {page}" if page is not None else "") + f", request {rid}"),
            status=status, odata_code=self.scrub_opt(code), page=page, request_id=rid, url=safe_url,
            attempts=attempt_no,
        )

    def _log_request(self, rid: str, safe_url: str, outcome: str, elapsed: float,
                     echoed: str | None = None) -> None:
        # Never log headers: only the request id, method, redacted URL, outcome, time.
        self.log.debug("%s", self.scrub(
            f"request_id={rid} GET {safe_url} -> {outcome} in {elapsed:.3f}s"
            + (f" (server echoed {echoed})" if echoed and echoed != rid else "")
        ))

    def scrub(self, text: str) -> str:
        """``text`` with every secret of the config masked."""
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text

    def scrub_opt(self, text: str | None) -> str | None:
        return None if text is None else self.scrub(text)


def _secrets_of(config: ClientConfig) -> list[str]:
    secrets = [s for s in (config.token, config.password) if s]
    if config.username is not None and config.password:
        secrets.append(base64.b64encode(f"{config.username}:{config.password}".encode()).decode())
    # Longest first so a secret containing another is masked whole.
    return sorted(set(secrets), key=len, reverse=True)


@functools.lru_cache(maxsize=1)
def _shared_tls_context() -> ssl.SSLContext:
    return httpx.create_ssl_context()  # the same trust store httpx uses by default


def _tls_context(base_url: str) -> ssl.SSLContext | bool:
    """Loading the CA bundle costs 0.05-0.1 s per client: share one context, and skip
    it for plain-http sources (every request stays on the base URL's origin, scheme
    included: nextLinks to another origin are refused, redirects are not followed)."""
    if urlsplit(base_url).scheme.lower() == "http":
        return False
    return _shared_tls_context()
