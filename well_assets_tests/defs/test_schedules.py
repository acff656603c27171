"""`odata_nightly_refresh`: its run requests cover every page (what it does to the table
under change is tested in test_exact_under_change)."""

from __future__ import annotations

import datetime as dt
import socket

import dagster as dg
import pytest

from well_assets.defs.definitions import build_definitions
from well_assets.defs.schedules import build_nightly_refresh
from well_assets.errors import ConfigError
from well_assets.settings import Settings

START = "dagster/asset_partition_range_start"
END = "dagster/asset_partition_range_end"


def keys(first: int, last: int) -> list[str]:
    return [f"{k:05d}" for k in range(first, last + 1)]


def evaluate(instance, base_url: str, tmp_path, when: dt.datetime | None = None):
    defs = build_definitions(Settings(base_url=base_url, entity_set="WellProduction", page_size=1000,
                                      filter=None, database=str(tmp_path / "wells.duckdb")))
    with dg.build_schedule_context(
        instance=instance,
        scheduled_execution_time=when or dt.datetime(2026, 1, 2, 2, 0, tzinfo=dt.timezone.utc),
        repository_def=defs.get_repository_def(),
        resources=defs.resources,
    ) as context:  # the resources are open for the evaluation, as in the code server
        return odata_nightly_refresh(context)


@pytest.fixture
def instance():
    with dg.instance_for_test() as inst:
        yield inst


def test_before_the_first_import_every_page_is_registered_and_requested(instance, demo_server, tmp_path):
    source = demo_server(rows=5500, days_per_well=500)  # 6 pages: 00000..00005 (last one partial)
    [request] = evaluate(instance, source.base_url, tmp_path)
    assert (request.tags[START], request.tags[END]) == ("00000", "00005")
    assert request.tags["well_assets/trigger"] == "schedule"
    assert request.run_key and "2026-01-02" in request.run_key
    # the pages the run needs exist, registered in ascending order
    assert instance.get_dynamic_partitions("odata_pages") == keys(0, 5)


def test_every_registered_page_is_refreshed_without_asking_the_source(instance, tmp_path):
    # The pages split off a grown last page are registered by its run: the refresh covers them.
    instance.add_dynamic_partitions("odata_pages", keys(0, 7))
    with socket.socket() as s:  # no source: the refresh of known pages does not need a count
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    [request] = evaluate(instance, f"http://127.0.0.1:{port}/odata", tmp_path)
    assert (request.tags[START], request.tags[END]) == ("00000", "00007")


def test_evaluate_tick_as_the_daemon_does(instance, demo_server, tmp_path):
    source = demo_server(rows=2500, days_per_well=500)  # 3 pages, tail = all of them
    defs = build_definitions(Settings(base_url=source.base_url, entity_set="WellProduction", page_size=1000,
                                      filter=None, database=str(tmp_path / "wells.duckdb")))
    with dg.build_schedule_context(instance=instance, repository_def=defs.get_repository_def(),
                                   resources=defs.resources,
                                   scheduled_execution_time=dt.datetime(2026, 1, 3, 2, tzinfo=dt.timezone.utc)) as context:
        data = odata_nightly_refresh.evaluate_tick(context)
    [request] = data.run_requests
    assert (request.tags[START], request.tags[END]) == ("00000", "00002")
    assert request.job_name in (None, "odata_import_job")


def test_unreachable_source_skips(instance, tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    result = evaluate(instance, f"http://127.0.0.1:{port}/odata", tmp_path)
    assert isinstance(result, dg.SkipReason)
    assert result.skip_message.startswith("source unreachable: EXTERNAL_API_ERROR:")
    assert instance.get_dynamic_partitions("odata_pages") == []


def test_empty_source_skips(instance, demo_server, tmp_path):
    result = evaluate(instance, demo_server(rows=0).base_url, tmp_path)
    assert isinstance(result, dg.SkipReason) and "empty" in result.skip_message


odata_nightly_refresh = build_nightly_refresh(Settings(base_url=None))


def test_schedule_defaults():
    assert odata_nightly_refresh.cron_schedule == "0 2 * * *"
    assert odata_nightly_refresh.execution_timezone == "UTC"
    assert odata_nightly_refresh.default_status == dg.DefaultScheduleStatus.STOPPED
    assert odata_nightly_refresh.job_name == "odata_import_job"
    assert "\n" not in odata_nightly_refresh.description


def test_settings_from_env_are_validated_and_used():
    settings = Settings.from_env({"WELL_ASSETS_REFRESH_CRON": "30 1 * * 1-5",
                                  "WELL_ASSETS_REFRESH_TIMEZONE": "Europe/Oslo"})
    schedule = build_nightly_refresh(settings)
    assert (schedule.cron_schedule, schedule.execution_timezone) == ("30 1 * * 1-5", "Europe/Oslo")
    assert "30 1 * * 1-5 Europe/Oslo" in schedule.description
    with pytest.raises(ConfigError, match="WELL_ASSETS_REFRESH_CRON.*cron expression"):
        Settings.from_env({"WELL_ASSETS_REFRESH_CRON": "every night"})
    with pytest.raises(ConfigError, match="WELL_ASSETS_REFRESH_CRON.*Dagster accepts"):
        build_nightly_refresh(Settings.from_env({"WELL_ASSETS_REFRESH_CRON": "61 * * * *"}))
    with pytest.raises(ConfigError, match="WELL_ASSETS_REFRESH_TIMEZONE.*IANA"):
        Settings.from_env({"WELL_ASSETS_REFRESH_TIMEZONE": "Mars/Olympus"})
