"""The demo service's ASGI application: OData routes, auth, faults and the outer wrapper.

Routes under `/odata`: service document, `$metadata`, the `WellProduction` entity set
(and its delta links, `?$deltatoken=`) and its `/$count`. Admin routes live in admin.py.
`DemoApp` wraps the Starlette router to echo `X-Request-ID`, record request statistics
and give handlers the server's raw `send`, which the `drop` fault needs to close the TCP
connection without a response.
"""

from __future__ import annotations

import asyncio
import hmac
import time

import polars as pl
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from . import admin
from .delta import Gone, build_delta_page
from .edmx import ENTITY_SET, metadata_xml, service_document
from .faults import Plan, retry_after_value
from .filters import QueryError
from .payload import build_page, count, dumps
from .query import DeltaRequest, Query, parse_delta_options, parse_options, parse_query_string
from .state import ServiceState

JSON = "application/json;odata.metadata=minimal"
ODATA_HEADERS = {"OData-Version": "4.0"}


def odata_error(status: int, code: str, message: str, headers: dict | None = None) -> Response:
    return Response(
        dumps({"error": {"code": code, "message": message}}),
        status_code=status,
        media_type=JSON,
        headers={**ODATA_HEADERS, **(headers or {})},
    )


class DropResponse(Response):
    """Closes the client's TCP connection without writing a single byte."""

    def __init__(self) -> None:
        super().__init__(b"")

    async def __call__(self, scope, receive, send) -> None:
        scope["demo.dropped"] = True
        cycle = getattr(scope.get("demo.raw_send"), "__self__", None)
        transport = getattr(cycle, "transport", None)
        if transport is None:  # not uvicorn's protocol: the closest we can do is an error
            raise RuntimeError("drop fault: no transport to close")
        transport.close()
        # Let connection_lost run so uvicorn sees a disconnect, not a missing response.
        for _ in range(100):
            if getattr(cycle, "disconnected", True):
                break
            await asyncio.sleep(0.001)


def _state(request: Request) -> ServiceState:
    return request.app.state.demo


def _auth_failure(request: Request) -> Response | None:
    token = _state(request).token
    if token is None:
        return None
    header = request.headers.get("authorization", "")
    scheme, _, given = header.partition(" ")
    if scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), token.encode()):
        return None
    message = "missing bearer token" if not header else "invalid bearer token"
    return odata_error(401, "Unauthorized", message, {"WWW-Authenticate": 'Bearer realm="odata"'})


async def _apply_faults(request: Request, kind: str, skip: int | None) -> tuple[Plan, Response | None]:
    request.scope["demo.endpoint"] = kind
    request.scope["demo.skip"] = skip
    state = _state(request)
    plan = state.faults.evaluate(kind, skip)
    for change in plan.changes:  # the source changes under the reader
        await run_in_threadpool(state.delete, change.get("delete") or [])
        await run_in_threadpool(state.upsert, change.get("upsert") or [])
    if plan.delay:
        await asyncio.sleep(plan.delay)
    rule = plan.terminal
    if rule is None:
        return plan, None
    spec = rule.spec
    if rule.kind == "drop":
        return plan, DropResponse()
    if rule.kind == "error_body":
        body = {"error": {"code": "InjectedError", "message": "fault injection: error in a 200 body"}}
        return plan, Response(dumps(body), 200, media_type=JSON, headers=ODATA_HEADERS)
    if rule.kind == "rate_limit":
        headers = {"Retry-After": retry_after_value(spec, default=1) or "1"}
        return plan, odata_error(429, "TooManyRequests", "rate limit exceeded", headers)
    retry_after = retry_after_value(spec)
    headers = {"Retry-After": retry_after} if retry_after is not None else None
    code = spec.get("code", str(spec["status"]))
    return plan, odata_error(spec["status"], code, spec.get("message", "fault injection"), headers)


def _finish(body: bytes, plan: Plan, media_type: str = JSON, headers: dict | None = None) -> Response:
    if plan.truncate:
        body = body[: len(body) // 2]
    return Response(body, 200, media_type=media_type, headers={**ODATA_HEADERS, **(headers or {})})


def _parse(request: Request) -> Query | DeltaRequest:
    raw = request.scope.get("query_string", b"").decode("utf-8", "replace")
    params = parse_query_string(raw)
    if "$deltatoken" in params:
        if not _state(request).track_changes:
            raise QueryError("change tracking is not supported", code="NotImplemented", status=501)
        return parse_delta_options(params)
    return parse_options(params)


def _preferences(request: Request) -> dict[str, str]:
    """The request's preferences, by lower-case name (every Prefer header, comma-separated)."""
    prefs: dict[str, str] = {}
    for header in request.headers.getlist("prefer"):
        for pref in header.split(","):
            name, _, value = pref.split(";")[0].strip().partition("=")
            if name:
                prefs.setdefault(name.strip().lower(), value.strip().strip('"'))
    return prefs


def _max_page_size(request: Request, prefs: dict[str, str]) -> tuple[int, list[str]]:
    """The page size and the preferences applied for it."""
    cap = _state(request).max_page_size
    value = prefs.get("odata.maxpagesize", "")
    if value.isdigit() and 1 <= int(value) <= cap:
        return int(value), [f"odata.maxpagesize={int(value)}"]
    return cap, []


def _applied(preferences: list[str]) -> dict[str, str]:
    return {"Preference-Applied": ", ".join(preferences)} if preferences else {}


def _entity_set_url(request: Request) -> str:
    # Delta links are absolute: a client keeps them and uses them later as they are.
    return f"{request.url.scheme}://{request.url.netloc}/odata/{ENTITY_SET}"


async def service_root(request: Request) -> Response:
    if (denied := _auth_failure(request)) is not None:
        return denied
    plan, fault = await _apply_faults(request, "service", None)
    return fault or _finish(dumps(service_document()), plan)


async def metadata(request: Request) -> Response:
    if (denied := _auth_failure(request)) is not None:
        return denied
    plan, fault = await _apply_faults(request, "metadata", None)
    xml = metadata_xml(_state(request).track_changes)
    return fault or _finish(xml.encode(), plan, media_type="application/xml")


def _unknown_set(name: str) -> Response:
    if name.startswith(ENTITY_SET + "("):
        return odata_error(501, "NotImplemented", "access by key is not supported; use $filter")
    return odata_error(404, "NotFound", f"Resource not found for the segment '{name}'")


async def _admit(request: Request, kind: str) -> Response | tuple:
    """Auth, entity set, query options and faults: a Response to send, or (query, plan)."""
    if (denied := _auth_failure(request)) is not None:
        return denied
    name = request.path_params["name"]
    if name != ENTITY_SET:
        return _unknown_set(name)
    try:
        q = _parse(request)
    except QueryError as exc:
        return odata_error(exc.status, exc.code, exc.message)
    if isinstance(q, DeltaRequest):
        kind = "delta"  # tagged apart in the request log: a test counts delta reads
    plan, fault = await _apply_faults(request, kind, q.original_skip if kind == "collection" else None)
    return fault if fault is not None else (q, plan)


def _wants_tracking(prefs: dict[str, str]) -> bool:
    return "odata.track-changes" in prefs or "track-changes" in prefs  # 4.01 allows the bare name


async def entity_set(request: Request) -> Response:
    admitted = await _admit(request, "collection")
    if isinstance(admitted, Response):
        return admitted
    q, plan = admitted
    prefs = _preferences(request)
    page_size, applied = _max_page_size(request, prefs)
    state = _state(request)
    if isinstance(q, DeltaRequest):
        return await _delta(request, q, plan, page_size, applied)
    # A read is tracked from its first page on (the version is in its nextLinks); asking
    # on a continuation alone would miss the changes its earlier pages did not see.
    tracked = state.track_changes and (
        q.delta_start is not None or (not q.continuation and _wants_tracking(prefs)))
    if tracked and _wants_tracking(prefs):
        applied.append("odata.track-changes")
    try:
        page = await run_in_threadpool(build_page, state.dataset, q, page_size, plan,
                                       _entity_set_url(request) if tracked else None)
    except pl.exceptions.PolarsError as exc:
        return odata_error(400, "BadRequest", f"query could not be evaluated: {exc}")
    if any(k.endswith("deltaLink") for k in page.tail):
        state.stats.count_delta("links_issued")
    return _finish(page.to_bytes(), plan, headers=_applied(applied))


async def _delta(request: Request, req: DeltaRequest, plan: Plan, page_size: int, applied: list[str]) -> Response:
    state = _state(request)
    state.stats.count_delta("delta_requests")
    try:
        page = await run_in_threadpool(build_delta_page, state.dataset, req, page_size, plan, state.delta_format,
                                       _entity_set_url(request))
    except pl.exceptions.PolarsError as exc:
        return odata_error(400, "BadRequest", f"delta could not be evaluated: {exc}")
    if isinstance(page, Gone):
        state.stats.count_delta("gone")
        return odata_error(410, "DeltaTokenExpired",
                           "the delta link has expired or the change history was reset; read the entity set again")
    if any(k.endswith("deltaLink") for k in page.tail):
        state.stats.count_delta("links_issued")
    # `@removed` is 4.01 JSON; a 4.0 payload ($deletedEntity) is what OData-Version 4.0 says.
    version = {"OData-Version": "4.01"} if state.delta_format == "4.01" else {}
    return _finish(page.to_bytes(), plan, headers={**_applied(applied), **version})


async def entity_count(request: Request) -> Response:
    admitted = await _admit(request, "count")
    if isinstance(admitted, Response):
        return admitted
    q, plan = admitted
    try:
        n = await run_in_threadpool(count, _state(request).dataset, q)
    except pl.exceptions.PolarsError as exc:
        return odata_error(400, "BadRequest", f"query could not be evaluated: {exc}")
    return _finish(str(n).encode(), plan, media_type="text/plain")


async def not_found(request: Request) -> Response:
    if (denied := _auth_failure(request)) is not None:
        return denied
    return odata_error(404, "NotFound", f"no resource at {request.url.path}")


class DemoApp:
    """Outer ASGI app: request-id echo, statistics, raw send for the drop fault."""

    def __init__(self, state: ServiceState) -> None:
        self.state = state
        routes = [
            Route("/odata", service_root, methods=["GET"]),
            Route("/odata/", service_root, methods=["GET"]),
            Route("/odata/$metadata", metadata, methods=["GET"]),
            Route("/odata/{name}/$count", entity_count, methods=["GET"]),
            Route("/odata/{name}", entity_set, methods=["GET"]),
            Route("/odata/{rest:path}", not_found, methods=["GET"]),
            *admin.routes(),
        ]
        self.router = Starlette(routes=routes)
        self.router.state.demo = state

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.router(scope, receive, send)
            return
        scope["demo.raw_send"] = send
        request_id = next((v for k, v in scope.get("headers", []) if k == b"x-request-id"), None)
        seen: dict = {}
        started = time.time()
        odata = scope.get("path", "").startswith("/odata")
        if odata:
            self.state.stats.begin()

        async def send_wrapper(message) -> None:
            if message["type"] == "http.response.start":
                seen["status"] = message["status"]
                if request_id is not None:
                    message = {**message, "headers": [*message.get("headers", []), (b"x-request-id", request_id)]}
            await send(message)

        try:
            await self.router(scope, receive, send_wrapper)
        finally:
            if odata:
                self.state.stats.end()
                self.state.stats.record(
                    {
                        "method": scope.get("method"),
                        "path": scope.get("path"),
                        "query": scope.get("query_string", b"").decode("latin-1"),
                        "status": "dropped" if scope.get("demo.dropped") else seen.get("status", 500),
                        "request_id": request_id.decode("latin-1") if request_id else None,
                        "endpoint": scope.get("demo.endpoint"),
                        "skip": scope.get("demo.skip"),
                        # wall-clock seconds: which requests were in flight together
                        "started": started,
                        "ended": time.time(),
                    }
                )
