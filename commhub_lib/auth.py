"""Secrets: argon2id passwords (blocking: call from a thread) and SHA-256-addressed bearer tokens."""

from __future__ import annotations

import contextlib
import hashlib
import secrets
import threading
from collections.abc import Iterator

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

_hasher = PasswordHasher()


class Argon2Gate:
    """At most `limit` argon2 computations at once, process-wide (each allocates 64 MiB: without a ceiling,
    a burst of password calls drove RSS to GiBs and login to 7-24 s). Callers beyond the limit wait.

    A threading semaphore, not a trio.CapacityLimiter, because the hash functions run in worker threads
    (trio.to_thread) whose callers live outside this module; `running`/`peak` are for tests and metrics."""

    def __init__(self, limit: int = 2):
        self._lock = threading.Lock()
        self.limit = limit
        self._slots = threading.BoundedSemaphore(limit)
        self.running = 0
        self.peak = 0

    def set_limit(self, limit: int) -> None:
        """Change the limit (at server start, from the argon2_concurrency setting)."""
        with self._lock:
            self.limit = limit
            self._slots = threading.BoundedSemaphore(limit)

    @contextlib.contextmanager
    def slot(self) -> Iterator[None]:
        """Hold one of the slots while hashing (blocks the calling worker thread until one is free)."""
        slots = self._slots
        with slots:
            with self._lock:
                self.running += 1
                self.peak = max(self.peak, self.running)
            try:
                yield
            finally:
                with self._lock:
                    self.running -= 1


ARGON2_GATE = Argon2Gate()

USER_TOKEN_PREFIX = "utok_"
NETWORK_TOKEN_PREFIX = "ntok_"
ROLE_RANK = {"member": 1, "admin": 2, "owner": 3}


def hash_password(password: str) -> str:
    """argon2id hash of a password (~150 ms: run it with trio.to_thread)."""
    with ARGON2_GATE.slot():
        return _hasher.hash(password)


def verify_password(password_hash: str, password: str) -> bool:
    """True if the password matches the hash (~150 ms: run it with trio.to_thread)."""
    try:
        with ARGON2_GATE.slot():
            return _hasher.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


# A fixed hash to verify against when the username is unknown, so a failed login takes as long
# whether or not the user exists (no username probing by timing).
DUMMY_HASH = _hasher.hash("commhub-dummy-password")


def new_secret(prefix: str) -> str:
    """A bearer secret: prefix + 256 random bits, URL-safe."""
    return prefix + secrets.token_urlsafe(32)


def token_hash(secret: str) -> bytes:
    """The SHA-256 under which a token is stored and looked up (tokens are long random secrets,
    so a fast hash is enough; the lookup is by whole-hash index equality)."""
    return hashlib.sha256(secret.encode("utf-8")).digest()


def role_at_least(role: str | None, needed: str) -> bool:
    """True if a network role is `needed` or higher (member < admin < owner)."""
    return role is not None and ROLE_RANK.get(role, 0) >= ROLE_RANK[needed]
