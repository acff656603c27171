"""On-disk cache of raw OData page responses.

Re-running a page (a retried Dagster step, a backfill re-run shortly after)
should not hit the source again. Entries are keyed by a hash of the full
request - method, absolute URL with query, and a hash of the auth identity -
so two users never share entries and no secret is stored, not even in a file
name. Only successful, fully parsed bodies are written, atomically (temp file +
os.replace) so a crash never leaves a half-written entry that a later run would
parse as a page. Expiry is by file age (mtime) against the TTL.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import time
from pathlib import Path


def auth_identity(token: str | None, username: str | None, password: str | None) -> str:
    """A stable, non-reversible identity of the credentials ('' when anonymous)."""
    if token is not None:
        raw = "bearer\0" + token
    elif username is not None:
        raw = "basic\0" + username + "\0" + (password or "")
    else:
        return ""
    return hashlib.sha256(raw.encode()).hexdigest()


def cache_key(method: str, url: str, identity: str) -> str:
    return hashlib.sha256(f"{method.upper()}\n{url}\n{identity}".encode()).hexdigest()


class ResponseCache:
    def __init__(self, directory: str, ttl_seconds: float) -> None:
        self.directory = Path(directory)
        self.ttl_seconds = ttl_seconds

    def _path(self, key: str) -> Path:
        return self.directory / key[:2] / f"{key}.json"

    def get(self, key: str) -> bytes | None:
        path = self._path(key)
        try:
            age = time.time() - path.stat().st_mtime
            if age > self.ttl_seconds:
                return None
            return path.read_bytes()
        except OSError:
            return None  # missing or unreadable: a miss, never a failure

    def put(self, key: str, body: bytes) -> None:
        path = self._path(key)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".part")
            try:
                with os.fdopen(fd, "wb") as fh:
                    fh.write(body)
                os.replace(tmp, path)
            except BaseException:
                try:
                    os.unlink(tmp)
                except OSError:
                    pass
                raise
        except OSError:
            pass  # a cache that cannot be written must not fail the import
