"""The only place where well-assets touches Dagster's private internals, and why.

Each use buys a measured speed-up that no public API gives (docs/benchmarks.md has the
figures), checks that the internals still look the way it expects, and otherwise falls
back to the public way, which is correct, only slower. ``well_assets_tests/defs/
test_dagster_internals.py`` fails loudly when a Dagster upgrade takes the fast path away,
so the fallback is never a silent slow-down.

1. ``add_partition_metadata``: per-page metadata from the IO manager. The public
   ``add_asset_metadata(md, partition_key=k)`` re-reads every key of the dynamic partitions
   from the instance to check that ``k`` is targeted: O(pages) per call, O(pages^2) per
   run (seconds for a 500-page run).
2. ``one_planned_event_per_run``: a ranged run on the CLI's throwaway instance logs one
   "planned" event for its whole range instead of one per page (Dagster's
   ``DAGSTER_EMIT_PARTITION_SUBSET_IN_PLANNED_EVENTS``). Nobody looks at a
   throwaway instance's partition statuses; with DAGSTER_HOME it is not used.
3. ``reuse_event_log_connection``: the throwaway instance's in-memory event log writes
   over the SQLite connection it already holds instead of opening one (and running two
   PRAGMAs) per event.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import dagster as dg

PLANNED_EVENTS_FLAG = "DAGSTER_EMIT_PARTITION_SUBSET_IN_PLANNED_EVENTS"


def add_partition_metadata(context: dg.OutputContext, partition_key: str, metadata: Mapping[str, Any]) -> bool:
    """Adds ``metadata`` to the materialization of ``partition_key`` of the output's asset
    (the caller only passes keys of the run's range). Returns True on the fast path."""
    step_context = context.step_context
    accumulator = getattr(step_context, "_metadata_accumulator", None)
    if accumulator is None or not hasattr(accumulator, "with_additional_asset_metadata"):
        step_context.add_asset_metadata(metadata, partition_key=partition_key)
        return False
    step_context._metadata_accumulator = accumulator.with_additional_asset_metadata(  # noqa: SLF001
        asset_key=context.asset_key, metadata=metadata, partition_key=partition_key
    )
    return True


@contextmanager
def one_planned_event_per_run() -> Iterator[None]:
    """Within the block, a ranged run logs one planned event for its range."""
    saved = os.environ.get(PLANNED_EVENTS_FLAG)
    os.environ[PLANNED_EVENTS_FLAG] = "1"
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop(PLANNED_EVENTS_FLAG, None)
        else:
            os.environ[PLANNED_EVENTS_FLAG] = saved


def reuse_event_log_connection(instance: dg.DagsterInstance) -> bool:
    """Lets an ephemeral instance's in-memory event log reuse the connection it holds
    (same database, same statements, same lock). Returns True when it did."""
    storage = getattr(instance, "_event_storage", None)
    held = getattr(storage, "_held_conn", None)
    lock = getattr(storage, "_db_lock", None)
    if type(storage).__name__ != "InMemoryEventLogStorage" or held is None or lock is None:
        return False

    @contextmanager
    def connect():
        with lock, held.begin():
            yield held

    storage._connect = connect  # noqa: SLF001
    return True
