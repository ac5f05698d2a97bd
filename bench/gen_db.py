"""Build a CommHub database of N inbox messages for the query benchmarks (reproducible: fixed seed).

Shape (the issue's): 4 networks x 250 aliases, one person who is a member (owner) of all four, and traffic
spread over the last 25 days as the server writes it, through the store functions:
- ~36 % of message rows are task notices: a `tasks` row, a `task` message, task events, an SSE event; most
  tasks end (a `reply` message, `running` + final task events, a completion), the newest stay open
  (delivered / running), so `status=running` has a realistic, small set to find;
- ~26 % plain messages, ~36 % replies (to tasks), ~2 % broadcast copies (one row per recipient);
- every row older than the last hour is read.
The last alias of every network (`agent-249`) has a session but never sends or receives anything: the
"alias with no tasks/messages" case. Tokens for the benchmark go to `<db>.tokens.json`.

    .venv/bin/python bench/gen_db.py --messages 1000000 --out /tmp/commhub-1m.db
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from commhub_lib import auth  # noqa: E402
from commhub_lib.db import Database  # noqa: E402
from commhub_lib.ids import ts_text  # noqa: E402
from commhub_lib.service.tasks import excerpt  # noqa: E402
from commhub_lib.store import events as event_store  # noqa: E402
from commhub_lib.store import messages as message_store  # noqa: E402
from commhub_lib.store import networks as network_store  # noqa: E402
from commhub_lib.store import sessions as session_store  # noqa: E402
from commhub_lib.store import tasks as task_store  # noqa: E402
from commhub_lib.store import tokens as token_store  # noqa: E402
from commhub_lib.store import users as user_store  # noqa: E402

NETWORKS = 4
ALIASES = 250
QUIET_ALIAS = f"agent-{ALIASES - 1:03d}"
SPAN_SECONDS = 25 * 86400  # inside the 30-day SSE retention, so start-up prunes nothing
BATCH = 20_000
WORDS = ("refactor the parser", "run the test suite", "check the migration", "review the diff",
         "update the docs", "profile the hot path", "fix the flaky test", "bump the dependency")


_ids = random.Random(0)


def new_id(prefix: str, nbytes: int = 8) -> str:
    """Ids in the server's format, from a seeded generator so two runs build the same rows."""
    return f"{prefix}_{_ids.getrandbits(nbytes * 8):0{nbytes * 2}x}"


def text(rng: random.Random, n_words: int) -> str:
    """Plausible message text of about n_words words."""
    return " ".join(rng.choice(WORDS) for _ in range(max(1, n_words // 3)))


def _message(rng: random.Random, network_id: str, sender: str, to: str, kind: str, content: str, ts: float,
             read: bool, **extra: object) -> dict:
    row = {"message_id": new_id("msg"), "network_id": network_id, "from_name": sender, "to_name": to,
           "from_kind": "agent", "to_kind": "agent",
           "kind": kind, "content": content, "priority": extra.pop("priority", "normal"),
           "in_reply_to": extra.pop("in_reply_to", None), "task_id": extra.pop("task_id", None),
           "status": extra.pop("status", None), "created_at": ts_text(ts), "created_ts": ts}
    row["_read"] = read
    return row


def build(path: str, n_messages: int, seed: int = 10) -> dict:
    """Create the database at `path` with about n_messages inbox rows; returns the benchmark's tokens."""
    rng = random.Random(seed)
    _ids.seed(seed)
    db = Database(path)
    con = db.con
    con.pragma("synchronous", "off")  # a generator: a crash just means running it again
    now = time.time()
    start = now - SPAN_SECONDS
    password_hash = auth.hash_password("bench-password-1")
    tokens: dict = {"networks": [], "quiet_alias": QUIET_ALIAS}
    with db.write():
        user_id = new_id("u")
        user_store.insert_user(db, user_id, "bench", "bench", None, password_hash, "admin", ts_text(start))
        secret = auth.new_secret(auth.USER_TOKEN_PREFIX)
        token_store.insert_token(db, new_id("utk"), "user", auth.token_hash(secret), user_id, None, "login", None,
                                 ts_text(start))
        tokens["user_token"] = secret
        for n in range(NETWORKS):
            network_id = new_id("net")
            network_store.insert_network(db, network_id, f"net-{n}", "", user_id, ts_text(start))
            network_store.insert_member(db, network_id, user_id, "owner", ts_text(start))
            secret = auth.new_secret(auth.NETWORK_TOKEN_PREFIX)
            token_id = new_id("tok")
            token_store.insert_token(db, token_id, "network", auth.token_hash(secret), user_id, network_id,
                                     "bench", "agent-000", ts_text(start))
            for a in range(ALIASES):
                session_store.insert_session(db, network_id, f"agent-{a:03d}", new_id("sess"),
                                             token_id if a == 0 else None, "offline", ts_text(start), start)
            tokens["networks"].append({"network_id": network_id, "token": secret, "alias": "agent-000"})
    network_ids = [n["network_id"] for n in tokens["networks"]]
    talkers = [f"agent-{a:03d}" for a in range(ALIASES - 1)]
    written = 0
    t0 = time.perf_counter()
    while written < n_messages:
        with db.write():
            batch_end = min(n_messages, written + BATCH)
            while written < batch_end:
                ts = start + SPAN_SECONDS * written / n_messages
                written += _one_exchange(db, rng, rng.choice(network_ids), talkers, ts, now)
        print(f"\r{written:,} messages, {time.perf_counter() - t0:.0f} s", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    con.pragma("synchronous", "normal")
    db.close()
    return tokens


def _one_exchange(db: Database, rng: random.Random, network_id: str, talkers: list[str], ts: float,
                  now: float) -> int:
    """One piece of traffic as the service writes it; returns how many inbox rows it added."""
    sender, to = rng.sample(talkers, 2)
    read = ts < now - 3600
    roll = rng.random()
    if roll < 0.0001:  # a broadcast: one inbox row per other session of the network
        content = text(rng, 40)
        body_id = message_store.insert_body(db, content)  # one text for every copy, as the service does
        n = 0
        for alias in talkers:
            if alias != sender:
                row = _message(rng, network_id, sender, alias, "broadcast", "", ts, read)
                row["body_id"] = body_id
                _store_message(db, row, "broadcast", {"type": "broadcast", "content": content, "from": sender})
                n += 1
        return n
    if roll < 0.42:
        content = text(rng, 60)
        _store_message(db, _message(rng, network_id, sender, to, "message", content, ts, read), "new_message",
                       {"type": "new_message", "message": content, "from": sender})
        return 1
    return _task_exchange(db, rng, network_id, sender, to, ts, now, read)


def _task_exchange(db: Database, rng: random.Random, network_id: str, sender: str, to: str, ts: float,
                   now: float, read: bool) -> int:
    content, title = text(rng, 80), text(rng, 6)
    priority = rng.choice(("normal", "normal", "normal", "high", "low", "urgent"))
    msg = _message(rng, network_id, sender, to, "task", "", ts, read, priority=priority)  # text: in the task
    task = {"task_id": new_id("t", 16), "network_id": network_id, "from_name": sender, "to_name": to,
            "from_kind": "agent", "to_kind": "agent",
            "title": title, "content": content, "context": None, "priority": priority, "status": "delivered",
            "deadline": None, "idempotency_key": None, "message_id": msg["message_id"],
            "created_at": msg["created_at"], "created_ts": ts, "updated_at": msg["created_at"]}
    msg["task_id"] = task["task_id"]
    task_store.insert_task(db, task)
    task_store.insert_task_event(db, task["task_id"], network_id, "delivered", sender, title, msg["created_at"])
    _store_message(db, msg, "new_task", {"type": "new_task", "priority": priority, "from": sender,
                                         "task_id": task["task_id"], "message_id": msg["message_id"], "title": title})
    # The newest tasks are still open; a few old ones stay open too (forgotten work).
    age = now - ts
    roll = rng.random()
    if age < 6 * 3600 or roll < 0.01:
        if rng.random() < 0.5:
            task_store.set_status(db, task["task_id"], ("delivered",), "running", msg["created_at"])
            task_store.insert_task_event(db, task["task_id"], network_id, "running", to, None, msg["created_at"])
        return 1
    done_ts = ts + rng.uniform(5, 600)
    done_at = ts_text(done_ts)
    final = "replied" if roll < 0.93 else "failed" if roll < 0.97 else "cancelled"
    result = text(rng, 100)
    task_store.set_status(db, task["task_id"], ("delivered",), final, done_at)  # the result: in the completion
    task_store.insert_task_event(db, task["task_id"], network_id, "running", to, None, done_at)
    task_store.insert_task_event(db, task["task_id"], network_id, final, to, excerpt(result), done_at)
    if final == "cancelled":
        return 1
    task_store.insert_completion(db, task["task_id"], network_id, to, final, result, "[]", done_ts - ts, done_at)
    status = "done" if final == "replied" else "failed"
    reply = _message(rng, network_id, to, sender, "reply", result, done_ts, read, priority=priority,
                     in_reply_to=msg["message_id"], task_id=task["task_id"], status=status)
    _store_message(db, reply, "new_reply", {"type": "new_reply", "from": to, "message_id": reply["message_id"],
                                            "in_reply_to": msg["message_id"], "status": status,
                                            "task_id": task["task_id"]})
    return 2


def _store_message(db: Database, row: dict, event: str, data: dict) -> None:
    read = row.pop("_read")
    message_store.insert_message(db, row)
    if read:
        message_store.mark_read(db, row["network_id"], row["to_name"], [row["message_id"]], row["created_at"])
    data.setdefault("message_id", row["message_id"])
    event_store.insert_event(db, row["network_id"], row["to_name"], event,
                             json.dumps(data, ensure_ascii=False, separators=(",", ":")), row["created_at"])


def main() -> None:
    """Command line: build one database and write its tokens next to it."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--messages", type=int, default=10_000)
    ap.add_argument("--out", required=True, help="database file to create (must not exist)")
    ap.add_argument("--seed", type=int, default=10)
    args = ap.parse_args()
    if Path(args.out).exists():
        sys.exit(f"{args.out} exists; remove it first")
    t0 = time.perf_counter()
    tokens = build(args.out, args.messages, args.seed)
    Path(args.out + ".tokens.json").write_text(json.dumps(tokens, indent=1))
    size = Path(args.out).stat().st_size
    print(f"{args.out}: {args.messages:,} messages, {size / 2**20:.0f} MiB, {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
