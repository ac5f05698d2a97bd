-- A2A client (docs/a2a-client.md): an alias bound to an external A2A agent. Tasks sent to the alias are forwarded
-- to the agent's URL by the bridge job (commhub_lib/bridge/), with `token` as the bearer credential (kept in clear:
-- it must be sent; the API never shows it).
CREATE TABLE a2a_remotes (
    network_id TEXT NOT NULL REFERENCES networks(network_id) ON DELETE CASCADE,
    alias      TEXT NOT NULL,
    url        TEXT NOT NULL,
    token      TEXT,
    enabled    INTEGER NOT NULL DEFAULT 1,
    created_by TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (network_id, alias)
);

-- The bridge's durable outbox: a row per thing to tell a remote agent (a new task, an answer to its question, a
-- cancel), written in the same transaction as the event that caused it (Hub.record_event); sent in id order per
-- task, retried with backoff: pending -> sent | failed (given up).
CREATE TABLE a2a_outbox (
    outbox_id       INTEGER PRIMARY KEY,
    network_id      TEXT NOT NULL,
    alias           TEXT NOT NULL,
    kind            TEXT NOT NULL CHECK (kind IN ('task', 'answer', 'cancel')),
    task_id         TEXT NOT NULL,
    message_id      TEXT,
    status          TEXT NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'sent', 'failed')),
    attempts        INTEGER NOT NULL DEFAULT 0,
    first_try_ts    REAL,
    next_attempt_ts REAL NOT NULL DEFAULT 0,
    last_error      TEXT,
    created_at      TEXT NOT NULL,
    updated_at      TEXT NOT NULL
);
CREATE INDEX a2a_outbox_by_task ON a2a_outbox(task_id, status, outbox_id);
CREATE INDEX a2a_outbox_pending ON a2a_outbox(status, task_id);

-- A CommHub task forwarded to a remote agent: the remote task's ids and the last state seen, followed (polled)
-- while `following` is 1, so a restart picks up where the last process left off.
CREATE TABLE a2a_forwarded (
    task_id           TEXT PRIMARY KEY,
    network_id        TEXT NOT NULL,
    alias             TEXT NOT NULL,
    remote_task_id    TEXT NOT NULL,
    remote_context_id TEXT,
    remote_state      TEXT,
    seen              TEXT,
    following         INTEGER NOT NULL DEFAULT 1,
    poll_seconds      REAL NOT NULL DEFAULT 0,
    next_poll_ts      REAL NOT NULL DEFAULT 0,
    created_at        TEXT NOT NULL,
    updated_at        TEXT NOT NULL
);
CREATE INDEX a2a_forwarded_following ON a2a_forwarded(following) WHERE following = 1;
