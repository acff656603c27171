"""The `demo-server` command: run the demo OData service in the foreground.

`well_assets/cli.py` registers it with `demo_service.cli.add_parser(subparsers)`;
`python -m well_assets.demo_service` runs the same parser standalone. The service URL is
printed (and flushed) once the server accepts connections; Ctrl-C or SIGTERM stops it.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
from typing import Any, Callable

TOKEN_ENV = "DEMO_ODATA_TOKEN"


def _number(kind: type, lo: float, hi: float | None, allowed: str) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not valid; allowed: {allowed}") from None
        if value < lo or (hi is not None and value > hi) or value != value:
            raise argparse.ArgumentTypeError(f"{text!r} is out of range; allowed: {allowed}")
        return value

    return parse


def _fault(text: str) -> dict:
    from .faults import FaultRuleError, parse_rule

    try:
        spec = json.loads(text)
        parse_rule(spec)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(
            f"not valid JSON ({exc.msg}); allowed: a JSON rule object such as "
            '\'{"kind": "status", "status": 503, "times": 1}\''
        ) from None
    except FaultRuleError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return spec


def configure_parser(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    p.add_argument("--host", default="127.0.0.1", help="interface to bind (default 127.0.0.1)")
    p.add_argument("--port", type=_number(int, 0, 65535, "an integer 0..65535 (0: any free port)"), default=8000,
                   help="TCP port (default 8000; 0 picks a free one)")
    p.add_argument("--rows", type=_number(int, 0, 50_000_000, "an integer 0..50000000"), default=150_000,
                   help="records to serve (default 150000 = 300 wells x 500 days)")
    p.add_argument("--bad-rows", type=_number(float, 0.0, 0.5, "a fraction 0.0..0.5"), default=0.0,
                   metavar="RATE", help="fraction of salted bad records (default 0)")
    p.add_argument("--seed", type=_number(int, 0, 2**63 - 1, "a non-negative integer"), default=42,
                   help="data seed (default 42)")
    p.add_argument("--max-page-size", type=_number(int, 1, 1_000_000, "an integer 1..1000000"), default=5000,
                   help="server-driven page size cap (default 5000)")
    p.add_argument("--token", default=None,
                   help=f"require 'Authorization: Bearer TOKEN' on /odata (default: env {TOKEN_ENV}, else open)")
    p.add_argument("--fault", type=_fault, action="append", default=[], metavar="JSON",
                   help="a fault rule as JSON, repeatable; see docs/demo-service.md")
    p.add_argument("--latency", type=_number(float, 0.0, 600.0, "seconds 0..600"), default=None,
                   metavar="SECONDS", help="add this delay to every OData response")
    p.add_argument("--rate-limit", type=_number(float, 0.001, None, "a positive number of requests"), default=None,
                   metavar="PER_SECOND", help="answer 429 (Retry-After: 1) above this many requests per second")
    p.add_argument("--delta-format", choices=["4.01", "4.0"], default="4.01",
                   help="removed entries of delta responses: 4.01 '@removed' with key properties (default), "
                        "or 4.0 '$deletedEntity' with an id only")
    p.add_argument("--no-change-tracking", dest="track_changes", action="store_false",
                   help="ignore 'Prefer: odata.track-changes' (no delta links), like a service without support")
    p.add_argument("--delta-retention", type=_number(int, 1, 1_000_000_000, "an integer 1..1000000000"),
                   default=None, metavar="VERSIONS",
                   help="keep this many data versions of change history; older delta links answer 410 "
                        "(default: all)")
    p.add_argument("--log-level", choices=["critical", "error", "warning", "info", "debug"], default="warning")
    return p


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "demo-server",
        help="run the bundled OData v4 demo service",
        description="Serve generated well production data as OData v4 (with optional faults).",
    )
    configure_parser(p)
    p.set_defaults(func=run, handler=run)
    return p


def build_config(args: argparse.Namespace):
    from .config import DemoServiceConfig

    faults = list(args.fault)
    if args.latency:
        faults.append({"kind": "latency", "seconds": args.latency})
    if args.rate_limit:
        faults.append({"kind": "rate_limit", "per_second": args.rate_limit, "retry_after": 1})
    return DemoServiceConfig(
        rows=args.rows,
        bad_rows=args.bad_rows,
        seed=args.seed,
        max_page_size=args.max_page_size,
        token=args.token or os.environ.get(TOKEN_ENV) or None,
        faults=faults,
        host=args.host,
        port=args.port,
        log_level=args.log_level,
        track_changes=args.track_changes,
        delta_format=args.delta_format,
        delta_retention=args.delta_retention,
    )


def run(args: argparse.Namespace) -> int:
    from well_assets.errors import ConfigError

    from .server import DemoServer

    try:
        server = DemoServer(build_config(args))
        server.start()
    except ConfigError as exc:
        print(f"demo-server: {exc.message}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"demo-server: cannot listen on --host {args.host} --port {args.port}: {exc.strerror or exc}",
              file=sys.stderr)
        return 1
    stop = threading.Event()
    previous = {s: signal.signal(s, lambda *_: stop.set()) for s in (signal.SIGINT, signal.SIGTERM)}
    cfg = server.config
    print(
        f"Demo OData service ready at {server.base_url}/ (entity set WellProduction, rows={server.state.row_count}, "
        f"bad_rows={cfg.bad_rows}, seed={cfg.seed}, max_page_size={cfg.max_page_size}, "
        f"auth={'bearer' if cfg.token else 'none'}, faults={len(cfg.faults)}, "
        f"change_tracking={cfg.delta_format if cfg.track_changes else 'off'}); admin at {server.admin_url}",
        flush=True,
    )
    try:
        while not stop.wait(0.5):
            if not server.running:
                print("demo-server: server thread exited", file=sys.stderr)
                return 1
    finally:
        server.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = configure_parser(argparse.ArgumentParser(prog="python -m well_assets.demo_service",
                                                      description="Run the bundled OData v4 demo service."))
    return run(parser.parse_args(argv))
