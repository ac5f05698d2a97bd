"""Sessions: claiming aliases, who the caller is, presence, status listings (the sweeper is in jobs.py)."""

from __future__ import annotations

import difflib
import json
import logging
from collections.abc import Callable
from typing import Any

import trio

from ..broker import Subscriber
from ..db import DatabaseError, on_loop
from ..errors import CommhubError, Conflict, Forbidden, NotFound
from ..ids import new_id, now_text, now_ts
from ..models import MAX_LIMIT, ReportStatus
from ..store import messages as message_store
from ..store import sessions as session_store
from ..store import tasks as task_store
from ..store import tokens as token_store
from ..store import users as user_store
from ..vocabulary import A2A_BRIDGE, IDLE, OFFLINE, POLLING, RUNNER, TASK_STATUSES, HeldBy, StreamHolder
from . import quotas, shared
from .hub import Hub, Principal, clamp_limit, hint

log = logging.getLogger("commhub.presence")

TOUCH_INTERVAL_SECONDS = 1.0
# How many times a claim is tried again when another writer created or took the alias between the check and the
# write (several processes, or a pool's connections, on PostgreSQL); the next check then refuses it or finds it ours.
CLAIM_ATTEMPTS = 3


def is_online(hub: Hub, row: dict[str, Any], streams: int | None = None) -> bool:
    """A session is online while a live stream holds it (a runner, a channel, an SSE stream) or its last tool call
    is within the presence timeout (docs/presence.md: a client that only connects and lists tools, a health
    check, is not online). Checked here, not only by the sweeper, so a lapsed session is never shown online.
    `streams`: the alias's stream count when the caller already has it. With several processes (PostgreSQL) a
    stream held by another process counts too (service/shared.py), asked last: one read."""
    if (hub.broker.stream_count(row["network_id"], row["alias"]) if streams is None else streams) > 0:
        return True
    if _polling(hub, row):
        return True
    return hub.shared is not None and shared.other_streams_of(hub, row["network_id"], row["alias"])[0] > 0


def _polling(hub: Hub, row: dict[str, Any]) -> bool:
    """Online by its tool calls alone: not stored offline, and a call within the presence timeout."""
    return row["status"] != OFFLINE and row["last_call_ts"] >= now_ts() - hub.settings.presence_timeout_seconds


def held_by(hub: Hub, row: dict[str, Any]) -> HeldBy | None:
    """What keeps a session online: the strongest live stream (runner, channel, stream), else the A2A bridge for a
    bound alias (its sign of life is a call per bridge round), else `polling` while its tool calls are recent; None
    when it is offline."""
    if stream := stream_held_by(hub, row["network_id"], row["alias"]):
        return stream
    if not _polling(hub, row):
        return None
    return A2A_BRIDGE if hub.a2a_bound(row["network_id"], row["alias"]) else POLLING


def stream_held_by(hub: Hub, network_id: str, alias: str) -> StreamHolder | None:
    """The strongest live stream holding an alias, on this process or (PostgreSQL) any other."""
    here = hub.broker.held_by(network_id, alias)
    if hub.shared is None or here == RUNNER:
        return here
    return shared.strongest(here, shared.other_streams_of(hub, network_id, alias)[1])


def effective_status(hub: Hub, row: dict[str, Any]) -> str:
    """The status to show: offline once presence has lapsed (even before the sweeper runs); a session with a
    live stream is never shown offline."""
    if not is_online(hub, row):
        return OFFLINE
    return IDLE if row["status"] == OFFLINE else row["status"]


def _check_claim(hub: Hub, principal: Principal, network_id: str, alias: str) -> dict[str, Any] | None:
    """Refuse a claim the caller may not make; returns the existing session row, if any.

    An alias belongs to the token that claimed it (or is bound to it), online or not: another token may take it
    only after that token is revoked or expires, or an owner/admin releases the alias. No agent may use a
    person's username, so nobody can mistake an agent for that person."""
    if principal.bound_alias and principal.bound_alias != alias:
        raise Forbidden(f"this token is bound to alias '{principal.bound_alias}' and cannot act as '{alias}'",
                        code="alias_bound")
    row = session_store.get_session(hub.db, network_id, alias)
    if row and row["token_id"] is None and hub.a2a_bound(network_id, alias):
        raise Conflict(f"alias '{alias}' is bound to an external A2A agent (docs/a2a-client.md); pick another alias",
                       code="alias_taken")
    if row and row["retired_at"]:
        raise Conflict(f"alias '{alias}' was retired by a network owner/admin and cannot be used again; pick "
                       "another alias", code="alias_retired")
    if row and row["token_id"] == principal.token_id:
        return row  # the holder itself
    if user_store.get_user_by_username(hub.db, alias) is not None:
        raise Forbidden(f"'{alias}' is the username of a person on this hub; an agent may not use a person's name "
                        "(others would take it for them). Pick another alias", code="alias_is_username")
    now = now_text()
    if row and row["token_id"] and token_store.is_live(hub.db, row["token_id"], now):
        raise Conflict(f"alias '{alias}' is held by another token (the one that claimed it), online or not; it is "
                       "freed when that token is revoked or a network owner/admin releases it (POST "
                       f"/api/networks/{network_id}/aliases/{alias}/release). Pick another alias, or give each "
                       "agent its own token", code="alias_taken")
    if principal.bound_alias != alias:
        bound = [t for t in token_store.live_tokens_bound_to(hub.db, network_id, alias, now)
                 if t["token_id"] != principal.token_id]
        if bound:
            raise Conflict(f"alias '{alias}' is reserved for the token bound to it ({bound[0]['token_id']}); use "
                           "that token, or pick another alias", code="alias_taken")
    return row


def needs_call_touch(hub: Hub, row: dict[str, Any], ts: float) -> bool:
    """needs_touch for a tool call: whether its time must be stored (what keeps a session without a stream
    online), at most once a second per session."""
    return row["status"] == OFFLINE or row["last_call_ts"] < ts - min(
        TOUCH_INTERVAL_SECONDS, hub.settings.presence_timeout_seconds / 4)


def needs_touch(hub: Hub, row: dict[str, Any], ts: float) -> bool:
    """Whether a sign of life must be stored: presence is written only when it changes what others see (the
    session is stored offline, or its stored last_seen is older than a second). A reconnect storm of 5,000
    streams then writes nothing for sessions that are already online; presence is judged on a scale of
    seconds, and a live stream keeps its alias online whatever last_seen says."""
    return row["status"] == OFFLINE or row["last_seen_ts"] < ts - min(
        TOUCH_INTERVAL_SECONDS, hub.settings.presence_timeout_seconds / 4)


def claim(hub: Hub, principal: Principal, network_id: str, alias: str, resume_id: str | None = None) -> None:
    """Make the caller the holder of an alias (creating the session) by a tool call (or a REST call as the agent),
    which is a sign of life that keeps it online (docs/presence.md), inside the caller's transaction."""
    _claim_checked(hub, principal, network_id, alias, _check_claim(hub, principal, network_id, alias), resume_id,
                   call=True)


def _claim_checked(hub: Hub, principal: Principal, network_id: str, alias: str, row: dict[str, Any] | None,
                   resume_id: str | None = None, *, call: bool = False) -> None:
    """Store a claim that _check_claim allowed; when another writer created or took the alias in between (it can on
    PostgreSQL: several processes, a pool), check again, which refuses it (alias_taken) or finds it ours."""
    for _ in range(CLAIM_ATTEMPTS):
        if _store_claim(hub, principal, network_id, alias, row, resume_id, call=call):
            return
        row = _check_claim(hub, principal, network_id, alias)
    raise Conflict(f"alias '{alias}' is being claimed by others at the same moment; retry", code="alias_taken")


def _store_claim(hub: Hub, principal: Principal, network_id: str, alias: str, row: dict[str, Any] | None,
                 resume_id: str | None = None, *, call: bool = False) -> bool:
    """Write a claim that _check_claim allowed (`row`: the session it found), inside the caller's transaction;
    `call`: the claim comes with a tool call (stored as one), not with a stream opening. False, having written
    nothing, when the row is no longer what the check saw (another writer created it or changed its holder)."""
    now, ts = now_text(), now_ts()
    if row is None:
        quotas.check_new_alias(hub, network_id)
        if not session_store.insert_session(hub.db, network_id, alias, resume_id or new_id("sess"),
                                            principal.token_id, IDLE, now, ts, ts if call else 0.0):
            return False
    else:
        if (row["token_id"] != principal.token_id or resume_id) and not session_store.claim_session(
                hub.db, network_id, alias, principal.token_id, resume_id, row["token_id"]):
            return False
        if call and needs_call_touch(hub, row, ts):
            session_store.touch_call(hub.db, network_id, alias, now, ts)
        elif not call and needs_touch(hub, row, ts):
            session_store.touch_session(hub.db, network_id, alias, now, ts)
    if principal.last_alias != alias:
        token_store.set_last_alias(hub.db, principal.token_id, alias)
        principal.last_alias = alias
    return True


def claim_for_stream(hub: Hub, principal: Principal, network_id: str, alias: str) -> None:
    """claim() for a stream that opens: a write transaction only when the claim stores something (a new
    session, another holder, another alias for the token); a stale presence of the holder's own session is left
    to the presence writer (`write_stream_presence`), which stores it with the others of that moment in one
    transaction. The stream keeps the alias online meanwhile (is_online asks the broker first); a reconnect
    storm of known agents then opens without a single write."""
    version = hub.db.con.data_version()
    row = _check_claim(hub, principal, network_id, alias)
    if row is None or row["token_id"] != principal.token_id or principal.last_alias != alias:
        with hub.db.write():
            # Checked outside the transaction (most stream opens store nothing): checked again only if another
            # process wrote since (nothing of this process can run between the check and the BEGIN).
            if hub.db.con.data_version() != version:
                row = _check_claim(hub, principal, network_id, alias)
            # (PostgreSQL has no data_version: there the write itself finds a row another writer changed.)
            _claim_checked(hub, principal, network_id, alias, row)
    elif needs_touch(hub, row, now_ts()):
        on_loop(hub.broker.presence_due.add, (network_id, alias))  # a stream opened off the loop (PostgreSQL)


PRESENCE_WRITE_SECONDS = 0.5  # how long a stream open's presence may wait to be stored with others


def write_due_presence(hub: Hub) -> int:
    """Store a sign of life, now, for every alias a stream open left due, in one transaction (best effort: a
    busy lock or a full disk keeps them for the next round). Returns how many were written."""
    due = sorted(hub.broker.presence_due)
    if not due:
        return 0
    now, ts = now_text(), now_ts()
    if not hub.db.try_write(lambda: session_store.touch_sessions(hub.db, due, now, ts)):
        return 0
    hub.broker.presence_due.difference_update(due)
    return len(due)


async def write_stream_presence(hub: Hub, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
    """Background job (root nursery): every PRESENCE_WRITE_SECONDS, store the presence stream opens left due;
    what is still due when the job ends (shutdown) is written then. On PostgreSQL it also keeps this process's
    stream presence for the other processes (service/shared.py), and deletes it when the job ends."""
    state = shared.start(hub)
    task_status.started()
    try:
        while True:
            await trio.sleep(PRESENCE_WRITE_SECONDS)
            _best_effort(write_due_presence, hub)
            if state is not None:
                shared.write_presence(hub, state)
    finally:
        _best_effort(write_due_presence, hub)  # no await: it runs even when the job is cancelled
        shared.clear_presence(hub)


def _best_effort(write: Callable[[Hub], object], hub: Hub) -> None:
    """A presence write of the job that must not end the server: PostgreSQL away answers 503 (DatabaseUnavailable,
    which try_write lets through), and what was due stays due for the next round."""
    try:
        write(hub)
    except (CommhubError, DatabaseError) as exc:
        log.warning("presence: not stored this round (%s)", exc)


def report_status(hub: Hub, principal: Principal, network_id: str, current_alias: str | None,
                  body: ReportStatus) -> dict[str, Any]:
    """Claim the alias if given, then record status/task/progress/node; returns the alias and inbox count."""
    alias = body.alias or principal.bound_alias or current_alias or principal.last_alias
    if alias is None:
        raise Conflict("alias: required on your first report_status call: it is the name others send to "
                       "(e.g. 'coder-1')", code="alias_required")
    with hub.db.write():
        claim(hub, principal, network_id, alias, body.resume_id)
        fields: dict[str, Any] = body.model_dump(include={"status", "agent", "model", "task", "progress",
                                                          "resume_id"}, exclude_none=True)
        if body.node is not None:
            hostname = body.node if isinstance(body.node, str) else body.node.hostname
            platform = None if isinstance(body.node, str) else body.node.platform
            quotas.check_new_node(hub, network_id, hostname)
            fields["node_id"] = session_store.upsert_node(hub.db, new_id("node"), network_id, hostname, platform,
                                                          body.agent, now_text())
        if body.status == IDLE and "task" not in fields:
            fields["task"] = None
            fields["progress"] = None
        session_store.update_report(hub.db, network_id, alias, fields)
    row = session_store.get_session(hub.db, network_id, alias)
    assert row is not None
    open_count = len(task_store.open_tasks_of(hub.db, network_id, alias, 500))
    return {"ok": True, "alias": alias, "network_id": network_id, "resume_id": row["resume_id"],
            "status": row["status"], "progress": row["progress"],
            "inbox_count": message_store.unread_count(hub.db, network_id, alias), "open_task_count": open_count}


def resolve_caller(hub: Hub, principal: Principal, network_id: str, session_alias: str | None) -> str:
    """Who is calling, never from an argument: the token's bound alias, else the alias claimed on this
    MCP session, else the alias this token last claimed. Refreshes the caller's presence."""
    alias = principal.bound_alias or session_alias or principal.last_alias
    if alias is None:
        raise Conflict(hint("you have not said who you are: call report_status with your alias first",
                            "this network token has not claimed an alias yet: connect its agent over MCP "
                            "(report_status), or create the token bound to an alias"), code="no_identity")
    row = session_store.get_session(hub.db, network_id, alias)
    if row is None or row["token_id"] != principal.token_id:
        if row is not None and principal.bound_alias is None:
            # The alias this token used was released by an owner/admin or taken by another token since: taking
            # it back needs an explicit claim, never a side effect of another call.
            raise Conflict(f"alias '{alias}' is no longer yours (an owner/admin released it, or another token "
                           "holds it); " + hint("call report_status to claim an alias",
                                                "this token must claim an alias again first"), code="no_identity")
        with hub.db.write():
            claim(hub, principal, network_id, alias)
    elif needs_call_touch(hub, row, now_ts()):
        # At most one presence write per second per session. Best effort: a locked database or a full disk
        # must not fail a read such as get_inbox.
        hub.db.try_write(lambda: session_store.touch_call(hub.db, network_id, alias, now_text(), now_ts()))
    return alias


def stream_closed(hub: Hub, sub: Subscriber) -> None:
    """A stream that held its alias closed (not at shutdown): store that it was seen until now, and unless another
    stream still holds the alias or a recent tool call keeps it online, that it is offline from now (a health
    check that opened and closed GET /mcp leaves nothing online). Best effort: never fails the close."""
    network_id, alias = sub.key
    still_held = hub.broker.stream_count(network_id, alias, but=sub) > 0
    cutoff = now_ts() - hub.settings.presence_timeout_seconds

    def closed() -> None:
        session_store.stream_closed(hub.db, network_id, alias, now_text(), now_ts(), still_held, cutoff)
        if not still_held:
            shared.closed_last_stream(hub, sub.key)  # PostgreSQL: the other processes see it offline now too

    if hub.db.try_write(closed) and not still_held:
        shared.dropped(hub, sub.key)


def touch_streaming(hub: Hub) -> int:
    """Store a sign of life, now, for every alias with a live agent stream, in one transaction (at shutdown,
    instead of one write per closing stream); best effort. Returns how many."""
    keys = sorted(hub.broker.online_aliases())
    now, ts = now_text(), now_ts()
    if keys:
        hub.db.try_write(lambda: session_store.touch_sessions(hub.db, keys, now, ts))
    return len(keys)


def end_token(hub: Hub, token_id: str) -> None:
    """After a revocation commits: close the token's SSE streams and long-polls (they answer nothing more)."""
    hub.broker.close_token_streams(token_id)
    hub.guard().end_token(token_id)


def revoke_network_tokens_of_member(hub: Hub, network_id: str, user_id: str) -> list[str]:
    """Revoke a (removed) member's tokens for one network, freeing their aliases (inside db.write());
    returns the token ids so the caller can end their streams after commit."""
    now = now_text()
    revoked = []
    for row in token_store.list_network_tokens_of_user(hub.db, user_id):
        if row["network_id"] == network_id and token_store.revoke_token(hub.db, row["token_id"], now):
            session_store.release_token_sessions(hub.db, row["token_id"])
            revoked.append(row["token_id"])
    return revoked


def require_known_alias(hub: Hub, network_id: str, alias: str) -> dict[str, Any]:
    """The recipient's session, or an error saying the alias is unknown (naming the closest one) or retired."""
    row = session_store.get_session(hub.db, network_id, alias)
    if row is None:
        known = [r["alias"] for r in session_store.list_sessions(hub.db, [network_id]) if not r["retired_at"]]
        close = difflib.get_close_matches(alias, known, n=1, cutoff=0.6) or difflib.get_close_matches(
            alias.lower(), [k.lower() for k in known], n=1, cutoff=0.6)
        if close:
            match = next(k for k in known if k.lower() == close[0].lower())
            advice = f"did you mean '{match}'?"
        else:
            advice = "check the name with " + hint("get_all_status", "GET /api/status")
        raise NotFound(f"no agent '{alias}' has ever connected to this network; {advice}", code="unknown_recipient")
    if row["retired_at"]:
        raise Conflict(f"alias '{alias}' was retired by a network owner/admin on {row['retired_at']}; nothing can "
                       "be sent to it any more. See who is there with " + hint("get_all_status", "GET /api/status"),
                       code="alias_retired")
    return row


def live_streams(hub: Hub, network_ids: list[str]) -> dict[tuple[str, str], tuple[int, StreamHolder]]:
    """The aliases of these networks with live agent streams, how many each and the strongest kind holding it: the
    broker's (in memory), plus on PostgreSQL the other processes' (service/shared.py, one read)."""
    wanted = set(network_ids)
    live: dict[tuple[str, str], tuple[int, StreamHolder]] = {}
    for key in hub.broker.online_aliases():
        if key[0] in wanted and (held := hub.broker.held_by(*key)) is not None:
            live[key] = (hub.broker.stream_count(*key), held)
    if hub.shared is not None:
        for key, (count, held) in shared.other_streams(hub, network_ids).items():
            here = live.get(key)
            live[key] = (count + here[0], shared.strongest(held, here[1]) or held) if here else (count, held)
    return live


def streaming_aliases(hub: Hub) -> set[tuple[str, str]]:
    """Every (network, alias) a live agent stream holds: on this process, or on PostgreSQL on any other."""
    here = hub.broker.online_aliases()
    return here | set(shared.other_streams(hub, None)) if hub.shared is not None else here


def list_status_json(hub: Hub, network_ids: list[str], status: str | None, limit: int | None = None,
                     offset: int = 0) -> str:
    """The sessions of the networks (the reference's /api/status shape) as JSON text, a page of up to 500
    (by default all of them up to that cap: the reference lists every session). `status` filters on the
    status shown: presence may have lapsed before the sweeper stored it, and a live stream keeps a session
    online whatever was stored."""
    cutoff = now_ts() - hub.settings.presence_timeout_seconds
    limit = clamp_limit(limit, MAX_LIMIT)
    live = live_streams(hub, network_ids)
    bound = hub.a2a_bound_in(network_ids)  # held by the A2A bridge, not "polling" as SQLite would say
    if not live and not bound:  # the usual case for a listing: SQLite builds the whole page
        page = session_store.status_page_json(hub.db, network_ids, cutoff, status, limit, offset)
        return '{"ok":true,"sessions":' + page + "}"
    # Some aliases have live streams or a binding: SQLite builds each record, those few are corrected here.
    rows = session_store.status_records(hub.db, network_ids, cutoff, -1 if status else limit, 0 if status else offset)
    records = []
    for row in rows:
        streams = live.get((row["network_id"], row["alias"]))
        if streams:
            record = json.loads(row["record"])
            shown = record["status"] = IDLE if row["status"] == OFFLINE else row["status"]
            record["online"], record["streams"] = True, streams[0]
            record["held_by"] = streams[1]
            row["shown"], row["record"] = shown, json.dumps(record, ensure_ascii=False, separators=(",", ":"))
        elif (row["network_id"], row["alias"]) in bound and row["shown"] != OFFLINE:
            record = json.loads(row["record"])
            record["held_by"] = A2A_BRIDGE
            row["record"] = json.dumps(record, ensure_ascii=False, separators=(",", ":"))
        if status is None or row["shown"] == status:
            records.append(row["record"])
    if status:
        records = records[offset:offset + limit]
    return '{"ok":true,"sessions":[' + ",".join(records) + "]}"


def list_status(hub: Hub, network_ids: list[str], status: str | None, limit: int | None = None,
                offset: int = 0) -> dict[str, Any]:
    """list_status_json as a dict (for get_all_status)."""
    return json.loads(list_status_json(hub, network_ids, status, limit, offset))


def list_nodes(hub: Hub, network_ids: list[str], limit: int | None = None, offset: int = 0) -> dict[str, Any]:
    """Machines that sessions report running on, a page of up to 500."""
    rows = session_store.list_nodes(hub.db, network_ids, clamp_limit(limit, MAX_LIMIT), offset)
    for r in rows:
        r["agents"] = json.loads(r["agents"])
    return {"ok": True, "nodes": rows}


def stats(hub: Hub, network_ids: list[str]) -> dict[str, Any]:
    """Session and task counts (the reference's /api/stats shape)."""
    # Counted as /api/status shows them (presence may have lapsed before the sweeper stored it): offline are
    # the sessions stored offline or silent past the timeout, unless they have a live stream.
    cutoff = now_ts() - hub.settings.presence_timeout_seconds
    counted = session_store.session_counts(hub.db, network_ids, cutoff)
    assert counted is not None
    total, offline = counted["total"], counted["offline"]
    live = live_streams(hub, network_ids)
    if live:
        offline -= session_store.count_lapsed(hub.db, json.dumps(list(live)), cutoff)
    sessions = {"total": total, "online": total - offline, "offline": offline}
    counts = task_store.task_counts(hub.db, network_ids)
    tasks = {"total": sum(counts.values())}
    tasks.update({s: counts.get(s, 0) for s in TASK_STATUSES})
    return {"ok": True, "sessions": sessions, "tasks": tasks}
