"""Response cache: keys, TTL, atomic writes, no secrets on disk."""

from __future__ import annotations

import os
import time

from well_assets.odata.cache import ResponseCache, auth_identity, cache_key


def test_roundtrip_and_ttl(tmp_path):
    cache = ResponseCache(str(tmp_path), ttl_seconds=60)
    key = cache_key("GET", "http://h/odata/E?$skip=0", "")
    assert cache.get(key) is None
    cache.put(key, b'{"value": []}')
    assert cache.get(key) == b'{"value": []}'
    path = next(p for p in tmp_path.rglob("*.json"))
    old = time.time() - 120
    os.utime(path, (old, old))
    assert cache.get(key) is None  # expired


def test_key_depends_on_method_url_and_identity():
    base = cache_key("GET", "http://h/e?$skip=0", "")
    assert base != cache_key("GET", "http://h/e?$skip=1000", "")
    assert base != cache_key("HEAD", "http://h/e?$skip=0", "")
    assert base != cache_key("GET", "http://h/e?$skip=0", auth_identity("t", None, None))
    assert auth_identity("t1", None, None) != auth_identity("t2", None, None)
    assert auth_identity(None, "u", "p1") != auth_identity(None, "u", "p2")
    assert auth_identity(None, None, None) == ""


def test_no_secret_and_no_temp_files_left_on_disk(tmp_path):
    cache = ResponseCache(str(tmp_path), ttl_seconds=60)
    ident = auth_identity("tok-SECRET", None, None)
    assert "SECRET" not in ident
    for i in range(5):
        cache.put(cache_key("GET", f"http://h/e?$skip={i}", ident), b"{}")
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert len(files) == 5 and not any(p.name.startswith(".tmp-") for p in files)
    for p in files:
        assert b"SECRET" not in p.read_bytes() and "SECRET" not in str(p)


def test_unwritable_cache_is_not_an_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    cache = ResponseCache(str(blocker), ttl_seconds=60)  # a file, not a directory
    cache.put("ab" * 32, b"{}")
    assert cache.get("ab" * 32) is None
