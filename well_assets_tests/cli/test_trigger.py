"""`well-assets trigger`: argument validation and range planning (no server needed).

The launch itself is exercised against a real webserver and daemon in live/test_webserver.py and live/test_launch_paths.py.
"""

from __future__ import annotations

import argparse
import json
import socket

import pytest

from well_assets.cli import trigger
from well_assets.errors import ConfigError


def parse(*argv: str):
    parser = argparse.ArgumentParser(prog="well-assets")
    sub = parser.add_subparsers(dest="command", required=True)
    trigger.add_parser(sub)
    return parser.parse_args(["trigger", *argv])


def keys(first: int, last: int) -> list[str]:
    return [f"{k:05d}" for k in range(first, last + 1)]


@pytest.mark.parametrize(
    "url, expected",
    [
        ("http://127.0.0.1:3000", ("http://127.0.0.1:3000", "127.0.0.1", 3000, False, "")),
        ("http://127.0.0.1:3000/", ("http://127.0.0.1:3000", "127.0.0.1", 3000, False, "")),
        ("http://127.0.0.1:3000/graphql", ("http://127.0.0.1:3000", "127.0.0.1", 3000, False, "")),
        ("https://dagster.example.com/team/", ("https://dagster.example.com/team", "dagster.example.com", None, True, "/team")),
    ],
)
def test_parse_endpoint(url, expected):
    e = trigger.parse_endpoint(url)
    assert (e.url, e.hostname, e.port, e.use_https, e.path_prefix) == expected
    assert e.graphql_url == expected[0] + "/graphql"


@pytest.mark.parametrize("url", ["127.0.0.1:3000", "ftp://host", "http://", "http://host:99999", "http://h/?q=1", ""])
def test_bad_urls_are_refused(url):
    with pytest.raises(ConfigError, match=r"--url.*http:// or https:// URL"):
        trigger.parse_endpoint(url)


@pytest.mark.parametrize(
    "argv, flag, allowed",
    [
        (["--start-page", "-1"], "--start-page", "a whole number >= 0"),
        (["--start-page", "x"], "--start-page", "a whole number >= 0"),
        (["--max-pages", "0"], "--max-pages", "a whole number >= 1"),
        (["--max-pages", "2.5"], "--max-pages", "a whole number >= 1"),
        (["--timeout", "0"], "--timeout", "a number of seconds > 0"),
        (["--url", "localhost:3000"], "--url", "an http:// or https:// URL"),
        (["--location", " "], "--location", "a non-empty name"),
    ],
)
def test_bad_arguments_exit_2_naming_flag_and_allowed_values(argv, flag, allowed, capsys):
    assert trigger.run(parse(*argv)) == trigger.EXIT_USAGE
    err = capsys.readouterr().err
    assert flag in err and allowed in err


def test_bad_arguments_as_json(capsys):
    assert trigger.run(parse("--max-pages", "0", "--json")) == trigger.EXIT_USAGE
    out = json.loads(capsys.readouterr().out)
    assert out["success"] is False and out["error"]["code"] == "VALIDATION_ERROR"
    assert out["error"]["details"]["setting"] == "--max-pages"


def test_unreachable_webserver_is_a_clear_error(capsys):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    assert trigger.run(parse("--url", f"http://127.0.0.1:{port}", "--max-pages", "1")) == trigger.EXIT_FAILED
    err = capsys.readouterr().err
    assert f"cannot talk to the Dagster webserver at http://127.0.0.1:{port}" in err
    assert "dagster-webserver running" in err


def test_defaults():
    args = parse()
    assert args.url == "http://127.0.0.1:3000" and args.start_page == "0" and args.max_pages is None
    assert args.location == "well_assets" and args.repository is None and not args.wait


# -- plan_range --------------------------------------------------------------------------

def test_max_pages_adds_missing_keys_from_zero_in_order():
    to_add, first, last = trigger.plan_range([], 2, 3)
    assert to_add == keys(0, 4)  # 00000 upward: insertion order must stay page order
    assert (first, last) == ("00002", "00004")


def test_max_pages_adds_only_what_is_missing():
    to_add, first, last = trigger.plan_range(keys(0, 5), 4, 4)
    assert to_add == keys(6, 7) and (first, last) == ("00004", "00007")
    assert trigger.plan_range(keys(0, 9), 0, 10) == ([], "00000", "00009")


def test_without_max_pages_uses_registered_keys_from_start():
    assert trigger.plan_range(keys(0, 149), 0, None) == ([], "00000", "00149")
    assert trigger.plan_range(keys(0, 149), 147, None) == ([], "00147", "00149")


def test_without_max_pages_and_nothing_registered_is_an_error():
    with pytest.raises(trigger.TriggerError, match="no page partitions of odata_pages are registered at all.*--max-pages"):
        trigger.plan_range([], 0, None)
    with pytest.raises(trigger.TriggerError, match=r"from page 7 on \(the last registered page is 00004\)"):
        trigger.plan_range(keys(0, 4), 7, None)


def test_keys_out_of_order_are_refused():
    with pytest.raises(trigger.TriggerError, match="not contiguous and in ascending page order"):
        trigger.plan_range(keys(5, 9) + keys(0, 4), 0, None)
