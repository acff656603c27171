"""ODataClient: counts and pages of an OData v4 entity set, by offset or by key range.

``fetch_page(k)`` reads page k by offset: ``$skip=k*page_size`` in ``$orderby`` (key)
order, one row more than a page, so the caller learns where the next page starts
(``next_key``) and can tell when rows moved between two reads. ``fetch_range(lower,
upper)`` reads the rows of a key range, however many there are now; ``count_range``
counts them. Servers may answer with fewer rows plus a nextLink (server-driven paging),
so a read can take several HTTP requests ("hops"); the client follows links until it has
what it asked for or the server says there is no more, and never infers the end of the
data from a short response. Every request goes
through ``transport.Transport`` (throttle, request ids, retries, cache, secret
scrubbing).
"""

from __future__ import annotations

import concurrent.futures as cf

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
# A page read by key range may have grown since its range was set; past this many pages'
# worth of rows it is refused rather than held in memory.
MAX_RANGE_PAGES = 100
# Statuses for which count() falls back from `$count=true&$top=0` to `/$count`.
_COUNT_FALLBACK_STATUSES = frozenset({400, 404, 405, 501})


@dataclass
class PageResult:
    page: int
    skip: int | None  # offset reads; None for a key range
    top: int
    records: list[dict]  # raw OData objects (no annotations), in server order
    source_count: int | None  # @odata.count / @count of the first response
    bytes: int
    http_seconds: float  # time in HTTP requests, all attempts and hops
    throttle_seconds: float  # time deliberately waited: throttle slots + retry backoff/Retry-After
    retries: int  # retried attempts over all hops of this page
    request_ids: list[str]
    from_cache: bool  # True only when every hop was served from the cache (no request sent)
    first_key: tuple | None  # the key of the first record, as received
    last_key: tuple | None
    next_key: tuple | None = None  # offset reads: the key of the row after the page (None: the end)


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

    def _url(self, params: list[tuple[str, str]], range_filter: str | None = None) -> str:
        cfg = self.config
        query = [*params, ("$orderby", cfg.orderby)]
        filt = paging.and_filters(cfg.filter, range_filter)
        if filt is not None:
            query.append(("$filter", filt))
        if cfg.select is not None:
            query.append(("$select", cfg.select))
        query.append(("$count", "true"))
        return f"{self.entity_url}?{paging.encode_query(query)}"

    def page_url(self, page: int) -> str:
        """The URL of page k's first request (exactly what goes on the wire)."""
        size = self.config.page_size
        return self._url([("$skip", str(page * size)), ("$top", str(size + 1))])

    def range_url(self, lower: tuple | None, upper: tuple | None) -> str:
        """The URL of the first request for the key range [lower, upper)."""
        return self._url([], self._range_filter(lower, upper))

    def _range_filter(self, lower: tuple | None, upper: tuple | None) -> str | None:
        try:
            return paging.range_filter(self.config.key_names, self.config.key_types, lower, upper)
        except ValueError as exc:
            raise PaginationError(f"cannot address the key range [{lower}, {upper}): {exc}") from None

    def fetch_page(self, page: int) -> PageResult:
        """Page k by offset, plus the key of the row after it (``next_key``)."""
        if not isinstance(page, int) or isinstance(page, bool) or page < 0:
            raise PaginationError(f"invalid page {page!r}: pages are integers >= 0", page=repr(page))
        size = self.config.page_size
        records, source_count, stats = self._read(self.page_url(page), page, limit=size + 1)
        following = records[size:]
        return self._result(page, page * size, records[:size], source_count, stats,
                            next_key=paging.record_key(following[0], self.config.key_names) if following else None)

    def fetch_range(self, page: int, lower: tuple | None, upper: tuple | None) -> PageResult:
        """Every row of the key range [lower, upper) as the source has it now (``page``
        names the request in ids and errors)."""
        records, source_count, stats = self._read(self.range_url(lower, upper), page, limit=None)
        return self._result(page, None, records, source_count, stats)

    def count_range(self, lower: tuple | None, upper: tuple | None) -> int:
        """Rows in the key range [lower, upper) (with the configured $filter)."""
        url = self._url([("$top", "0")], self._range_filter(lower, upper))
        payload = self._transport.get(
            url, stats=Stats(), page=None, parse=responses.parse_collection, cacheable=False,
            request_id=lambda a: _request_id(self.config.run_id, "rcount", a, 0),
        )
        n = paging.parse_count(paging.annotation(payload, "count"))
        if n is None:
            raise PaginationError("the service answered a range count without a parsable @odata.count")
        return n

    def count_ranges(self, ranges: list[tuple[tuple | None, tuple | None]]) -> list[int]:
        """``count_range`` of each range, up to ``concurrency`` at once (through the host's
        one throttle, like every request); in the order given."""
        if len(ranges) <= 1 or self.config.concurrency == 1:
            return [self.count_range(lower, upper) for lower, upper in ranges]
        with cf.ThreadPoolExecutor(max_workers=min(self.config.concurrency, len(ranges)),
                                   thread_name_prefix="odata-count") as pool:
            return list(pool.map(lambda bounds: self.count_range(*bounds), ranges))

    def _result(self, page: int, skip: int | None, records: list[dict], source_count: int | None, stats: Stats,
                next_key: tuple | None = None) -> PageResult:
        key = self.config.key_names
        return PageResult(
            page=page, skip=skip, top=self.config.page_size, records=records, source_count=source_count,
            bytes=stats.bytes, http_seconds=stats.http_seconds, throttle_seconds=stats.wait_seconds,
            retries=stats.retries, request_ids=stats.request_ids, from_cache=stats.all_from_cache,
            first_key=paging.record_key(records[0], key) if records else None,
            last_key=paging.record_key(records[-1], key) if records else None,
            next_key=next_key,
        )

    def _read(self, url: str, page: int, limit: int | None) -> tuple[list[dict], int | None, Stats]:
        """Records from ``url`` on, following nextLinks, until ``limit`` records (None: all)."""
        size = self.config.page_size
        cap = limit if limit is not None else MAX_RANGE_PAGES * size
        stats = Stats()
        records: list[dict] = []
        source_count: int | None = None
        seen = {_canonical(url)}
        hop = empty_streak = 0
        while True:
            payload = self._transport.get(
                url, stats=stats, page=page, parse=responses.parse_collection, cacheable=True,
                request_id=lambda a, h=hop: _request_id(self.config.run_id, f"p{page:05d}", a, h),
                extra_headers={"Prefer": f"odata.maxpagesize={limit or size}"},
            )
            rows = payload["value"]
            if hop == 0:
                source_count = paging.parse_count(paging.annotation(payload, "count"))
            # A server may return more than asked: keep only what this read still needs.
            records.extend(rows[: cap - len(records)])  # annotations: see parse_collection
            if len(records) >= cap:
                if limit is None:
                    raise PaginationError(
                        f"page {page}: its key range holds more than {cap} rows; it cannot be read as one page",
                        page=page, records=len(records))
                break
            link = paging.next_link(payload)
            if link is None:
                break  # only the absence of a nextLink ends a short read
            url = self._next_url(url, link, page, hop, seen)
            empty_streak = empty_streak + 1 if not rows else 0
            hop += 1
            if empty_streak > MAX_EMPTY_HOPS or hop > cap + MAX_EMPTY_HOPS:
                raise PaginationError(
                    f"page {page}: gave up after {hop} nextLink hops without completing the page",
                    page=page, hops=hop, records=len(records),
                )
        return records, source_count, stats

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
