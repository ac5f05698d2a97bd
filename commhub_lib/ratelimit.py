"""Token-bucket rate limits keyed by client IP or token id."""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass

from .errors import RateLimited


@dataclass
class _Bucket:
    tokens: float
    updated: float


class RateLimiter:
    """`per_minute` requests per key, refilled continuously, bursting up to `per_minute`. 0 = unlimited."""

    def __init__(self, per_minute: int, name: str, max_keys: int = 100_000):
        self.per_minute = per_minute
        self.name = name
        self.max_keys = max_keys
        self._buckets: dict[str, _Bucket] = {}
        # On PostgreSQL requests are checked from worker threads too (db_pg.PgDatabase.run); uncontended: ~0.1 µs.
        self._lock = threading.Lock()

    def check(self, key: str) -> None:
        """Take one request from the key's bucket, or raise 429 with Retry-After."""
        retry = self.take(key)
        if retry:
            raise RateLimited(f"too many {self.name} requests: at most {self.per_minute} per minute; "
                              f"retry in {retry} s", retry)

    def take(self, key: str) -> int:
        """Take one request from the key's bucket: 0 when taken, else the seconds until one is there (nothing
        taken), for a caller that words its own 429."""
        if self.per_minute <= 0:
            return 0
        with self._lock:
            return self._take(key)

    def _take(self, key: str) -> int:
        now = time.monotonic()
        rate = self.per_minute / 60.0
        bucket = self._buckets.get(key)
        if bucket is None:
            if len(self._buckets) >= self.max_keys:
                self._evict(now, rate)
            bucket = self._buckets[key] = _Bucket(float(self.per_minute), now)
        else:
            bucket.tokens = min(self.per_minute, bucket.tokens + (now - bucket.updated) * rate)
            bucket.updated = now
        if bucket.tokens < 1:
            return max(1, math.ceil((1 - bucket.tokens) / rate))
        bucket.tokens -= 1
        return 0

    def _evict(self, now: float, rate: float) -> None:
        # Drop buckets that are full again (they hold no state worth keeping), else the oldest half.
        full = [k for k, b in self._buckets.items() if b.tokens + (now - b.updated) * rate >= self.per_minute]
        for k in full or sorted(self._buckets, key=lambda k: self._buckets[k].updated)[: len(self._buckets) // 2]:
            del self._buckets[k]


class ByteRate:
    """`per_minute` bytes per key, refilled continuously, bursting up to `per_minute`. 0 = unlimited.

    A single amount larger than the whole minute passes when the key's bucket is full and leaves it in debt,
    so no send is refused for ever; the sends after it wait until the debt is paid."""

    def __init__(self, per_minute: int, max_keys: int = 100_000):
        self.per_minute = per_minute
        self.max_keys = max_keys
        self._buckets: dict[str, _Bucket] = {}
        self._lock = threading.Lock()  # sends run in worker threads on PostgreSQL (db_pg.PgDatabase.run)

    def take(self, key: str, amount: int) -> int:
        """Take `amount` bytes from the key's bucket: 0 when taken, else the seconds to wait (nothing taken)."""
        if self.per_minute <= 0 or amount <= 0:
            return 0
        with self._lock:
            return self._take(key, amount)

    def _take(self, key: str, amount: int) -> int:
        now = time.monotonic()
        rate = self.per_minute / 60.0
        bucket = self._buckets.get(key)
        if bucket is None:
            if len(self._buckets) >= self.max_keys:
                self._evict(now, rate)
            bucket = self._buckets[key] = _Bucket(float(self.per_minute), now)
        else:
            bucket.tokens = min(self.per_minute, bucket.tokens + (now - bucket.updated) * rate)
            bucket.updated = now
        needed = min(amount, self.per_minute)
        if bucket.tokens < needed:
            return max(1, math.ceil((needed - bucket.tokens) / rate))
        bucket.tokens -= amount
        return 0

    def _evict(self, now: float, rate: float) -> None:
        full = [k for k, b in self._buckets.items() if b.tokens + (now - b.updated) * rate >= self.per_minute]
        for k in full or sorted(self._buckets, key=lambda k: self._buckets[k].updated)[: len(self._buckets) // 2]:
            del self._buckets[k]
