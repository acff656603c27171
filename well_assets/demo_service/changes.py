"""The dataset's change log: which keys changed at which data version (OData change tracking).

Every mutation of the dataset appends (version, key) entries, the key as served
(WellCode, ProductionDate text). A delta link names a point in one *history* (a random id)
and a version; the log answers "which keys changed in (since, upto]" while that point is
still covered. A history ends when the data is reset or every link is expired on purpose;
its links then answer 410 Gone, as a real service's do once their token is forgotten.
"""

from __future__ import annotations

import bisect
import secrets
import threading
from collections import OrderedDict
from typing import Iterable

ServedKey = tuple["str | None", "str | None"]  # (WellCode, ProductionDate as served)


def key_order(key: ServedKey) -> tuple:
    """OData's ascending order, nulls first (None does not compare with str)."""
    wc, d = key
    return (wc is not None, wc or "", d is not None, d or "")


class ChangeLog:
    """Append-only (version, key) entries of one history; thread-safe.

    ``floor`` is the lowest version from which every later change is logged: a link at a
    version below it (or of another history) can no longer be answered.
    """

    def __init__(self, retention: int | None = None) -> None:
        self._lock = threading.Lock()
        self.retention = retention
        self._versions: list[int] = []
        self._keys: list[ServedKey] = []
        self.history = secrets.token_hex(8)
        self.floor = 0
        self.version = 0
        # The pages of one delta ask for the same range: its sorted keys are kept, not
        # recomputed per page (entries of a range never change while it is covered).
        self._ranges: OrderedDict[tuple, tuple[ServedKey, ...]] = OrderedDict()

    def restart(self, version: int) -> None:
        """A new history from ``version`` on: every link issued before answers 410."""
        with self._lock:
            # Random, not a counter: another server on the same port (a restarted embedded
            # service) must not accept this one's links.
            self.history = secrets.token_hex(8)
            self._versions, self._keys = [], []
            self._ranges.clear()
            self.floor = self.version = version

    def record(self, version: int, keys: Iterable[ServedKey]) -> None:
        with self._lock:
            for key in keys:
                self._versions.append(version)
                self._keys.append(key)
            self.version = version
            if self.retention is not None and version - self.retention > self.floor:
                self.floor = version - self.retention
                cut = bisect.bisect_right(self._versions, self.floor)
                del self._versions[:cut], self._keys[:cut]

    def position(self) -> tuple[str, int]:
        """(history, version) of the latest logged state."""
        with self._lock:
            return self.history, self.version

    def covers(self, history: str, since: int) -> bool:
        with self._lock:
            return history == self.history and since >= self.floor

    def changed(self, history: str, since: int, upto: int) -> tuple[ServedKey, ...] | None:
        """The distinct keys changed in (since, upto], in key order; None: no longer covered."""
        with self._lock:
            if history != self.history or since < self.floor:
                return None
            hit = self._ranges.get((since, upto))
            if hit is not None:
                self._ranges.move_to_end((since, upto))
                return hit
            lo = bisect.bisect_right(self._versions, since)
            hi = bisect.bisect_right(self._versions, upto)
            keys = set(self._keys[lo:hi])
        result = tuple(sorted(keys, key=key_order))
        with self._lock:
            if history == self.history and upto <= self.version:
                self._ranges[(since, upto)] = result
                while len(self._ranges) > 8:
                    self._ranges.popitem(last=False)
        return result

    def snapshot(self) -> dict:
        with self._lock:
            return {"version": self.version, "oldest_version": self.floor, "entries": len(self._versions),
                    "retention": self.retention}
