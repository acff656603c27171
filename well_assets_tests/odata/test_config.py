"""ClientConfig.validate(): every bad setting is named with its allowed values, before any request."""

from __future__ import annotations

import pytest

from well_assets.errors import ConfigError, PaginationError
from well_assets.odata import ClientConfig, ODataClient

try:  # works whether or not well_assets_tests is a package
    from well_assets_tests.odata_helpers import RecordingServer
except ImportError:
    from odata_helpers import RecordingServer

OK = "http://127.0.0.1:9/odata"


@pytest.mark.parametrize(
    ("overrides", "setting", "allowed_fragment"),
    [
        ({"page_size": 0}, "page_size", "1..5000"),
        ({"page_size": 5001}, "page_size", "1..5000"),
        ({"page_size": True}, "page_size", "1..5000"),
        ({"page_size": 10.0}, "page_size", "1..5000"),
        ({"base_url": "ftp://host/odata"}, "base_url", "http:// or https://"),
        ({"base_url": "host/odata"}, "base_url", "http:// or https://"),
        ({"base_url": "http:///odata"}, "base_url", "with a host"),
        ({"base_url": "http://h/odata?x=1"}, "base_url", "no credentials, query"),
        ({"base_url": "http://h:99999/odata"}, "base_url", "http://"),
        ({"entity_set": "Well Production"}, "entity_set", "[A-Za-z_]"),
        ({"entity_set": "Wells?$top=1"}, "entity_set", "[A-Za-z_]"),
        ({"entity_set": "../admin"}, "entity_set", "[A-Za-z_]"),
        ({"entity_set": ""}, "entity_set", "[A-Za-z_]"),
        ({"orderby": "WellCode; drop"}, "orderby", "property names"),
        ({"select": "a b"}, "select", "property names"),
        ({"filter": "x eq 1\r\nHost: evil"}, "filter", "control characters"),
        ({"filter": "  "}, "filter", "non-empty"),
        ({"connect_timeout": -1.0}, "connect_timeout", "> 0"),
        ({"read_timeout": 0}, "read_timeout", "> 0"),
        ({"read_timeout": float("nan")}, "read_timeout", "> 0"),
        ({"max_retries": -1}, "max_retries", "0..100"),
        ({"max_retries": 1.5}, "max_retries", "0..100"),
        ({"backoff_base": -0.1}, "backoff_base", ">= 0"),
        ({"backoff_cap": 0.1, "backoff_base": 1.0}, "backoff_cap", ">= backoff_base"),
        ({"min_interval": -1}, "min_interval", ">= 0"),
        ({"max_retry_after": -5}, "max_retry_after", ">= 0"),
        ({"cache_ttl_seconds": -1}, "cache_ttl_seconds", ">= 0"),
        ({"cache_dir": ""}, "cache_dir", "directory"),
        ({"run_id": "has space"}, "run_id", "[A-Za-z0-9._:-]"),
        ({"run_id": "x\nInjected: 1"}, "run_id", "[A-Za-z0-9._:-]"),
        ({"username": "u"}, "password", "username/password"),
        ({"password": "p"}, "username", "username/password"),
        ({"adaptive_throttle": "yes"}, "adaptive_throttle", "True or False"),
    ],
)
def test_invalid_settings_are_named_with_allowed_values(overrides, setting, allowed_fragment):
    cfg = ClientConfig(**{"base_url": OK, **overrides})
    with pytest.raises(ConfigError) as info:
        cfg.validate()
    err = info.value
    assert err.setting == setting
    assert setting in str(err) and allowed_fragment in str(err)
    assert err.to_dict()["error"]["code"] == "VALIDATION_ERROR"
    assert err.to_dict()["error"]["details"]["setting"] == setting


@pytest.mark.parametrize("page_size", [1, 5000])
def test_page_size_bounds_are_inclusive(page_size):
    ClientConfig(base_url="https://example.com/odata/", page_size=page_size).validate()


def test_secrets_never_echoed_by_validation_or_repr():
    for cfg in (
        ClientConfig(base_url=OK, token="tok-SECRET-1", username="u", password="pw-SECRET-2"),
        ClientConfig(base_url="http://u:pw-SECRET-2@h/odata"),
        ClientConfig(base_url=OK, token="tok-SECRET-1\n"),
    ):
        with pytest.raises(ConfigError) as info:
            cfg.validate()
        rendered = str(info.value) + repr(info.value.to_dict()) + repr(cfg)
        assert "SECRET" not in rendered


def test_invalid_config_sends_no_request():
    with RecordingServer() as srv:
        with pytest.raises(ConfigError):
            ODataClient(ClientConfig(base_url=srv.base + "/odata", page_size=0))
        assert srv.requests == [] and srv.connections == 0


@pytest.mark.parametrize("page", [-1, -100, True, 1.0, "3", None])
def test_invalid_page_number_is_a_pagination_error_without_request(page):
    with RecordingServer() as srv:
        with ODataClient(ClientConfig(base_url=srv.base + "/odata")) as client:
            with pytest.raises(PaginationError) as info:
                client.fetch_page(page)
        assert info.value.to_dict()["error"]["code"] == "PAGINATION_ERROR"
        assert srv.requests == []
