"""Garbage-collector settings for a server that holds many long-lived objects (open streams, sessions).

CPython's collector pauses the whole process, and so the event loop: a full collection walks every
tracked object (~200 per open stream: with 5,000 streams, 0.6 s). What helps, measured in
bench/RESULTS.md:
- `gc.freeze()` once start-up is done: imported modules, the app and its routes move to a generation the
  collector never walks again;
- a larger young generation: a request allocates a few thousand container objects, so the default
  threshold (700) ran a young collection several times per request;
- a log line for every collection longer than `SLOW_COLLECTION_MS`, so a stall has a visible cause.
"""

from __future__ import annotations

import gc
import logging
import time
from typing import Any

log = logging.getLogger("commhub.gc")

# (young, middle, old): a young collection after 10,000 net allocations instead of 700.
THRESHOLDS = (10_000, 10, 10)
SLOW_COLLECTION_MS = 50.0
_clock = time.perf_counter
_started: dict[int, float] = {}


def tune_after_startup() -> None:
    """Freeze what start-up created, raise the young threshold, and log slow collections."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*THRESHOLDS)
    if _time_collection not in gc.callbacks:
        gc.callbacks.append(_time_collection)


def _time_collection(phase: str, info: dict[str, Any]) -> None:
    generation = info["generation"]
    if phase == "start":
        _started[generation] = _clock()
        return
    end = _clock()
    took_ms = (end - _started.pop(generation, end)) * 1000
    if took_ms >= SLOW_COLLECTION_MS:
        log.warning("garbage collection of generation %d paused the server %.0f ms (%d objects freed)",
                    generation, took_ms, info["collected"])
