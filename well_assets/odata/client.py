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

Change tracking (delta links): ``start_tracking()`` is the count request asking for
``odata.track-changes``; it returns the count and, when the service applied the
preference, a delta link. ``read_delta(link)`` reads what changed since, following the
delta's nextLinks under the same guards as a page's, and returns the next delta link.
"""

from __future__ import annotations

import concurrent.futures as cf

import logging
from dataclasses import dataclass
from functools import partial
from urllib.parse import parse_qsl, urlsplit

from well_assets.errors import ChangeTrackingUnavailable, DeltaLinkExpired, ExternalApiError, PaginationError

from . import delta, paging, responses
from .config import ClientConfig
from .delta import Baseline, Delta
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
# A delta is read to its end in one call; past this many nextLinks it is refused.
MAX_DELTA_HOPS = 10_000


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
        payload, _ = self._inline_count("count", track=False)
        n = self._parsed_count(payload, "count")
        return n if n is not None else self._count_segment("count")

    def start_tracking(self) -> Baseline:
        """The row count, and a delta link to the changes from now on: the one
        `$count=true&$top=0` request, sent with `Prefer: odata.track-changes` unless
        ``change_tracking`` is "off". The link is kept only when the service answered
        `Preference-Applied: odata.track-changes` and gave one; with "on" its absence
        raises ChangeTrackingUnavailable."""
        mode = self.config.change_tracking
        payload, applied = self._inline_count("track", track=mode != "off")
        link = paging.annotation(payload, "deltaLink") if payload is not None else None
        link = link.strip() if isinstance(link, str) and link.strip() else None
        delta_link = None
        if mode != "off":
            if applied and link is not None:
                delta_link = paging.resolve_next_link(self.entity_url, link)
                self.log.info("change tracking: the service applied odata.track-changes and gave a delta link")
            else:
                what = self._tracking_refusal(payload, applied, link)
                if mode == "on":
                    raise ChangeTrackingUnavailable(
                        f"ODATA_CHANGE_TRACKING=on, but {what}: the service at "
                        f"{self._transport.scrub(paging.redact_url(self.config.base_url))} does not track changes "
                        f"for this request; set ODATA_CHANGE_TRACKING=auto or off to read without delta links")
                self.log.info("change tracking: %s; reading without delta links", what)
        n = self._parsed_count(payload, "track")
        return Baseline(count=n if n is not None else self._count_segment("track"), delta_link=delta_link)

    def read_delta(self, link: str) -> Delta:
        """Everything that changed since ``link`` (a delta link from ``start_tracking`` or an
        earlier ``read_delta``), following the delta's nextLinks, and the next delta link.

        The link is requested as it is (only headers are added). 410 Gone, or an error
        saying the token is no longer valid, raises DeltaLinkExpired (not retried), and so
        does a link to another origin than the service's (nothing is sent); other
        failures behave as for pages. The link never appears in logs or errors."""
        cfg = self.config
        if not isinstance(link, str) or not link.strip():
            raise PaginationError("read_delta needs a delta link (a non-empty URL)")
        url = link.strip()
        if not paging.same_origin(url, self.entity_url):
            # Refuse before sending anything: the request would carry our credentials. The
            # service moved (the bundled one gets a new port every start): it cannot serve a
            # link it never issued, so the link counts as expired and a full sync replaces it.
            raise DeltaLinkExpired(
                f"delta: refusing a delta link to another origin {self._transport.scrub(delta.redact_link(url))} "
                f"(service is {self._transport.scrub(self.config.base_url)}); a full sync takes a new one")
        stats = Stats()
        changed: list[dict] = []
        removed: list[delta.Removed] = []
        seen = {_canonical(url)}
        hop = empty_streak = 0
        parse = partial(delta.parse_delta_page, key=cfg.key)
        while True:
            try:
                page = self._transport.get(
                    url, stats=stats, page=None, parse=parse, cacheable=False,
                    request_id=lambda a, h=hop: _request_id(cfg.run_id, "delta", a, h),
                    extra_headers={"Prefer": f"odata.track-changes, odata.maxpagesize={cfg.page_size}"},
                    shown_url=delta.redact_link(url),
                )
            except ExternalApiError as exc:
                if exc.status == 410 or (exc.status is not None and 400 <= exc.status < 500
                                         and exc.odata_code in delta.EXPIRED_CODES):
                    raise DeltaLinkExpired(
                        f"the service no longer answers the delta link (HTTP {exc.status}"
                        + (f", OData error {exc.odata_code}" if exc.odata_code else "")
                        + "): the changes since are unknown; read the entity set in full again",
                        status=exc.status, odata_code=exc.odata_code, request_id=exc.request_id, hop=hop,
                    ) from None
                raise
            changed.extend(page.changed)
            removed.extend(page.removed)
            if page.next_link is None:
                if page.delta_link is None:
                    raise PaginationError(
                        f"delta: its last response (request {stats.request_ids[-1]}) carried no delta link",
                        hop=hop, request_id=stats.request_ids[-1])
                # Resolved now: the caller keeps the link and uses it later, as it is.
                next_delta = paging.resolve_next_link(url, page.delta_link)
                self.log.info("delta: %d changed and %d removed entities in %d requests",
                              len(changed), len(removed), len(stats.request_ids))
                return Delta(changed=changed, removed=removed, delta_link=next_delta, requests=len(stats.request_ids))
            url = self._next_url(url, page.next_link, None, hop, seen, label="delta", redact=delta.redact_link)
            empty_streak = empty_streak + 1 if not (page.changed or page.removed) else 0
            hop += 1
            if empty_streak > MAX_EMPTY_HOPS or hop > MAX_DELTA_HOPS:
                raise PaginationError(f"delta: gave up after {hop} nextLink hops without reaching its end",
                                      hops=hop, records=len(changed) + len(removed))

    # -- internals ------------------------------------------------------------

    def _inline_count(self, what: str, track: bool) -> tuple[dict | None, bool]:
        """The `$count=true&$top=0` response (None: the service refused it with a status that
        /$count may still answer) and whether it applied `odata.track-changes`."""
        cfg = self.config
        filt = [("$filter", cfg.filter)] if cfg.filter is not None else []
        url = f"{self.entity_url}?{paging.encode_query([('$count', 'true'), ('$top', '0'), *filt])}"
        try:
            return self._transport.get(
                url, stats=Stats(), page=None, cacheable=False, parse=_collection_and_tracking, parse_headers=True,
                request_id=lambda a: _request_id(cfg.run_id, what, a, 0),
                extra_headers={"Prefer": "odata.track-changes"} if track else None,
            )
        except ExternalApiError as exc:
            if exc.status not in _COUNT_FALLBACK_STATUSES:
                raise
            self.log.info("%s: $count=true answered HTTP %s; falling back to /$count", what, exc.status)
            return None, False

    def _parsed_count(self, payload: dict | None, what: str) -> int | None:
        if payload is None:
            return None
        n = paging.parse_count(paging.annotation(payload, "count"))
        if n is None:
            self.log.info("%s: no parsable @odata.count in the response; falling back to /$count", what)
        return n

    def _count_segment(self, what: str) -> int:
        cfg = self.config
        filt = [("$filter", cfg.filter)] if cfg.filter is not None else []
        raw_url = f"{self.entity_url}/$count" + (f"?{paging.encode_query(filt)}" if filt else "")
        return self._transport.get(
            raw_url, stats=Stats(), page=None, parse=responses.parse_count_text, cacheable=False,
            request_id=lambda a: _request_id(cfg.run_id, what, a, 1),
            extra_headers={"Accept": "text/plain"},
        )

    @staticmethod
    def _tracking_refusal(payload: dict | None, applied: bool, link: str | None) -> str:
        if payload is None:
            return "the service refused the count request that asks for odata.track-changes"
        if not applied:
            return "the service did not apply odata.track-changes (no Preference-Applied)"
        return "the service applied odata.track-changes but gave no delta link"

    def _next_url(self, url: str, link: str, page: int | None, hop: int, seen: set, label: str | None = None,
                  redact=paging.redact_url) -> str:
        nxt = paging.resolve_next_link(url, link)
        scrub = self._transport.scrub
        label = label or f"page {page}"
        if not paging.same_origin(nxt, self.entity_url):
            # Refuse before sending anything: the request would carry our credentials.
            shown = scrub(redact(nxt))
            raise PaginationError(
                f"{label}: refusing nextLink to another origin {shown} "
                f"(service is {scrub(self.config.base_url)})",
                page=page, hop=hop + 1, next_link=shown,
            )
        canonical = _canonical(nxt)
        if canonical in seen:
            shown = scrub(redact(nxt))
            raise PaginationError(
                f"{label}: nextLink loop: {shown} was already requested for this "
                + ("page" if label.startswith("page") else label),
                page=page, hop=hop + 1, next_link=shown,
            )
        seen.add(canonical)
        return nxt


def _collection_and_tracking(body: bytes, headers) -> tuple[dict, bool]:
    return responses.parse_collection(body), delta.applies_tracking(headers.get("Preference-Applied"))


def _request_id(run_id: str, what: str, attempt: int, hop: int) -> str:
    return f"{run_id}-{what}-a{attempt}" + (f"-h{hop}" if hop else "")


def _canonical(url: str) -> tuple:
    """A URL identity for loop detection, insensitive to query order and encoding spelling."""
    parts = urlsplit(url)
    return (paging.origin(url), parts.path, tuple(sorted(parse_qsl(parts.query, keep_blank_values=True))))
