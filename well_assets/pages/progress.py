"""In-process progress hooks: how the CLI's progress bar hears about committed pages.

The IO manager calls these as it commits pages. They do nothing unless a listener is
registered, which only the CLI does when it runs the import in its own process.
"""

from __future__ import annotations

import threading
from typing import Any, Protocol


class ProgressListener(Protocol):
    def started(self, total: int) -> None: ...

    def page_done(self, figures: dict[str, Any]) -> None: ...


_listeners: list[ProgressListener] = []
_lock = threading.Lock()


def subscribe(listener: ProgressListener) -> None:
    with _lock:
        _listeners.append(listener)


def unsubscribe(listener: ProgressListener) -> None:
    with _lock:
        if listener in _listeners:
            _listeners.remove(listener)


def started(total: int) -> None:
    for listener in list(_listeners):
        listener.started(total)


def page_done(figures: dict[str, Any]) -> None:
    for listener in list(_listeners):
        listener.page_done(figures)
