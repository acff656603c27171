"""ODataClient: count() and fetch_page(k) against an OData v4 entity set.

A page k is the rows ``$skip=k*page_size, $top=page_size`` in ``$orderby``
order. Servers may answer with fewer rows plus a nextLink (server-driven
paging), so one page can take several HTTP requests ("hops"); the client
follows links until the page is complete or the server says there is no more,
and never infers the end of the data from a short response. Every request goes
through ``transport.Transport`` (throttle, request ids, retries, cache, secret
scrubbing).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from urllib.parse import parse_qsl, urlsplit

from well_assets.errors import ExternalApiError, PaginationError

from . import paging, responses
from .config import ClientConfig
from .throttle import Throttle
from .transport import Stats, Transport

# A legitimate server adds at least one row per hop; allow a few empty hops
# (e.g. a trailing empty page) before calling it a paging protocol violation.
MAX_EMPTY_HOPS = 10
# Statuses for which count() falls back from `$count=true&$top=0` to `/$count`.
_COUNT_FALLBACK_STATUSES = frozenset({400, 404, 405, 501})


@dataclass
class PageResult:
    page: int
    skip: int
    top: int
    records: list[dict]  # raw OData objects (no annotations), in server order
    source_count: int | None  # @odata.count / @count of the first response
    bytes: int
    http_seconds: float  # time in HTTP requests, all attempts and hops
    throttle_seconds: float  # time deliberately waited: throttle slots + retry backoff/Retry-After
    retries: int  # retried attempts over all hops of this page
    request_ids: list[str]
    from_cache: bool  # True only when every hop was served from the cache (no request sent)
    first_key: tuple[str, str] | None  # (WellCode, ProductionDate) as received
    last_key: tuple[str, str] | None


class ODataClient:
    """Pages and the count of one entity set; close it (or use it as a context manager)."""

    def __init__(self, config: ClientConfig, logger: logging.Logger | None = None) -> None:
        config.validate()  # before anything can be sent
        self.config = config
        self.log = logger or logging.getLogger("well_assets.odata")
        self.entity_url = paging.entity_set_url(config.base_url, config.entity_set)
        self._transport = Transport(config, self.log)
        self.throttle: Throttle = self._transport.throttle  # shared per source (see throttle_for)

    # -- public API ---------------------------------------------------------

    def close(self) -> None:
        self._transport.close()

    def __enter__(self) -> ODataClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def page_url(self, page: int) -> str:
        """The URL of page k's first request (exactly what goes on the wire)."""
        cfg = self.config
        params = [("$skip", str(page * cfg.page_size)), ("$top", str(cfg.page_size)),
                  ("$orderby", cfg.orderby)]
        if cfg.filter is not None:
            params.append(("$filter", cfg.filter))
        if cfg.select is not None:
            params.append(("$select", cfg.select))
        params.append(("$count", "true"))
        return f"{self.entity_url}?{paging.encode_query(params)}"

    def fetch_page(self, page: int) -> PageResult:
        if not isinstance(page, int) or isinstance(page, bool) or page < 0:
            raise PaginationError(f"invalid page {page!r}: pages are integers >= 0", page=repr(page))
        size = self.config.page_size
        url = self.page_url(page)
        stats = Stats()
        records: list[dict] = []
        source_count: int | None = None
        seen = {_canonical(url)}
        hop = empty_streak = 0
        while True:
            payload = self._transport.get(
                url, stats=stats, page=page, parse=responses.parse_collection, cacheable=True,
                request_id=lambda a, h=hop: _request_id(self.config.run_id, f"p{page:05d}", a, h),
                extra_headers={"Prefer": f"odata.maxpagesize={size}"},
            )
            rows = payload["value"]
            if hop == 0:
                source_count = paging.parse_count(paging.annotation(payload, "count"))
            # A server may return more than asked: keep only what this page still needs.
            records.extend(rows[: size - len(records)])  # annotations: see parse_collection
            if len(records) >= size:
                break
            link = paging.next_link(payload)
            if link is None:
                break  # only the absence of a nextLink ends a short page
            url = self._next_url(url, link, page, hop, seen)
            empty_streak = empty_streak + 1 if not rows else 0
            hop += 1
            if empty_streak > MAX_EMPTY_HOPS or hop > size + MAX_EMPTY_HOPS:
                raise PaginationError(
                    f"page {page}: gave up after {hop} nextLink hops without completing the page",
                    page=page, hops=hop, records=len(records),
                )
        return PageResult(
            page=page, skip=page * size, top=size, records=records, source_count=source_count,
            bytes=stats.bytes, http_seconds=stats.http_seconds, throttle_seconds=stats.wait_seconds,
            retries=stats.retries, request_ids=stats.request_ids, from_cache=stats.all_from_cache,
            first_key=paging.record_key(records[0]) if records else None,
            last_key=paging.record_key(records[-1]) if records else None,
        )

    def count(self) -> int:
        """Rows in the (filtered) entity set: `$count=true&$top=0`, else `GET .../$count`."""
        cfg = self.config
        filt = [("$filter", cfg.filter)] if cfg.filter is not None else []
        url = f"{self.entity_url}?{paging.encode_query([('$count', 'true'), ('$top', '0'), *filt])}"
        try:
            payload = self._transport.get(
                url, stats=Stats(), page=None, parse=responses.parse_collection, cacheable=False,
                request_id=lambda a: _request_id(cfg.run_id, "count", a, 0),
            )
            n = paging.parse_count(paging.annotation(payload, "count"))
            if n is not None:
                return n
            self.log.info("count: no parsable @odata.count in the response; falling back to /$count")
        except ExternalApiError as exc:
            if exc.status not in _COUNT_FALLBACK_STATUSES:
                raise
            self.log.info("count: $count=true answered HTTP %s; falling back to /$count", exc.status)
        raw_url = f"{self.entity_url}/$count" + (f"?{paging.encode_query(filt)}" if filt else "")
        return self._transport.get(
            raw_url, stats=Stats(), page=None, parse=responses.parse_count_text, cacheable=False,
            request_id=lambda a: _request_id(cfg.run_id, "count", a, 1),
            extra_headers={"Accept": "text/plain"},
        )

    # -- internals ------------------------------------------------------------

    def _next_url(self, url: str, link: str, page: int, hop: int, seen: set) -> str:
        nxt = paging.resolve_next_link(url, link)
        scrub = self._transport.scrub
        if not paging.same_origin(nxt, self.entity_url):
            # Refuse before sending anything: the request would carry our credentials.
            shown = scrub(paging.redact_url(nxt))
            raise PaginationError(
                f"page {page}: refusing nextLink to another origin {shown} "
                f"(service is {scrub(self.config.base_url)})",
                page=page, hop=hop + 1, next_link=shown,
            )
        canonical = _canonical(nxt)
        if canonical in seen:
            shown = scrub(paging.redact_url(nxt))
            raise PaginationError(
                f"page {page}: nextLink loop: {shown} was already requested for this page",
                page=page, hop=hop + 1, next_link=shown,
            )
        seen.add(canonical)
        return nxt


def _request_id(run_id: str, what: str, attempt: int, hop: int) -> str:
    return f"{run_id}-{what}-a{attempt}" + (f"-h{hop}" if hop else "")


def _canonical(url: str) -> tuple:
    """A URL identity for loop detection, insensitive to query order and encoding spelling."""
    parts = urlsplit(url)
    return (paging.origin(url), parts.path, tuple(sorted(parse_qsl(parts.query, keep_blank_values=True))))
