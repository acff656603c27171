"""Deterministic fault injection for the demo OData service.

Rules are JSON objects, given at start (`DemoServiceConfig.faults`, CLI `--fault JSON`,
repeatable) or at runtime with `PUT /admin/faults` (a list; replaces all rules and their
counters). `GET /admin/faults` returns the active rules.

Kinds (each produces exactly the fault it names and nothing else):

- `{"kind": "status", "status": 503, "retry_after": "1", "retry_after_format": "seconds"}`
  answer `status` (400..599) with an OData error body; `Retry-After` only when
  `retry_after` is given (seconds, or an HTTP date with `"retry_after_format": "http-date"`).
- `{"kind": "rate_limit", "per_second": 5, "retry_after": 1, "retry_after_format": "seconds"}`
  429 with `Retry-After` (seconds, or `"http-date"`) once more than `per_second` matching
  requests arrived within the current wall-clock second.
- `{"kind": "latency", "seconds": 0.05}` delay the response (the response is otherwise normal).
- `{"kind": "truncate"}` 200 with the normal body cut in half (Content-Length matches the cut body).
- `{"kind": "error_body"}` 200 whose body is `{"error": {"code", "message"}}`.
- `{"kind": "drop"}` close the TCP connection without sending any response.
- `{"kind": "loop_next_link"}` every `@odata.nextLink` points back to the page just served.
- `{"kind": "foreign_next_link", "host": "http://127.0.0.2:9"}` nextLink on another host.
- `{"kind": "rename", "from": "OilProduction", "to": "OilProd"}` the property is renamed
  in every record of the page (a malformed page).
- `{"kind": "decimals_as_strings"}` Edm.Decimal values as JSON strings ("408.123").
- `{"kind": "annotations_401"}` `@context`, `@count`, `@nextLink` (no `odata.` prefix).
- `{"kind": "trailing_empty_page"}` the last non-empty page carries a nextLink to an empty
  page (which has no nextLink).
- `{"kind": "change", "delete": [{"WellCode": ..., "ProductionDate": ...}], "upsert": [records]}`
  the data changes just before the matching request is answered, as a live source changes
  while an import reads it (give `skip` and `times: 1` to change it once, mid-import).

Matchers, on any rule (all given ones must pass; none: every OData request):

- `skip`: list of `$skip` values of the ORIGINAL request (a continuation `$skiptoken`
  request matches by its original request's skip). Only entity-set requests have a skip,
  so a rule with `skip` never fires on `$metadata`, the service document or `/$count`.
- `fraction` + `seed` (default 0): fires for a seeded pseudo-random fraction of the
  requests the rule sees, decided by the rule's own request sequence number n = 0, 1, ...
  so the same request sequence always gives the same firings.
- `times`: fire at most this many times (default unlimited).

Applicability: status, rate_limit, latency, truncate, error_body and drop apply to every
OData request (service document, `$metadata`, `/$count`, entity set, delta links); the
payload kinds (links, rename, decimals_as_strings, annotations_401) only to entity-set
and delta responses. A delta request has no skip, so rules with `skip` never fire on it.
Rules are evaluated in list order; the first firing status/rate_limit/error_body/drop
decides the response and later rules are not evaluated for that request (their
counters do not advance). Auth is checked before faults.
"""

from __future__ import annotations

import email.utils
import random
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from .generate import PROPS

TERMINAL = ("status", "rate_limit", "error_body", "drop")
PAYLOAD = ("loop_next_link", "foreign_next_link", "rename", "decimals_as_strings", "annotations_401", "trailing_empty_page")
ANY_REQUEST = ("latency", "truncate", "change", *TERMINAL)
KINDS = (*ANY_REQUEST, *PAYLOAD)
_MATCHERS = {"kind", "skip", "times", "fraction", "seed"}
_FIELDS = {
    "status": {"status", "retry_after", "retry_after_format", "code", "message"},
    "rate_limit": {"per_second", "retry_after", "retry_after_format"},
    "latency": {"seconds"},
    "foreign_next_link": {"host"},
    "rename": {"from", "to"},
    "change": {"delete", "upsert"},
}


class FaultRuleError(ValueError):
    pass


@dataclass
class Rule:
    spec: dict[str, Any]
    kind: str
    skip: frozenset[int] | None = None
    times: int | None = None
    fraction: float | None = None
    seed: int = 0
    seen: int = 0
    fired: int = 0
    window: tuple[int, int] = (0, 0)  # (second, arrivals) for rate_limit

    def matches(self, kind: str, skip: int | None) -> bool:
        if self.kind in PAYLOAD and kind not in ("collection", "delta"):
            return False
        if self.skip is not None and (skip is None or skip not in self.skip):
            return False
        if self.times is not None and self.fired >= self.times:
            return False
        if self.fraction is not None:
            n, self.seen = self.seen, self.seen + 1
            if random.Random(self.seed * 1_000_003 + n).random() >= self.fraction:
                return False
        return True


@dataclass
class Plan:
    """What the faults decided for one request."""

    delay: float = 0.0
    terminal: Rule | None = None
    truncate: bool = False
    renames: list[tuple[str, str]] = field(default_factory=list)
    decimals_as_strings: bool = False
    annotations_401: bool = False
    loop_next_link: bool = False
    foreign_host: str | None = None
    trailing_empty_page: bool = False
    changes: list[dict[str, Any]] = field(default_factory=list)  # data changes to apply first


def _number(rule: dict, name: str, lo: float, hi: float, default: Any = None, integer: bool = False) -> Any:
    value = rule.get(name, default)
    ok = isinstance(value, int) if integer else isinstance(value, (int, float))
    if isinstance(value, bool) or not ok or not (lo <= value <= hi):
        kind = "an integer" if integer else "a number"
        raise FaultRuleError(f"fault rule {rule!r}: '{name}' must be {kind} from {lo} to {hi}")
    return value


def parse_rule(spec: Any) -> Rule:
    if not isinstance(spec, dict):
        raise FaultRuleError(f"a fault rule must be a JSON object, got {spec!r}")
    kind = spec.get("kind")
    if kind not in KINDS:
        raise FaultRuleError(f"fault rule {spec!r}: 'kind' must be one of {', '.join(KINDS)}")
    unknown = set(spec) - _MATCHERS - _FIELDS.get(kind, set())
    if unknown:
        allowed = sorted(_MATCHERS | _FIELDS.get(kind, set()))
        raise FaultRuleError(f"fault rule {spec!r}: unknown field(s) {sorted(unknown)}; allowed: {allowed}")
    rule = Rule(spec=dict(spec), kind=kind)
    if "skip" in spec:
        skips = spec["skip"]
        if not isinstance(skips, list) or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in skips):
            raise FaultRuleError(f"fault rule {spec!r}: 'skip' must be a list of non-negative integers")
        rule.skip = frozenset(skips)
    if "times" in spec:
        rule.times = _number(spec, "times", 0, 10**9, integer=True)
    if "fraction" in spec:
        rule.fraction = float(_number(spec, "fraction", 0.0, 1.0))
    if "seed" in spec:
        rule.seed = _number(spec, "seed", 0, 2**63, integer=True)
    if kind == "status":
        _number(spec, "status", 400, 599, integer=True)
    if kind == "rate_limit":
        _number(spec, "per_second", 0, 10**9)
        _number(spec, "retry_after", 0, 86400, default=1)
    if kind in ("status", "rate_limit") and spec.get("retry_after_format", "seconds") not in ("seconds", "http-date"):
        raise FaultRuleError(f"fault rule {spec!r}: 'retry_after_format' must be 'seconds' or 'http-date'")
    if kind == "latency":
        _number(spec, "seconds", 0, 600)
    if kind == "foreign_next_link" and not isinstance(spec.get("host", "http://127.0.0.2:9"), str):
        raise FaultRuleError(f"fault rule {spec!r}: 'host' must be a URL string like http://127.0.0.2:9")
    if kind == "rename":
        if spec.get("from") not in PROPS:
            raise FaultRuleError(f"fault rule {spec!r}: 'from' must be one of {', '.join(PROPS)}")
        if not isinstance(spec.get("to"), str) or not spec["to"]:
            raise FaultRuleError(f"fault rule {spec!r}: 'to' must be a non-empty string")
    if kind == "change":
        for name in ("delete", "upsert"):
            items = spec.get(name, [])
            if not isinstance(items, list) or not all(isinstance(item, dict) for item in items):
                raise FaultRuleError(f"fault rule {spec!r}: '{name}' must be a list of records")
    return rule


def parse_rules(specs: Any) -> list[Rule]:
    if not isinstance(specs, list):
        raise FaultRuleError(f"faults must be a JSON list of rule objects, got {specs!r}")
    return [parse_rule(s) for s in specs]


def retry_after_value(spec: dict[str, Any], default: Any = None) -> str | None:
    value = spec.get("retry_after", default)
    if value is None:
        return None
    if spec.get("retry_after_format") == "http-date":
        return email.utils.formatdate(time.time() + float(value), usegmt=True)
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return str(value)


class FaultSet:
    """The active rules and their counters; thread-safe."""

    def __init__(self, specs: list[dict] | None = None, clock: Callable[[], float] = time.time) -> None:
        self._lock = threading.Lock()
        self._rules = parse_rules(list(specs or []))
        self.clock = clock  # the rate limit's wall clock (tests give it a fake one)

    def replace(self, specs: Any) -> None:
        rules = parse_rules(specs)  # validate everything before replacing anything
        with self._lock:
            self._rules = rules

    def specs(self) -> list[dict]:
        with self._lock:
            return [dict(r.spec) for r in self._rules]

    def fired(self) -> list[dict]:
        with self._lock:
            return [{"kind": r.kind, "fired": r.fired, "seen": r.seen} for r in self._rules]

    def evaluate(self, kind: str, skip: int | None) -> Plan:
        """Decide the faults for one OData request of `kind` (collection|delta|count|metadata|service)."""
        plan = Plan()
        with self._lock:
            for rule in self._rules:
                if rule.kind == "rate_limit" and not self._over_limit(rule, skip):
                    continue
                if not rule.matches(kind, skip):
                    continue
                rule.fired += 1
                s = rule.spec
                if rule.kind in TERMINAL:
                    plan.terminal = rule
                    break
                if rule.kind == "latency":
                    plan.delay += float(s["seconds"])
                elif rule.kind == "truncate":
                    plan.truncate = True
                elif rule.kind == "rename":
                    plan.renames.append((s["from"], s["to"]))
                elif rule.kind == "change":
                    plan.changes.append(s)
                elif rule.kind == "foreign_next_link":
                    plan.foreign_host = s.get("host", "http://127.0.0.2:9").rstrip("/")
                else:
                    setattr(plan, rule.kind, True)
        return plan

    def _over_limit(self, rule: Rule, skip: int | None) -> bool:
        """Count the arrival in the current wall-clock second; True once above the limit."""
        if rule.skip is not None and (skip is None or skip not in rule.skip):
            return False
        now = int(self.clock())
        second, arrivals = rule.window
        arrivals = arrivals + 1 if second == now else 1
        rule.window = (now, arrivals)
        return arrivals > rule.spec["per_second"]
