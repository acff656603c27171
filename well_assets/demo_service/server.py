"""`DemoServer`: run the demo OData service with uvicorn in a background daemon thread.

The listening socket is bound here (port 0 = a free port chosen by the OS) and handed to
uvicorn, so `base_url` is known before the server starts and no port race exists.
"""

from __future__ import annotations

import socket
import threading
import time
from typing import Any

import uvicorn

from .app import DemoApp
from .config import DemoServiceConfig
from .state import ServiceState


class DemoServer:
    def __init__(self, config: DemoServiceConfig | None = None, **overrides: Any) -> None:
        if config is None:
            config = DemoServiceConfig(**overrides)
        elif overrides:
            from dataclasses import replace

            config = replace(config, **overrides)
        config.validate()
        self.config = config
        self.state = ServiceState(config)
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._sock: socket.socket | None = None
        self.port: int | None = None

    @property
    def root_url(self) -> str:
        if self.port is None:
            raise RuntimeError("DemoServer is not started")
        host = self.config.host
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{self.port}"

    @property
    def base_url(self) -> str:
        """Service root without a trailing slash, e.g. http://127.0.0.1:PORT/odata."""
        return self.root_url + "/odata"

    @property
    def admin_url(self) -> str:
        return self.root_url + "/admin"

    def start(self, timeout: float = 30.0) -> DemoServer:
        if self._thread is not None:
            return self
        family = socket.AF_INET6 if ":" in self.config.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((self.config.host, self.config.port))
        except OSError:
            sock.close()
            raise
        sock.set_inheritable(True)
        self._sock = sock
        self.port = sock.getsockname()[1]
        uv_config = uvicorn.Config(
            DemoApp(self.state),
            log_level=self.config.log_level,
            access_log=self.config.access_log,
            lifespan="off",
            proxy_headers=False,
            server_header=False,
            timeout_graceful_shutdown=2,
        )
        self._server = uvicorn.Server(uv_config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [sock]}, name=f"demo-odata-{self.port}", daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive():
                self._cleanup()
                raise RuntimeError("demo OData server failed to start (see log output)")
            if time.monotonic() > deadline:
                self.stop()
                raise TimeoutError(f"demo OData server did not start within {timeout} s")
            time.sleep(0.005)
        return self

    def stop(self, timeout: float = 10.0) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout)
        self._cleanup()

    def _cleanup(self) -> None:
        if self._sock is not None:
            self._sock.close()
        self._sock = None
        self._thread = None
        self._server = None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def __enter__(self) -> DemoServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        where = self.base_url if self.port is not None else "not started"
        return f"DemoServer({where}, rows={self.config.rows})"
