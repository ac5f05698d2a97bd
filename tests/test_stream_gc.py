"""The stream gc job of `serve` (gc_tuning.keep_streams_frozen): long-lived stream objects are frozen as streams
accumulate, so a full collection never walks them (5,000 streams: 0.7-1.5 s pauses otherwise), and after
heavy churn everything is thawed and collected once, so the cycles closed streams leave are not kept."""

from __future__ import annotations

import gc
import logging
from types import SimpleNamespace

import pytest
import trio

from commhub_lib import gc_tuning
from commhub_lib.gc_tuning import stream_gc_step


def test_nothing_to_do_with_few_streams_or_little_change() -> None:
    assert stream_gc_step(0, 0, 0) is None
    assert stream_gc_step(gc_tuning.FREEZE_MIN_STREAMS, 0, 0) is None
    assert stream_gc_step(5000, 5000, 0) is None
    assert stream_gc_step(5140, 5000, 300) is None  # grew < 2 % + 50, churn < 25 %


def test_freeze_when_streams_grew() -> None:
    assert stream_gc_step(gc_tuning.FREEZE_MIN_STREAMS + 1, 0, 0) == "freeze"
    assert stream_gc_step(5151, 5000, 0) == "freeze"


def test_thaw_after_a_quarter_of_the_frozen_streams_closed() -> None:
    assert stream_gc_step(5000, 5000, 1251) == "thaw"
    assert stream_gc_step(4000, 5000, 1251) == "thaw"  # churn wins over growth: the cycles must go
    assert stream_gc_step(150, 100, 51) == "thaw"  # at least FREEZE_MIN_STREAMS closed
    assert stream_gc_step(150, 100, 50) is None


async def test_the_job_freezes_as_streams_open_and_thaws_after_churn(autojump_clock: trio.abc.Clock,
                                                                     caplog: pytest.LogCaptureFixture) -> None:
    broker = SimpleNamespace(streams_opened=0, streams_closed=0, closing=False)
    caplog.set_level(logging.INFO, logger="commhub")
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
            broker.streams_closed = 300  # 30 % of the 1,000 frozen closed
            await trio.sleep(gc_tuning.FREEZE_CHECK_SECONDS)
            broker.closing = True  # shutdown: the job ends and does nothing more
            broker.streams_closed = 1000
            with trio.fail_after(gc_tuning.FREEZE_CHECK_SECONDS * 2):
                await ended.wait()
    finally:
        gc.unfreeze()  # this test process's objects go back to the collector
    steps = [r.getMessage() for r in caplog.records if r.getMessage().startswith("gc: ")]
    assert [s.split(" at ")[0] for s in steps] == ["gc: freeze", "gc: thaw"], steps
    assert "at 1000 open stream(s)" in steps[0] and "at 700 open stream(s)" in steps[1], steps
