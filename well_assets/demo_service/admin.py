"""Admin endpoints (JSON, no token): bad rows, faults, data changes, reset, statistics.

    GET    /admin/bad-rows   [{"kind", "WellCode", "ProductionDate", "index", "record"}]
    GET    /admin/faults     active rules;  PUT /admin/faults  (list of rules, replaces all)
    POST   /admin/rows       list of OData records: upsert by key, new keys in key order
    DELETE /admin/rows       list of {"WellCode", "ProductionDate"}
    POST   /admin/reset      generated data again (a new change history), no faults, fresh statistics
    POST   /admin/delta/expire  every delta link (and delta nextLink) issued so far answers 410
    GET    /admin/stats      request counts per status/endpoint, rows, fault firings, change tracking
    GET    /admin/requests   the last 1000 OData requests (query, status, request id, skip)
"""

from __future__ import annotations

import json

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from .faults import FaultRuleError


def _state(request: Request):
    return request.app.state.demo


def _bad(message: str, status: int = 400) -> JSONResponse:
    return JSONResponse({"error": {"code": "BadRequest", "message": message}}, status_code=status)


async def _json_list(request: Request) -> list:
    try:
        body = json.loads(await request.body() or b"null")
    except json.JSONDecodeError as exc:
        raise ValueError(f"body is not valid JSON: {exc}") from None
    if not isinstance(body, list):
        raise ValueError("body must be a JSON list")
    return body


async def bad_rows(request: Request) -> JSONResponse:
    return JSONResponse(await run_in_threadpool(_state(request).bad_rows))


async def get_faults(request: Request) -> JSONResponse:
    return JSONResponse(_state(request).get_faults())


async def put_faults(request: Request) -> JSONResponse:
    try:
        rules = await _json_list(request)
        _state(request).set_faults(rules)
    except (ValueError, FaultRuleError) as exc:
        return _bad(str(exc))
    return JSONResponse(_state(request).get_faults())


async def upsert_rows(request: Request) -> JSONResponse:
    try:
        records = await _json_list(request)
        result = await run_in_threadpool(_state(request).upsert, records)
    except ValueError as exc:
        return _bad(str(exc))
    return JSONResponse(result)


async def delete_rows(request: Request) -> JSONResponse:
    try:
        keys = await _json_list(request)
        if not all(isinstance(k, dict) for k in keys):
            raise ValueError('each key must be {"WellCode": ..., "ProductionDate": ...}')
        result = await run_in_threadpool(_state(request).delete, keys)
    except ValueError as exc:
        return _bad(str(exc))
    return JSONResponse(result)


async def reset(request: Request) -> JSONResponse:
    state = _state(request)
    await run_in_threadpool(state.reset)
    return JSONResponse({"reset": True, "rows": state.row_count})


async def expire_deltas(request: Request) -> JSONResponse:
    return JSONResponse(await run_in_threadpool(_state(request).expire_deltas))


async def stats(request: Request) -> JSONResponse:
    return JSONResponse(_state(request).stats_snapshot())


async def requests(request: Request) -> JSONResponse:
    return JSONResponse(_state(request).stats.recent_requests())


def routes() -> list[Route]:
    return [
        Route("/admin/bad-rows", bad_rows, methods=["GET"]),
        Route("/admin/faults", get_faults, methods=["GET"]),
        Route("/admin/faults", put_faults, methods=["PUT"]),
        Route("/admin/rows", upsert_rows, methods=["POST"]),
        Route("/admin/rows", delete_rows, methods=["DELETE"]),
        Route("/admin/reset", reset, methods=["POST"]),
        Route("/admin/delta/expire", expire_deltas, methods=["POST"]),
        Route("/admin/stats", stats, methods=["GET"]),
        Route("/admin/requests", requests, methods=["GET"]),
    ]
