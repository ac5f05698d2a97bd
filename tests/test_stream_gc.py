"""The stream gc job of `serve` (gc_tuning.keep_streams_frozen): while streams are open, what survived since the
last round is collected and frozen, so no collection walks the streams' objects (5,000 streams: 0.7-1.5 s full and
50-90 ms middle collections otherwise), and after heavy churn everything is thawed and collected once, so the
cycles closed streams leave are not kept."""

from __future__ import annotations

import gc
import logging
from types import SimpleNamespace

import pytest
import trio

from commhub_lib.runtime import gc_tuning
from commhub_lib.runtime.gc_tuning import stream_gc_step


def test_nothing_to_do_with_few_streams() -> None:
    assert stream_gc_step(0, 0, 0, 0) is None
    assert stream_gc_step(gc_tuning.FREEZE_MIN_STREAMS - 1, 0, 100, 10) is None


def test_sweep_every_round_while_streams_are_open() -> None:
    """Not only when streams grew: each waiting stream's current wait survives into the middle generation, which
    then held ~50,000 objects at 5,000 streams (50-90 ms collections) unless swept and frozen round after round."""
    assert stream_gc_step(5000, 5000, 5000, 0) == "sweep"
    assert stream_gc_step(5040, 5000, 5040, 300) == "sweep"  # grew by < FREEZE_MIN_STREAMS, churn < 25 %
    assert stream_gc_step(4000, 5000, 5000, 1000) == "sweep"


def test_freeze_without_a_collection_while_streams_open_fast() -> None:
    assert stream_gc_step(gc_tuning.FREEZE_MIN_STREAMS, 0, 0, 0) == "freeze"
    assert stream_gc_step(5050, 5000, 5050, 0) == "freeze"


def test_thaw_after_a_quarter_of_the_peak_closed() -> None:
    assert stream_gc_step(5000, 5000, 5000, 1251) == "thaw"
    assert stream_gc_step(3750, 5000, 5000, 1251) == "thaw"
    assert stream_gc_step(150, 150, 100, 51) == "thaw"  # at least FREEZE_MIN_STREAMS closed
    assert stream_gc_step(150, 150, 150, 50) == "sweep"


def test_thaw_at_least_once_an_hour() -> None:
    """What became cyclic garbage after a freeze (parts of requests in flight then) is not kept for ever."""
    assert stream_gc_step(5000, 5000, 5000, 0, gc_tuning.THAW_ROUNDS - 1) == "sweep"
    assert stream_gc_step(5000, 5000, 5000, 0, gc_tuning.THAW_ROUNDS) == "thaw"
    assert gc_tuning.THAW_ROUNDS * gc_tuning.FREEZE_CHECK_SECONDS == 3600


async def test_the_job_freezes_as_streams_open_and_thaws_after_churn(autojump_clock: trio.abc.Clock,
                                                                     caplog: pytest.LogCaptureFixture) -> None:
    broker = SimpleNamespace(streams_opened=0, streams_closed=0, closing=False)
    caplog.set_level(logging.INFO, logger="commhub")
    thresholds = gc.get_threshold()
    try:
        ended = trio.Event()

        async def job() -> None:
            await gc_tuning.keep_streams_frozen(broker)  # type: ignore[arg-type]
            ended.set()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(job)
            await trio.sleep(gc_tuning.FREEZE_CHECK_SECONDS * 1.5)
            assert gc.get_freeze_count() == 0  # no stream yet: nothing done
            broker.streams_opened = 1000
            await trio.sleep(gc_tuning.FREEZE_CHECK_SECONDS)
            frozen = gc.get_freeze_count()
            assert frozen > 0
            # The same streams, waiting anew: what they allocate is frozen at the next round, not left to the
            # middle generation.
            waits = [[] for _ in range(1000)]
            await trio.sleep(gc_tuning.FREEZE_CHECK_SECONDS)
            assert gc.get_freeze_count() >= frozen + len(waits)
            # The job runs the middle collections itself meanwhile; CPython's own are put off.
            assert gc.get_threshold()[1] == gc_tuning.MIDDLE_WHILE_SWEEPING
            broker.streams_closed = 300  # 30 % of the 1,000 frozen closed
            await trio.sleep(gc_tuning.FREEZE_CHECK_SECONDS)
            broker.closing = True  # shutdown: the job ends and does nothing more
            broker.streams_closed = 1000
            with trio.fail_after(gc_tuning.FREEZE_CHECK_SECONDS * 2):
                await ended.wait()
        assert gc.get_threshold() == gc_tuning.THRESHOLDS
    finally:
        gc.unfreeze()  # this test process's objects go back to the collector
        gc.set_threshold(*thresholds)
    steps = [r.getMessage() for r in caplog.records if r.getMessage().startswith("gc: ")]
    assert [s.split(" at ")[0] for s in steps] == ["gc: freeze", "gc: thaw"], steps
    assert "at 1000 open stream(s)" in steps[0] and "at 700 open stream(s)" in steps[1], steps
