"""Test helpers for the OData client: a recording loopback HTTP server and demo-service glue.

RecordingServer answers with a scripted handler and keeps the raw request lines
and headers exactly as they arrived, so tests can assert what went on the wire
(percent-encoding, headers) and that a "foreign host" received nothing.
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Iterator

import httpx

Handler = Callable[["Seen"], tuple[int, dict[str, str], bytes]]


@dataclass
class Seen:
    method: str
    raw_target: str  # the request-target exactly as received (not decoded)
    headers: dict[str, str]


@dataclass
class RecordingServer:
    handler: Handler | None = None
    requests: list[Seen] = field(default_factory=list)
    connections: int = 0

    def __post_init__(self) -> None:
        outer = self

        class _H(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:  # noqa: N802
                seen = Seen("GET", self.path, {k: v for k, v in self.headers.items()})
                outer.requests.append(seen)
                answer = (outer.handler or _empty_collection)(seen)
                if answer is None:  # drop: close the connection without any response
                    self.close_connection = True
                    return
                status, headers, body = answer
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        class _S(ThreadingHTTPServer):
            daemon_threads = True

            def get_request(self):  # count TCP connections, even those that send nothing
                outer.connections += 1
                return super().get_request()

        self._server = _S(("127.0.0.1", 0), _H)
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.02,), daemon=True)

    @property
    def base(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> RecordingServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()


def _empty_collection(seen: Seen) -> tuple[int, dict[str, str], bytes]:
    return 200, {"Content-Type": "application/json"}, b'{"value": []}'


def json_response(payload: Any, status: int = 200, headers: dict[str, str] | None = None):
    return status, {"Content-Type": "application/json", **(headers or {})}, json.dumps(payload).encode()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- demo service glue -------------------------------------------------------------


@contextlib.contextmanager
def demo(rows: int = 300, faults: list[dict] | None = None, **kw: Any) -> Iterator[Any]:
    """A running demo service (imported lazily: it is another engineer's module)."""
    from well_assets.demo_service import DemoServer, DemoServiceConfig

    with DemoServer(DemoServiceConfig(rows=rows, faults=list(faults or []), **kw)) as srv:
        yield srv


def set_faults(srv: Any, faults: list[dict]) -> None:
    r = httpx.put(f"{srv.admin_url}/faults", json=faults, timeout=10)
    r.raise_for_status()


def stats(srv: Any) -> dict:
    r = httpx.get(f"{srv.admin_url}/stats", timeout=10)
    r.raise_for_status()
    return r.json()


def wait_until(predicate: Callable[[], bool], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return predicate()


# -- a minimal scripted OData service for wire-level tests -----------------------------


def make_rows(n: int) -> list[dict]:
    return [
        {"WellCode": f"WELL_{i // 10 + 1:03d}", "ProductionDate": f"2023-01-{i % 10 + 1:02d}",
         "OilProduction": i * 1.5, "GasProduction": i, "WaterProduction": None}
        for i in range(n)
    ]


def mini_odata(rows: list[dict], cap: int = 10**9, next_link: Callable[[int, int], str] | None = None,
               count_key: str = "@odata.count", link_key: str = "@odata.nextLink") -> Handler:
    """Serve rows with $skip/$top, capping responses at `cap` rows with a relative nextLink.

    next_link(position, remaining_top) may override the link text (absolute, looping, foreign...).
    """
    from urllib.parse import parse_qs, urlsplit

    def handler(seen: Seen):
        parts = urlsplit(seen.raw_target)
        q = {k: v[0] for k, v in parse_qs(parts.query).items()}
        if parts.path.endswith("/$count"):
            return 200, {"Content-Type": "text/plain"}, str(len(rows)).encode()
        if "$skiptoken" in q:
            pos, top = (int(x) for x in q["$skiptoken"].split("-"))
        else:
            pos, top = int(q.get("$skip", 0)), int(q.get("$top", len(rows)))
        n = min(top, cap)
        payload: dict[str, Any] = {"@odata.context": "$metadata#WellProduction"}
        if q.get("$count") == "true":
            payload[count_key] = len(rows)
        payload["value"] = [dict(r, **{"@odata.etag": "W/1"}) for r in rows[pos:pos + n]]
        if n < top and pos + n < len(rows):
            payload[link_key] = (next_link(pos + n, top - n) if next_link
                                 else f"WellProduction?$skiptoken={pos + n}-{top - n}")
        return json_response(payload)

    return handler
