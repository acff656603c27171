"""defs/dagster_internals.py: every shortcut through Dagster's private internals still
takes its fast path on the pinned Dagster, and its result is the public path's.

These tests are meant to fail loudly on a Dagster upgrade that changes the internals:
the code then falls back to the public (slower) way, and this says so.
"""

from __future__ import annotations

import dagster as dg
import pytest

from well_assets.defs.dagster_internals import (
    add_partition_metadata,
    one_planned_event_per_run,
    reuse_event_log_connection,
)

KEYS = ["a", "b", "c", "d"]
RANGE = {"dagster/asset_partition_range_start": "a", "dagster/asset_partition_range_end": "d"}


class _RecordingIOManager(dg.IOManager):
    """Adds per-partition metadata from handle_output, as the project's IO manager does."""

    fast_paths: list[bool] = []

    def handle_output(self, context: dg.OutputContext, obj) -> None:
        for key in context.asset_partition_keys:
            self.fast_paths.append(add_partition_metadata(context, key, {"rows": len(key) + KEYS.index(key)}))

    def load_input(self, context):  # pragma: no cover - nothing downstream
        return None


def _job(io_manager=None):
    parts = dg.StaticPartitionsDefinition(KEYS)

    @dg.asset(partitions_def=parts, backfill_policy=dg.BackfillPolicy.single_run())
    def paged(context) -> int:
        return len(context.partition_keys)

    return dg.Definitions(assets=[paged], resources={"io_manager": io_manager or _RecordingIOManager()}
                          ).resolve_implicit_global_asset_job_def()


def test_partition_metadata_takes_the_fast_path_and_lands_on_each_partition():
    manager = _RecordingIOManager()
    manager.fast_paths.clear()
    with dg.instance_for_test() as instance:
        assert _job(manager).execute_in_process(instance=instance, tags=RANGE).success
        records = instance.fetch_materializations(dg.AssetKey("paged"), limit=10).records
    assert manager.fast_paths == [True] * 4, "Dagster's metadata accumulator changed: public path taken"
    assert {r.partition_key: r.asset_materialization.metadata["rows"].value for r in records} == {
        "a": 1, "b": 2, "c": 3, "d": 4}


def _planned_events(instance, run_id: str) -> int:
    return len(instance.all_logs(run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION_PLANNED))


@pytest.mark.parametrize("flag", [False, True])
def test_one_planned_event_per_ranged_run(flag):
    with dg.instance_for_test() as instance:
        if flag:
            with one_planned_event_per_run():
                result = _job().execute_in_process(instance=instance, tags=RANGE)
        else:
            result = _job().execute_in_process(instance=instance, tags=RANGE)
        assert result.success
        assert _planned_events(instance, result.run_id) == (1 if flag else 4), "Dagster's planned-events flag changed"
        records = instance.fetch_materializations(dg.AssetKey("paged"), limit=10).records
        assert sorted(r.partition_key for r in records) == KEYS  # every partition still materialized


def test_the_throwaway_event_log_reuses_its_connection_and_stores_every_event(monkeypatch):
    with dg.DagsterInstance.ephemeral() as instance:
        assert reuse_event_log_connection(instance), "Dagster's in-memory event log changed"
        storage = instance._event_storage  # noqa: SLF001 - what this test is about
        connects = []
        engine_connect = storage._engine.connect  # noqa: SLF001
        monkeypatch.setattr(storage._engine, "connect", lambda *a, **k: connects.append(1) or engine_connect(*a, **k))
        result = _job().execute_in_process(instance=instance, tags=RANGE)
        assert result.success
        records = instance.fetch_materializations(dg.AssetKey("paged"), limit=10).records
        assert sorted(r.partition_key for r in records) == KEYS
        stored = len(instance.all_logs(result.run_id))
    # Without the shared connection every stored event opened one or two connections.
    assert stored > 10 and len(connects) < stored / 2
