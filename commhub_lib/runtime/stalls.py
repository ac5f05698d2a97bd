"""A log line for every stall of the event loop: every agent's calls and wake-ups wait while it is held.

Everything the server does runs on one trio event loop, so any single step that holds it (a slow query, a
garbage collection, a burst of thousands of connections becoming ready at once) delays every request and
every wake-up by as long. The collector's own pauses are logged by runtime/gc_tuning.py; this job sees all the others
too, and says which kind it was: the loop's thread busy running code (CPU) or the process held off the CPU
(the machine overloaded, a blocking call, the VM not scheduled). That split is what an operator needs to
decide between "the hub is doing too much" and "the machine is".
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import trio

from ..config import Settings

log = logging.getLogger("commhub.stall")

TICK_SECONDS = 0.025  # how often the job asks to run: 40 wake-ups a second, a few µs each
LOG_EVERY_SECONDS = 1.0  # at most one line a second; the stalls in between are counted in it
BUSY_SHARE = 0.5  # the thread ran this share of a stall or more: it was busy, not held off the CPU


class StallLog:
    """Stalls seen since the last line, written at most once per LOG_EVERY_SECONDS."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self.clock = clock
        self.logged_at = float("-inf")
        self.count = 0
        self.worst_ms = 0.0
        self.worst_cpu_ms = 0.0
        self.total = 0  # every stall since start (tests and benchmarks read it)

    def add(self, late_ms: float, cpu_ms: float) -> None:
        """Count one stall; write the line if the last one was long enough ago."""
        self.total += 1
        self.count += 1
        if late_ms > self.worst_ms:
            self.worst_ms, self.worst_cpu_ms = late_ms, cpu_ms
        self.flush(force=False)

    def flush(self, force: bool) -> None:
        """Write the pending stalls' line (now if `force`, else only once a second has passed since the last)."""
        now = self.clock()
        if not self.count or (not force and now - self.logged_at < LOG_EVERY_SECONDS):
            return
        what = ("busy: the loop's thread ran code all along" if self.worst_cpu_ms >= BUSY_SHARE * self.worst_ms else
                "held off the CPU: an overloaded machine, a blocking call, or the VM not scheduled")
        more = f" (and {self.count - 1} more since the last line)" if self.count > 1 else ""
        log.warning("the event loop stalled %.0f ms, %s (its thread ran %.0f ms of CPU meanwhile)%s",
                    self.worst_ms, what, self.worst_cpu_ms, more)
        self.logged_at = now
        self.count = 0
        self.worst_ms = self.worst_cpu_ms = 0.0


async def log_loop_stalls(stalls: StallLog | None = None, *, tick: float = TICK_SECONDS,
                          threshold_ms: float = Settings.stall_log_ms,
                          thread_cpu: Callable[[], float] = time.thread_time,
                          closing: Callable[[], bool] = lambda: False,
                          on_stall: Callable[[float], None] | None = None) -> None:
    """Background job of the process's own server (root nursery): wake every `tick` seconds and log every time
    the wake came `threshold_ms` or more late, i.e. every time the event loop could not run a ready task. Ends
    when `closing()` turns true (a shutdown closing thousands of streams holds the loop by design). `on_stall`
    is told each stall's lateness in ms (the hub's metrics, commhub_lib/metrics.py)."""
    stalls = stalls or StallLog(time.perf_counter)
    clock = stalls.clock
    try:
        while not closing():
            asked, cpu = clock(), thread_cpu()
            await trio.sleep(tick)
            late_ms = (clock() - asked - tick) * 1000
            if late_ms >= threshold_ms and not closing():
                stalls.add(late_ms, (thread_cpu() - cpu) * 1000)
                if on_stall is not None:
                    on_stall(late_ms)
            elif stalls.count:
                stalls.flush(force=False)
    finally:
        stalls.flush(force=True)
