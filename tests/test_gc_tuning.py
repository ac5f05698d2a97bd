"""The garbage-collector settings `serve` applies after start-up, and the log line for a slow collection."""

from __future__ import annotations

import gc
import logging
from collections.abc import Iterator

import pytest

from commhub_lib.runtime import gc_tuning


@pytest.fixture
def restore_gc() -> Iterator[None]:
    before = gc.get_threshold()
    yield
    gc.set_threshold(*before)
    gc.unfreeze()
    if gc_tuning._time_collection in gc.callbacks:
        gc.callbacks.remove(gc_tuning._time_collection)


def test_startup_objects_are_frozen_and_young_collections_are_rarer(restore_gc: None) -> None:
    gc_tuning.tune_after_startup()
    assert gc.get_threshold() == gc_tuning.THRESHOLDS
    assert gc.get_freeze_count() > 1000  # modules, the app, pydantic schemas
    gc_tuning.tune_after_startup()  # idempotent: one timing callback
    assert gc.callbacks.count(gc_tuning._time_collection) == 1


def test_a_collection_that_pauses_the_server_is_logged(monkeypatch: pytest.MonkeyPatch,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    clock = iter([10.0, 10.120, 20.0, 20.001])
    monkeypatch.setattr(gc_tuning, "_clock", lambda: next(clock))
    gc.disable()  # no real collection may call the timing callback (if registered) with the fake clock
    try:
        with caplog.at_level(logging.WARNING, logger="commhub.gc"):
            gc_tuning._time_collection("start", {"generation": 2})
            gc_tuning._time_collection("stop", {"generation": 2, "collected": 7})
            gc_tuning._time_collection("start", {"generation": 0})
            gc_tuning._time_collection("stop", {"generation": 0, "collected": 0})
    finally:
        gc.enable()
    assert [r.getMessage() for r in caplog.records] == [
        "garbage collection of generation 2 paused the server 120 ms (7 objects freed)"]
