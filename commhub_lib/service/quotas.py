"""Quotas: nothing a user, token or agent creates grows without bound.

Each check is called with one line by the service function that creates the thing, inside its write
transaction (so the count and the insert are one atomic step). On PostgreSQL, where several writers (processes,
a pool's connections) run at once, each check first locks the row its count is per (the network's, or the
user's) until the commit: two writers racing for the last place are served one after the other, and the second
counts the first's insert. A quota that is reached answers 409
`quota_exceeded` with a message naming the limit and the setting that raises it. A setting of 0 turns
a quota off. Live login tokens are the exception: a new login never fails; it revokes the user's oldest
logins beyond the limit instead (a person is never locked out of their own account by old sessions).

Storage is bounded per network by bytes (`max_network_bytes`, counted by the triggers of schema.sql as rows
are written and deleted, so retention frees it) and per token by a send rate in bytes (`send_bytes_per_minute`,
429 with Retry-After): one member's agent cannot fill the disk that every network of the hub writes to.
"""

from __future__ import annotations

from ..errors import Conflict, RateLimited
from ..ids import now_text
from ..store import quotas as quota_store
from ..store import tokens as token_store
from ..store import usage as usage_store
from .hub import CALLER_TOKEN, Hub


def _exceeded(what: str, limit: int, setting: str, what_next: str) -> Conflict:
    return Conflict(f"{what} has reached its limit of {limit} (COMMHUB_{setting.upper()}); {what_next}, or ask "
                    "the server's operator to raise the limit", code="quota_exceeded")


def lock_network(hub: Hub, network_id: str) -> None:
    """Inside a write, before counting what a network has: hold its row until the commit (PostgreSQL; a no-op
    on SQLite, whose writer is single)."""
    quota_store.lock_network(hub.db, network_id)


def check_new_alias(hub: Hub, network_id: str) -> None:
    """Before a network gets a new alias (session row)."""
    limit = hub.settings.max_aliases_per_network
    if limit:
        lock_network(hub, network_id)
    if limit and quota_store.count_aliases(hub.db, network_id) >= limit:
        raise _exceeded("this network", limit, "max_aliases_per_network",
                        "report as an alias this network already has (an owner or admin can release one that "
                        "another token holds: POST /api/networks/<network_id>/aliases/<alias>/release)")


def check_new_node(hub: Hub, network_id: str, hostname: str) -> None:
    """Before a network records a node it has not seen (a known hostname is always fine)."""
    limit = hub.settings.max_nodes_per_network
    if not limit or quota_store.node_exists(hub.db, network_id, hostname):
        return
    lock_network(hub, network_id)
    if quota_store.count_nodes(hub.db, network_id) >= limit:
        raise _exceeded("this network's node list", limit, "max_nodes_per_network",
                        "report a hostname this network already knows")


def check_new_network_token(hub: Hub, user_id: str) -> None:
    """Before a user gets another network (API) token."""
    limit = hub.settings.max_tokens_per_user
    if limit:
        quota_store.lock_user(hub.db, user_id)
    if limit and quota_store.count_live_network_tokens(hub.db, user_id, now_text()) >= limit:
        raise _exceeded("your account", limit, "max_tokens_per_user",
                        "revoke tokens you no longer use (DELETE /api/tokens/<token_id>)")


def check_new_network(hub: Hub, owner_id: str) -> None:
    """Before a user creates another network."""
    limit = hub.settings.max_networks_per_user
    if limit:
        quota_store.lock_user(hub.db, owner_id)
    if limit and quota_store.count_owned_networks(hub.db, owner_id) >= limit:
        raise _exceeded("your account", limit, "max_networks_per_user",
                        "delete a network you no longer use")


def check_new_invite(hub: Hub, network_id: str) -> None:
    """Before a network gets another open invite."""
    limit = hub.settings.max_invites_per_network
    if limit:
        lock_network(hub, network_id)
    if limit and quota_store.count_open_invites(hub.db, network_id, now_text()) >= limit:
        raise _exceeded("this network's open invites", limit, "max_invites_per_network",
                        "wait until some are used or expire, or revoke unused ones "
                        "(DELETE /api/networks/<network_id>/invites/<invite_id>)")


def make_room_for_login(hub: Hub, user_id: str) -> list[str]:
    """Before a login token is issued: revoke the user's oldest live logins so that, with the new one, at
    most `max_logins_per_user` remain; their streams are closed. Returns the revoked token ids."""
    limit = hub.settings.max_logins_per_user
    if not limit:
        return []
    now = now_text()
    revoked = quota_store.live_logins_past(hub.db, user_id, limit - 1, now)
    for token_id in revoked:
        token_store.revoke_token(hub.db, token_id, now)
        hub.broker.close_token_streams(token_id)
    return revoked


def size_text(n: float) -> str:
    """A byte count for people: 512 B, 60.0 KiB, 1.0 GiB."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


# What one stored item adds besides its text (its row, index entries, its SSE event's row and fields), roughly
# what the triggers of schema.sql count for it.
ITEM_OVERHEAD = 500


def check_store(hub: Hub, network_id: str, *texts: str | None, adds: int | None = None, file_bytes: int = 0) -> None:
    """Before texts are stored in a network (inside the write transaction): the network's byte quota (409) and the
    calling token's send rate by bytes (429 with Retry-After). `adds`: what the write will add to the network's
    count, if not one item whose text is kept twice (its inbox item and its SSE event); `file_bytes`: an
    attachment's size (service/attachments.py), counted in the send rate as text is."""
    # First, before the rows the store's triggers lock: the network's usage row (PostgreSQL; see hold_usage).
    usage_store.hold_usage(hub.db, network_id)
    size = sum(len(t.encode()) for t in texts if t) + file_bytes
    limit = hub.settings.max_network_bytes
    if limit:
        used = usage_store.used_bytes(hub.db, network_id)
        added = 2 * size + ITEM_OVERHEAD if adds is None else adds
        if used + added > limit:
            raise Conflict(f"this network keeps {size_text(used)}, and this {size_text(size)} would pass its storage "
                           f"limit of {size_text(limit)} (COMMHUB_MAX_NETWORK_BYTES); nothing more can be stored in "
                           "it until space is freed: ask the server's operator to raise the limit or to set "
                           "retention (COMMHUB_MESSAGE_RETENTION_DAYS, COMMHUB_TASK_RETENTION_DAYS); its owner sees "
                           "the usage with `commhub network usage`", code="quota_exceeded")
    token_id = CALLER_TOKEN.get()
    if token_id is not None:
        wait = hub.send_rate().take(token_id, size)
        if wait:
            raise RateLimited(f"this token sent more than {size_text(hub.settings.send_bytes_per_minute)} in the "
                              "last minute, the limit (COMMHUB_SEND_BYTES_PER_MINUTE); nothing was sent: retry in "
                              f"{wait} s, or send less", wait)

