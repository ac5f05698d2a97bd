"""Step 2 of the schema on a database with data: tasks keep everything and may now wait for input, people are
told from agents, and invite codes that were stored (and audited) in plain text stop working."""

from __future__ import annotations

import json
from pathlib import Path

import apsw

from commhub_lib import db as dbmod
from commhub_lib.db import Database

T = "2026-01-01 00:00:00"


def test_step_2_keeps_tasks_marks_people_and_retires_plain_invite_codes(tmp_path: Path) -> None:
    path = str(tmp_path / "v1.db")
    old = apsw.Connection(path)
    with old:
        old.execute(dbmod.migration_steps()[1])
        old.pragma("user_version", 1)
        old.execute("INSERT INTO users VALUES ('u_1', 'alice', 'Alice', NULL, 'x', 'admin', ?, ?)", (T, T))
        old.execute("INSERT INTO networks(network_id, name, owner_id, created_at, updated_at)"
                    " VALUES ('net_1', 'default', 'u_1', ?, ?)", (T, T))
        old.execute("INSERT INTO sessions(network_id, alias, resume_id, status, last_seen_at, last_seen_ts,"
                    " created_at) VALUES ('net_1', 'worker', 'r', 'idle', ?, 0, ?)", (T, T))
        old.execute("INSERT INTO tasks(task_id, network_id, from_name, to_name, content, priority, status,"
                    " message_id, created_at, created_ts, updated_at) VALUES ('t1', 'net_1', 'alice', 'worker',"
                    " 'do it', 'high', 'running', 'msg_1', ?, 0, ?)", (T, T))
        old.execute("INSERT INTO messages(message_id, network_id, from_name, to_name, kind, content, created_at,"
                    " created_ts) VALUES ('msg_1', 'net_1', 'alice', 'worker', 'task', 'do it', ?, 0)", (T,))
        old.execute("INSERT INTO invites(invite_code, network_id, role, max_uses, created_by, created_at)"
                    " VALUES ('inv_plain', 'net_1', 'admin', 5, 'u_1', ?)", (T,))
        old.execute("INSERT INTO audit_log(network_id, actor, action, detail, created_at) VALUES ('net_1', 'alice',"
                    " 'invite_create', ?, ?)", (json.dumps({"invite_code": "inv_plain", "role": "admin"}), T))
    old.close()

    database = Database(path)
    try:
        task = database.query_one("SELECT * FROM tasks WHERE task_id = 't1'")
        assert task is not None
        assert (task["status"], task["priority"], task["content"]) == ("running", "high", "do it")
        assert (task["from_kind"], task["to_kind"]) == ("person", "agent")
        msg = database.query_one("SELECT from_kind, to_kind FROM messages")
        assert msg == {"from_kind": "person", "to_kind": "agent"}
        with database.write():
            database.execute("UPDATE tasks SET status = 'input_required' WHERE task_id = 't1'")
        invite = database.query_one("SELECT * FROM invites")
        assert invite is not None and invite["revoked_at"] and invite["role"] == "admin"
        assert invite["invite_id"].startswith("ivt_") and b"inv_plain" not in invite["code_hash"]
        entries = database.query("SELECT detail FROM audit_log")
        assert "inv_plain" not in json.dumps(entries) and json.loads(entries[0]["detail"]) == {"role": "admin"}
        assert database.con.pragma("integrity_check") == "ok"
        assert list(database.con.execute("PRAGMA foreign_key_check")) == []
    finally:
        database.close()
