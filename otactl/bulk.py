"""Bulk commands and Python's cycle collector.

A million-device command (``fleet import``, ``rollout plan``) keeps millions of small objects alive
(records, index rows, statements). The cycle collector's full passes scan every live object, and they
come more often the more objects are allocated: at 1M devices they were ~40% of an import's time.
Records, rows and statements hold no reference cycles (what they hold is strings, tuples and each
other, freed by reference counting), so these commands pause the collector while they run and
collect once at the end. tests/unit/fleet/test_bulk_gc.py checks that imports and plans leave no cycles.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def collector_paused() -> Iterator[None]:
    """No cycle collection inside the block (reference counting still frees everything else); one
    collection after it. A block inside another leaves the collector to the outer one."""
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()
        gc.collect()
