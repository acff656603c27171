"""Sensor ticks and schedule evaluations as the daemon performs them, and their runs.

A tick is evaluated with the definitions' resources open (as the code server does); what
the daemon applies after it (the partition requests, the cursor) is applied here, and the
requested runs can be executed in process with the request's tags, as the daemon's run
would be launched.
"""

from __future__ import annotations

import datetime as dt

import dagster as dg

SENSOR = "odata_page_sensor"
SCHEDULE = "odata_nightly_refresh"
START = "dagster/asset_partition_range_start"
END = "dagster/asset_partition_range_end"


def page_keys(first: int, last: int) -> list[str]:
    return [f"{k:05d}" for k in range(first, last + 1)]


def execute(defs: dg.Definitions, instance, requests) -> list[dg.ExecuteInProcessResult]:
    """Each request's run of `odata_import_job`, one after the other."""
    job = defs.resolve_job_def("odata_import_job")
    return [job.execute_in_process(instance=instance, tags=request.tags, raise_on_error=False)
            for request in requests]


def sensor_tick(defs: dg.Definitions, instance, cursor: str | None):
    """One evaluation of the sensor, with its partition requests applied: (result, the
    cursor the daemon keeps)."""
    sensor = defs.resolve_sensor_def(SENSOR)
    with dg.build_sensor_context(instance=instance, definitions=defs, cursor=cursor,
                                 resources=defs.resources) as context:
        result = sensor(context)
    if isinstance(result, dg.SkipReason):
        return result, cursor
    for request in result.dynamic_partitions_requests or []:
        instance.add_dynamic_partitions(request.partitions_def_name, list(request.partition_keys))
    return result, (result.cursor if result.cursor is not None else cursor)


def run_requests(result) -> list[dg.RunRequest]:
    return list(result.run_requests or []) if isinstance(result, dg.SensorResult) else []


def skip_message(result) -> str:
    """The reason a tick or evaluation requested nothing (fails if it requested runs)."""
    if isinstance(result, dg.SkipReason):
        return result.skip_message
    assert isinstance(result, dg.SensorResult) and not result.run_requests, result
    return result.skip_reason.skip_message


def refresh(defs: dg.Definitions, instance, when: dt.datetime | None = None):
    """One evaluation of the nightly refresh at ``when`` (a list of run requests or a skip)."""
    schedule = defs.resolve_schedule_def(SCHEDULE)
    with dg.build_schedule_context(instance=instance, repository_def=defs.get_repository_def(),
                                   resources=defs.resources,
                                   scheduled_execution_time=when or dt.datetime(2026, 1, 2, 2, tzinfo=dt.UTC)
                                   ) as context:
        result = schedule(context)
    return result if isinstance(result, (list, dg.SkipReason)) else [result]
