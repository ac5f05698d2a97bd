"""Garbage-collector settings for a server that holds many long-lived objects (open streams, sessions).

CPython's collector pauses the whole process, and so the event loop: a full collection walks every
tracked object (~200 per open stream: with 5,000 streams, 0.6 s). What helps, measured
(docs/performance.md#garbage-collection-with-thousands-of-streams):
- `gc.freeze()` once start-up is done: imported modules, the app and its routes move to a generation the
  collector never walks again;
- a larger young generation: a request allocates a few thousand container objects, so the default
  threshold (700) ran a young collection several times per request;
- a log line for every collection longer than `SLOW_COLLECTION_MS`, so a stall has a visible cause;
- `keep_streams_frozen`, a background job of `serve`: while streams are open, it runs the middle collection
  itself twice a second and freezes what survives (while streams open fast, it only freezes); everything is
  thawed and collected once after heavy churn.
"""

from __future__ import annotations

import gc
import logging
import time
from typing import TYPE_CHECKING, Any

import trio

if TYPE_CHECKING:
    from ..broker import Broker

log = logging.getLogger("commhub.gc")

# (young, middle, old): a young collection after 2,500 net allocations instead of 700, a middle one after 40 young
# ones, so the full-collection rule is checked after 1 M net allocations, as with (10,000, 10, 10). Not 10,000 young:
# the count is net of every tracked object freed, old ones included, and with thousands of streams the objects of
# their heartbeat waits (frozen or old) die all the time, so a young collection at 10,000 found 36,000-78,000
# objects in the young generation and paused the server 18-53 ms
# (docs/performance.md#garbage-collection-with-thousands-of-streams).
THRESHOLDS = (2_500, 40, 10)
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


# Streams live for hours, and each holds ~150 objects the collector tracks (hypercorn's connection, trio's tasks and
# scopes, our loop): with 5,000 open, every full collection walked ~1 M objects and paused the server 0.7-1.5 s, the
# whole tail of wake latency at 200 sends/s (docs/performance.md#garbage-collection-with-thousands-of-streams). Frozen
# objects are never walked, and freezing costs nothing (CPython splices its lists). Freezing only as streams accumulated
# was not enough: each
# waiting stream's current wait (its receive, deadline and cancel scope: ~10 objects) is replaced at every event and
# heartbeat, survives a young collection, and so the middle generation held every stream's current wait: 50-90 ms
# middle collections with 5,000 streams at 200 sends/s (same page). So while streams are open the job runs the middle
# collection itself, twice a second ("sweep": only what survived since its last round, a few ms) and freezes what
# is left; CPython's own middle collections are then put off (MIDDLE_WHILE_SWEEPING). While streams are opening
# fast ("freeze": they grew by FREEZE_MIN_STREAMS or more since the last round) the new streams' objects are frozen
# without a collection, so an open storm does not walk them either.
# A closed stream's objects are freed by reference counting, except ~27 in cycles, which a frozen generation keeps
# (as it keeps whatever became cyclic garbage after it was frozen, such as parts of requests in flight at a
# freeze): so after enough churn, and at least once an hour, everything is thawed and collected once (the pause
# CPython would have taken anyway) and frozen again. Measured (`bench/stream_open_cost.py --soak 60
# --soak-pollers 200 --soak-no-churn`: 1,000 streams, 200 agents long-polling, 13 mixed rounds a second): ~1,600
# unreachable objects kept after a minute, as many as CPython's own collections had left by then (same page).
FREEZE_CHECK_SECONDS = 0.5
FREEZE_MIN_STREAMS = 50  # below this, CPython's own collections stay short
MIDDLE_WHILE_SWEEPING = 1_000  # young collections between CPython's own middle ones while the job sweeps
FREEZE_LOG_GROWTH = 0.02  # a round is logged (INFO) once open streams grew by this fraction + FREEZE_MIN_STREAMS
THAW_CHURN = 0.25  # thaw + collect once this fraction of the most streams open since the last thaw has closed
THAW_ROUNDS = 7_200  # ... or after this many rounds (an hour)


def stream_gc_step(open_now: int, open_before: int, peak: int, closed_since: int, rounds_since: int = 0) -> str | None:
    """What the stream gc job does now: "thaw" (unfreeze, collect everything, freeze), "freeze" (streams are
    opening fast: freeze), "sweep" (collect the young and middle generations, freeze) or None (few streams);
    `open_before` = streams open at the last round, `peak` = the most streams open since the last thaw,
    `closed_since` = streams closed since then, `rounds_since` = rounds that froze something since then."""
    if peak and closed_since > max(FREEZE_MIN_STREAMS, peak * THAW_CHURN) or rounds_since >= THAW_ROUNDS:
        return "thaw"
    if open_now < FREEZE_MIN_STREAMS:
        return None
    return "freeze" if open_now >= open_before + FREEZE_MIN_STREAMS else "sweep"


async def keep_streams_frozen(broker: Broker) -> None:
    """Background job of the process's own server (root nursery): while streams are open, run the middle
    collection twice a second and freeze what survives; after heavy churn, thaw and collect once (a full
    collection's pause). Stops at shutdown (the streams all close then: a thaw would only delay the exit)."""
    open_before = peak = closed_at = logged_at = rounds = 0
    try:
        while not broker.closing:
            await trio.sleep(FREEZE_CHECK_SECONDS)
            open_now = broker.streams_opened - broker.streams_closed
            peak = max(peak, open_now)
            step = stream_gc_step(open_now, open_before, peak, broker.streams_closed - closed_at, rounds)
            open_before = open_now
            if step is None or broker.closing:
                gc.set_threshold(*THRESHOLDS)
                continue
            started = trio.current_time()
            gc.set_threshold(THRESHOLDS[0], MIDDLE_WHILE_SWEEPING, THRESHOLDS[2])
            if step == "thaw":
                gc.unfreeze()
                gc.collect()
                peak, closed_at, rounds = open_now, broker.streams_closed, 0
            else:
                rounds += 1
                if step == "sweep":
                    gc.collect(1)
            gc.freeze()
            took_ms = (trio.current_time() - started) * 1000
            # (not gc.get_freeze_count(): it walks every frozen object, 140 ms at 5,000 streams)
            if step == "thaw" or open_now > logged_at * (1 + FREEZE_LOG_GROWTH) + FREEZE_MIN_STREAMS:
                logged_at = open_now
                log.info("gc: %s at %d open stream(s), %.0f ms", step, open_now, took_ms)
    finally:
        gc.set_threshold(*THRESHOLDS)
