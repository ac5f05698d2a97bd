-- CommHub schema: the single truth for a fresh database. Changing it means adding the next
-- numbered step in commhub_lib/migrations/ and bumping SCHEMA_VERSION in commhub_lib/db.py.
-- Times are UTC text 'YYYY-MM-DD HH:MM:SS' (the reference's format); *_ts columns are unix seconds.

CREATE TABLE users (
    user_id       TEXT PRIMARY KEY,
    username      TEXT NOT NULL UNIQUE COLLATE NOCASE,
    display_name  TEXT NOT NULL,
    email         TEXT,
    password_hash TEXT NOT NULL,
    role          TEXT NOT NULL CHECK (role IN ('admin', 'user')),
    created_at    TEXT NOT NULL,
    updated_at    TEXT NOT NULL
);

CREATE TABLE networks (
    network_id  TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    description TEXT NOT NULL DEFAULT '',
    owner_id    TEXT NOT NULL REFERENCES users(user_id),
    visibility  TEXT NOT NULL DEFAULT 'private',
    max_members INTEGER NOT NULL DEFAULT 50,
    created_at  TEXT NOT NULL,
    updated_at  TEXT NOT NULL
);

CREATE TABLE members (
    network_id TEXT NOT NULL REFERENCES networks(network_id) ON DELETE CASCADE,
    user_id    TEXT NOT NULL REFERENCES users(user_id) ON DELETE CASCADE,
    role       TEXT NOT NULL CHECK (role IN ('owner', 'admin', 'member')),
    joined_at  TEXT NOT NULL,
    PRIMARY KEY (network_id, user_id)
);
CREATE INDEX members_by_user ON members(user_id);

-- Invites: only the SHA-256 of a code is kept (the code is shown once, at creation); `invite_id` names it.
CREATE TABLE invites (
    invite_id   TEXT PRIMARY KEY,
    code_hash   BLOB NOT NULL UNIQUE,
    network_id  TEXT NOT NULL REFERENCES networks(network_id) ON DELETE CASCADE,
    role        TEXT NOT NULL CHECK (role IN ('admin', 'member')),
    max_uses    INTEGER NOT NULL,
    uses        INTEGER NOT NULL DEFAULT 0,
    created_by  TEXT NOT NULL REFERENCES users(user_id),
    created_at  TEXT NOT NULL,
    expires_at  TEXT,
    revoked_at  TEXT
);
CREATE INDEX invites_by_network ON invites(network_id, created_at);

-- Both kinds of bearer token: 'user' (utok_, a person's login) and 'network' (ntok_, an agent's API
-- token, scoped to one network and optionally bound to one alias). Only the SHA-256 of the secret is kept.
CREATE TABLE tokens (
    token_id     TEXT PRIMARY KEY,
    kind         TEXT NOT NULL CHECK (kind IN ('user', 'network')),
    token_hash   BLOB NOT NULL UNIQUE,
    user_id      TEXT NOT NULL REFERENCES users(user_id) ON DELETE CASCADE,
    network_id   TEXT REFERENCES networks(network_id) ON DELETE CASCADE,
    name         TEXT NOT NULL DEFAULT '',
    alias        TEXT,
    last_alias   TEXT,
    created_at   TEXT NOT NULL,
    last_used_at TEXT,
    revoked_at   TEXT,
    expires_at   TEXT
);
CREATE INDEX tokens_by_user ON tokens(user_id, kind);
CREATE INDEX tokens_by_alias ON tokens(network_id, alias) WHERE alias IS NOT NULL;  -- claim checks

CREATE TABLE nodes (
    node_id      TEXT PRIMARY KEY,
    network_id   TEXT NOT NULL REFERENCES networks(network_id) ON DELETE CASCADE,
    hostname     TEXT NOT NULL,
    platform     TEXT,
    agents       TEXT NOT NULL DEFAULT '[]',
    created_at   TEXT NOT NULL,
    last_seen_at TEXT NOT NULL,
    UNIQUE (network_id, hostname)
);

-- One row per alias ever claimed in a network; `token_id` is the current claimant (NULL: free to claim).
-- A retired alias (`retired_at`) can no longer be claimed or sent to.
CREATE TABLE sessions (
    network_id   TEXT NOT NULL REFERENCES networks(network_id) ON DELETE CASCADE,
    alias        TEXT NOT NULL,
    resume_id    TEXT NOT NULL,
    token_id     TEXT,
    status       TEXT NOT NULL CHECK (status IN ('idle', 'working', 'offline')),
    agent        TEXT,
    model        TEXT,
    task         TEXT,
    progress     TEXT,
    node_id      TEXT,
    last_seen_at TEXT NOT NULL,
    last_seen_ts REAL NOT NULL,
    created_at   TEXT NOT NULL,
    retired_at   TEXT,
    last_call_ts REAL NOT NULL DEFAULT 0,  -- the last tool call: online without a stream while recent (0017)
    PRIMARY KEY (network_id, alias)
);

CREATE TABLE tasks (
    task_id         TEXT PRIMARY KEY,
    network_id      TEXT NOT NULL REFERENCES networks(network_id) ON DELETE CASCADE,
    from_name       TEXT NOT NULL,
    from_kind       TEXT NOT NULL DEFAULT 'agent' CHECK (from_kind IN ('agent', 'person')),
    to_name         TEXT NOT NULL,
    to_kind         TEXT NOT NULL DEFAULT 'agent' CHECK (to_kind IN ('agent', 'person')),
    title           TEXT,
    content         TEXT NOT NULL,
    context         TEXT,
    priority        TEXT NOT NULL CHECK (priority IN ('low', 'normal', 'high', 'urgent')),
    status          TEXT NOT NULL CHECK (status IN ('delivered', 'running', 'input_required', 'replied',
                                                'failed', 'cancelled', 'expired')),
    deadline        TEXT,
    idempotency_key TEXT,
    message_id      TEXT NOT NULL,
    result          TEXT,
    created_at      TEXT NOT NULL,
    created_ts      REAL NOT NULL,
    updated_at      TEXT NOT NULL,
    -- A mark for a person's attention (service/tasks.py FLAGS: 'unanswered', set by a runner), and when.
    flag            TEXT,
    flagged_at      TEXT,
    -- Not started by then (docs/tasks-deadlines.md): the task expires instead (ISO text, and the same as a number).
    start_by        TEXT,
    start_by_ts     REAL,
    -- The schedule whose run this task is (docs/schedules.md); NULL for a task sent by hand.
    schedule_id     TEXT
);
CREATE UNIQUE INDEX tasks_idempotency ON tasks(network_id, from_name, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
-- Lists order by (created_ts DESC, rowid DESC): each index ends in the rowid, so one index serves a filter
-- and the order, and a LIMIT stops early (tests/test_query_plans.py checks the plans).
CREATE INDEX tasks_by_network ON tasks(network_id, created_ts);
CREATE INDEX tasks_by_recipient ON tasks(network_id, to_name, status);  -- an agent's open tasks (every inbox read)
CREATE INDEX tasks_by_status ON tasks(network_id, status, created_ts);
CREATE INDEX tasks_by_to_name ON tasks(network_id, to_name, created_ts);
CREATE INDEX tasks_by_from_name ON tasks(network_id, from_name, created_ts);
CREATE INDEX tasks_flagged ON tasks(network_id, flag, created_ts) WHERE flag IS NOT NULL;  -- ?flag= lists
CREATE INDEX tasks_start_by ON tasks(start_by_ts) WHERE start_by_ts IS NOT NULL AND status = 'delivered';  -- expiry

-- Task counts per network and status for /api/stats, kept by triggers (counting a million tasks takes
-- tens of milliseconds on the event loop). A step that rebuilds `tasks` must recreate these triggers.
CREATE TABLE task_counts (
    network_id TEXT NOT NULL REFERENCES networks(network_id) ON DELETE CASCADE,
    status     TEXT NOT NULL,
    n          INTEGER NOT NULL,
    PRIMARY KEY (network_id, status)
) WITHOUT ROWID;
CREATE TRIGGER task_counts_insert AFTER INSERT ON tasks BEGIN
    INSERT INTO task_counts(network_id, status, n) VALUES (new.network_id, new.status, 1)
        ON CONFLICT (network_id, status) DO UPDATE SET n = n + 1;
END;
CREATE TRIGGER task_counts_update AFTER UPDATE OF status, network_id ON tasks
    WHEN old.status IS NOT new.status OR old.network_id IS NOT new.network_id BEGIN
    UPDATE task_counts SET n = n - 1 WHERE network_id = old.network_id AND status = old.status;
    INSERT INTO task_counts(network_id, status, n) VALUES (new.network_id, new.status, 1)
        ON CONFLICT (network_id, status) DO UPDATE SET n = n + 1;
END;
CREATE TRIGGER task_counts_delete AFTER DELETE ON tasks BEGIN
    UPDATE task_counts SET n = n - 1 WHERE network_id = old.network_id AND status = old.status;
END;

-- Each text is stored once. A broadcast's copies share one `bodies` row (messages.body_id, content '');
-- a task notice's text is its task's content (content ''); a task's result is its completion's. The
-- store's read queries put the text back; a body goes with the last message or SSE event that uses it (a
-- broadcast's events carry its body_id, not the text: store/events.py puts it back on replay).
CREATE TABLE bodies (
    body_id    INTEGER PRIMARY KEY,
    content    TEXT NOT NULL,
    network_id TEXT
);

-- Inbox items. kind: message | task | reply | broadcast | notice. `from_kind`/`to_kind` tell a person
-- (user, addressed by username) from an agent (alias), so neither can pose as the other.
CREATE TABLE messages (
    message_id  TEXT PRIMARY KEY,
    network_id  TEXT NOT NULL REFERENCES networks(network_id) ON DELETE CASCADE,
    from_name   TEXT NOT NULL,
    to_name     TEXT NOT NULL,
    kind        TEXT NOT NULL CHECK (kind IN ('message', 'task', 'reply', 'broadcast', 'notice')),
    content     TEXT NOT NULL,
    priority    TEXT NOT NULL DEFAULT 'normal',
    in_reply_to TEXT,
    task_id     TEXT,
    status      TEXT,
    created_at  TEXT NOT NULL,
    created_ts  REAL NOT NULL,
    read_at     TEXT,
    from_kind   TEXT NOT NULL DEFAULT 'agent' CHECK (from_kind IN ('agent', 'person')),
    to_kind     TEXT NOT NULL DEFAULT 'agent' CHECK (to_kind IN ('agent', 'person')),
    body_id     INTEGER REFERENCES bodies(body_id),
    content_hash INTEGER  -- loop guard (service/loopguard.py): who sent what to whom, for the duplicate window
);
-- An alias's unread items, newest first (the inbox, its count, and ?alias=&unread=1). `read_at IS NULL`
-- is an equality for the planner: three equal columns here beat two in messages_by_recipient.
CREATE INDEX messages_unread ON messages(network_id, to_name, read_at, created_ts);
CREATE INDEX messages_by_network ON messages(network_id, created_ts);
CREATE INDEX messages_by_recipient ON messages(network_id, to_name, created_ts);
CREATE INDEX messages_by_kind ON messages(network_id, kind, created_ts);
CREATE INDEX messages_unread_by_network ON messages(network_id, read_at, created_ts);
CREATE INDEX messages_by_body ON messages(body_id) WHERE body_id IS NOT NULL;
-- The question a task waits on ("needs you", service/needs.py): its newest `question` reply, by task, and
-- whether an answer came after it.
CREATE INDEX messages_questions ON messages(task_id, created_ts) WHERE status = 'question';
CREATE INDEX messages_answers ON messages(task_id, created_ts) WHERE status = 'answer';

-- Unread items per recipient, kept by triggers in the writing transaction: every new task pushes the
-- recipient's inbox_count, and report_status/get_inbox/ack_inbox return it; a count(*) over the unread
-- items grows with the backlog. A step that rebuilds `messages` must recreate these triggers.
CREATE TABLE unread_counts (
    network_id TEXT NOT NULL REFERENCES networks(network_id) ON DELETE CASCADE,
    to_name    TEXT NOT NULL,
    to_kind    TEXT NOT NULL,
    n          INTEGER NOT NULL,
    PRIMARY KEY (network_id, to_name, to_kind)
) WITHOUT ROWID;
CREATE TRIGGER unread_counts_insert AFTER INSERT ON messages WHEN new.read_at IS NULL BEGIN
    INSERT INTO unread_counts(network_id, to_name, to_kind, n) VALUES (new.network_id, new.to_name, new.to_kind, 1)
        ON CONFLICT (network_id, to_name, to_kind) DO UPDATE SET n = n + 1;
END;
CREATE TRIGGER unread_counts_update_old AFTER UPDATE OF read_at, network_id, to_name, to_kind ON messages
    WHEN old.read_at IS NULL AND (new.read_at IS NOT NULL OR old.network_id IS NOT new.network_id
        OR old.to_name IS NOT new.to_name OR old.to_kind IS NOT new.to_kind) BEGIN
    UPDATE unread_counts SET n = n - 1
        WHERE network_id = old.network_id AND to_name = old.to_name AND to_kind = old.to_kind;
END;
CREATE TRIGGER unread_counts_update_new AFTER UPDATE OF read_at, network_id, to_name, to_kind ON messages
    WHEN new.read_at IS NULL AND (old.read_at IS NOT NULL OR old.network_id IS NOT new.network_id
        OR old.to_name IS NOT new.to_name OR old.to_kind IS NOT new.to_kind) BEGIN
    INSERT INTO unread_counts(network_id, to_name, to_kind, n) VALUES (new.network_id, new.to_name, new.to_kind, 1)
        ON CONFLICT (network_id, to_name, to_kind) DO UPDATE SET n = n + 1;
END;
CREATE TRIGGER unread_counts_delete AFTER DELETE ON messages WHEN old.read_at IS NULL BEGIN
    UPDATE unread_counts SET n = n - 1
        WHERE network_id = old.network_id AND to_name = old.to_name AND to_kind = old.to_kind;
END;

CREATE TABLE task_events (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    task_id    TEXT NOT NULL,
    network_id TEXT NOT NULL REFERENCES networks(network_id) ON DELETE CASCADE,
    event      TEXT NOT NULL,
    actor      TEXT NOT NULL,
    detail     TEXT,
    created_at TEXT NOT NULL
);
CREATE INDEX task_events_by_task ON task_events(task_id, id);
CREATE INDEX task_events_by_network ON task_events(network_id, id);

CREATE TABLE completions (
    task_id          TEXT PRIMARY KEY,
    network_id       TEXT NOT NULL REFERENCES networks(network_id) ON DELETE CASCADE,
    alias            TEXT NOT NULL,
    status           TEXT NOT NULL,
    result           TEXT,
    artifacts        TEXT NOT NULL DEFAULT '[]',
    duration_seconds REAL NOT NULL,
    completed_at     TEXT NOT NULL
);
CREATE INDEX completions_by_network ON completions(network_id, completed_at);
CREATE INDEX completions_by_alias ON completions(network_id, alias, completed_at);

-- The durable SSE log: an event is written here before it is pushed; its id is the SSE `id:`.
CREATE TABLE events (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    network_id TEXT NOT NULL REFERENCES networks(network_id) ON DELETE CASCADE,
    alias      TEXT NOT NULL,
    event      TEXT NOT NULL,
    data       TEXT NOT NULL,
    created_at TEXT NOT NULL,
    body_id    INTEGER REFERENCES bodies(body_id)
);
CREATE INDEX events_by_alias ON events(network_id, alias, id);
CREATE INDEX events_by_body ON events(body_id) WHERE body_id IS NOT NULL;
-- The loops the guard broke, newest first per network ("needs you", service/needs.py).
CREATE INDEX events_loop_broken ON events(network_id, id) WHERE event = 'loop_broken';
CREATE TRIGGER bodies_release AFTER DELETE ON messages WHEN old.body_id IS NOT NULL BEGIN
    DELETE FROM bodies WHERE body_id = old.body_id
        AND NOT EXISTS (SELECT 1 FROM messages WHERE body_id = old.body_id)
        AND NOT EXISTS (SELECT 1 FROM events WHERE body_id = old.body_id);
END;
CREATE TRIGGER bodies_release_by_event AFTER DELETE ON events WHEN old.body_id IS NOT NULL BEGIN
    DELETE FROM bodies WHERE body_id = old.body_id
        AND NOT EXISTS (SELECT 1 FROM events WHERE body_id = old.body_id)
        AND NOT EXISTS (SELECT 1 FROM messages WHERE body_id = old.body_id);
END;

CREATE TABLE audit_log (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    network_id TEXT,
    user_id    TEXT,
    actor      TEXT NOT NULL,
    action     TEXT NOT NULL,
    detail     TEXT NOT NULL DEFAULT '',
    ip         TEXT,
    created_at TEXT NOT NULL
);
CREATE INDEX audit_by_network ON audit_log(network_id, id);

-- Bytes kept per network (README "Limits and quotas"), kept by triggers in the writing transaction so the quota
-- check (max_network_bytes) and GET /api/networks/<id>/usage read one row, never a scan. text_bytes: inbox
-- items, bodies, tasks, completions and task events; event_bytes: the SSE event log (pruned after
-- event_retention_days). Each row also counts a fixed estimate of its row and index entries (200 bytes an inbox
-- item, 300 a task, 100 a completion, task event or SSE event), so a flood of empty messages counts too.
-- Each network gets its row when it is made; the triggers only UPDATE it (cheaper than an upsert per write).
-- A step that rebuilds networks, messages, bodies, tasks, completions, task_events or events must recreate them.
CREATE TABLE network_usage (
    network_id  TEXT PRIMARY KEY REFERENCES networks(network_id) ON DELETE CASCADE,
    text_bytes  INTEGER NOT NULL DEFAULT 0,
    event_bytes INTEGER NOT NULL DEFAULT 0,
    file_bytes  INTEGER NOT NULL DEFAULT 0  -- attachments (blobs and their rows), by the attachment triggers below
) WITHOUT ROWID;
CREATE TRIGGER usage_networks_insert AFTER INSERT ON networks BEGIN
    INSERT INTO network_usage(network_id) VALUES (new.network_id);
END;
CREATE TRIGGER usage_messages_insert AFTER INSERT ON messages BEGIN
    UPDATE network_usage SET text_bytes = text_bytes + 200 + octet_length(new.content)
        WHERE network_id = new.network_id;
END;
CREATE TRIGGER usage_messages_delete AFTER DELETE ON messages BEGIN
    UPDATE network_usage SET text_bytes = text_bytes - 200 - octet_length(old.content)
        WHERE network_id = old.network_id;
END;
CREATE TRIGGER usage_bodies_insert AFTER INSERT ON bodies WHEN new.network_id IS NOT NULL BEGIN
    UPDATE network_usage SET text_bytes = text_bytes + octet_length(new.content) WHERE network_id = new.network_id;
END;
CREATE TRIGGER usage_bodies_delete AFTER DELETE ON bodies WHEN old.network_id IS NOT NULL BEGIN
    UPDATE network_usage SET text_bytes = text_bytes - octet_length(old.content) WHERE network_id = old.network_id;
END;
CREATE TRIGGER usage_tasks_insert AFTER INSERT ON tasks BEGIN
    UPDATE network_usage SET text_bytes = text_bytes + 300 + octet_length(new.content)
            + coalesce(octet_length(new.title), 0) + coalesce(octet_length(new.context), 0)
        WHERE network_id = new.network_id;
END;
CREATE TRIGGER usage_tasks_delete AFTER DELETE ON tasks BEGIN
    UPDATE network_usage SET text_bytes = text_bytes - 300 - octet_length(old.content)
            - coalesce(octet_length(old.title), 0) - coalesce(octet_length(old.context), 0)
        WHERE network_id = old.network_id;
END;
CREATE TRIGGER usage_completions_insert AFTER INSERT ON completions BEGIN
    UPDATE network_usage SET text_bytes = text_bytes + 100 + coalesce(octet_length(new.result), 0)
            + octet_length(new.artifacts)
        WHERE network_id = new.network_id;
END;
CREATE TRIGGER usage_completions_delete AFTER DELETE ON completions BEGIN
    UPDATE network_usage SET text_bytes = text_bytes - 100 - coalesce(octet_length(old.result), 0)
            - octet_length(old.artifacts)
        WHERE network_id = old.network_id;
END;
CREATE TRIGGER usage_task_events_insert AFTER INSERT ON task_events BEGIN
    UPDATE network_usage SET text_bytes = text_bytes + 100 + coalesce(octet_length(new.detail), 0)
        WHERE network_id = new.network_id;
END;
CREATE TRIGGER usage_task_events_delete AFTER DELETE ON task_events BEGIN
    UPDATE network_usage SET text_bytes = text_bytes - 100 - coalesce(octet_length(old.detail), 0)
        WHERE network_id = old.network_id;
END;
CREATE TRIGGER usage_events_insert AFTER INSERT ON events BEGIN
    UPDATE network_usage SET event_bytes = event_bytes + 100 + octet_length(new.data)
        WHERE network_id = new.network_id;
END;
CREATE TRIGGER usage_events_delete AFTER DELETE ON events BEGIN
    UPDATE network_usage SET event_bytes = event_bytes - 100 - octet_length(old.data)
        WHERE network_id = old.network_id;
END;
-- Approvals: an agent's question to a person that it waits on (docs/runner-server.md). The question is an
-- ordinary inbox item and its message id is the approval's id; this row marks it as an approval and keeps
-- how it was answered (status pending -> approved | denied, by the words in service/verdicts.py).
CREATE TABLE approvals (
    approval_id TEXT PRIMARY KEY,
    network_id  TEXT NOT NULL REFERENCES networks(network_id) ON DELETE CASCADE,
    alias       TEXT NOT NULL,
    task_id     TEXT,
    asked_name  TEXT NOT NULL,
    asked_kind  TEXT NOT NULL CHECK (asked_kind IN ('agent', 'person')),
    status      TEXT NOT NULL CHECK (status IN ('pending', 'approved', 'denied')),
    answer      TEXT,
    answer_id   TEXT,
    answered_by TEXT,
    created_at  TEXT NOT NULL,
    answered_at TEXT
);
CREATE INDEX approvals_by_alias ON approvals(network_id, alias, status);  -- a reply to an agent settles one
CREATE INDEX approvals_by_network ON approvals(network_id, created_at);

-- Full-text search (docs/search.md): one FTS5 index per table that stores a text once, each an external-content
-- table (the index keeps tokens, the text stays in its table), kept by triggers in the writing transaction.
-- A task notice's text is its task's (content ''), a broadcast copy's is its body's (content ''): only rows
-- with their own text are indexed, so each text is found once. The index rows are keyed by the table's rowid;
-- a step that rebuilds tasks, messages or bodies must re-create these triggers and rebuild the index.
-- network_id is indexed too: a search names the caller's networks inside the FTS5 query, so FTS5 skips the other
-- networks' hits itself (a word common elsewhere but absent from the caller's networks cost ~0.6 s at 1M
-- messages when each hit was joined to its row and dropped there).
CREATE VIRTUAL TABLE search_tasks USING fts5(title, content, context, network_id, content='tasks',
    tokenize='unicode61 remove_diacritics 2');
CREATE VIRTUAL TABLE search_messages USING fts5(content, network_id, content='messages',
    tokenize='unicode61 remove_diacritics 2');
CREATE VIRTUAL TABLE search_bodies USING fts5(content, network_id, content='bodies',
    tokenize='unicode61 remove_diacritics 2');
CREATE TRIGGER search_tasks_insert AFTER INSERT ON tasks BEGIN
    INSERT INTO search_tasks(rowid, title, content, context, network_id)
        VALUES (new.rowid, new.title, new.content, new.context, new.network_id);
END;
CREATE TRIGGER search_tasks_delete AFTER DELETE ON tasks BEGIN
    INSERT INTO search_tasks(search_tasks, rowid, title, content, context, network_id)
        VALUES ('delete', old.rowid, old.title, old.content, old.context, old.network_id);
END;
CREATE TRIGGER search_tasks_update AFTER UPDATE OF title, content, context, network_id ON tasks BEGIN
    INSERT INTO search_tasks(search_tasks, rowid, title, content, context, network_id)
        VALUES ('delete', old.rowid, old.title, old.content, old.context, old.network_id);
    INSERT INTO search_tasks(rowid, title, content, context, network_id)
        VALUES (new.rowid, new.title, new.content, new.context, new.network_id);
END;
CREATE TRIGGER search_messages_insert AFTER INSERT ON messages WHEN new.kind <> 'task' AND new.content <> '' BEGIN
    INSERT INTO search_messages(rowid, content, network_id) VALUES (new.rowid, new.content, new.network_id);
END;
CREATE TRIGGER search_messages_delete AFTER DELETE ON messages WHEN old.kind <> 'task' AND old.content <> '' BEGIN
    INSERT INTO search_messages(search_messages, rowid, content, network_id)
        VALUES ('delete', old.rowid, old.content, old.network_id);
END;
CREATE TRIGGER search_messages_update_old AFTER UPDATE OF kind, content, network_id ON messages
    WHEN old.kind <> 'task' AND old.content <> '' BEGIN
    INSERT INTO search_messages(search_messages, rowid, content, network_id)
        VALUES ('delete', old.rowid, old.content, old.network_id);
END;
CREATE TRIGGER search_messages_update_new AFTER UPDATE OF kind, content, network_id ON messages
    WHEN new.kind <> 'task' AND new.content <> '' BEGIN
    INSERT INTO search_messages(rowid, content, network_id) VALUES (new.rowid, new.content, new.network_id);
END;
CREATE TRIGGER search_bodies_insert AFTER INSERT ON bodies BEGIN
    INSERT INTO search_bodies(rowid, content, network_id) VALUES (new.rowid, new.content, new.network_id);
END;
CREATE TRIGGER search_bodies_delete AFTER DELETE ON bodies BEGIN
    INSERT INTO search_bodies(search_bodies, rowid, content, network_id)
        VALUES ('delete', old.rowid, old.content, old.network_id);
END;
CREATE TRIGGER search_bodies_update AFTER UPDATE OF content, network_id ON bodies BEGIN
    INSERT INTO search_bodies(search_bodies, rowid, content, network_id)
        VALUES ('delete', old.rowid, old.content, old.network_id);
    INSERT INTO search_bodies(rowid, content, network_id) VALUES (new.rowid, new.content, new.network_id);
END;

-- Webhooks (docs/webhooks.md): per network, a URL that each matching event is POSTed to, signed with the
-- webhook's secret (kept in clear: the HMAC needs it; shown once to its creator). `events`/`aliases` are JSON
-- arrays, empty = every one. A webhook failing since `failing_since_ts` for webhook_disable_after_seconds is
-- disabled (`enabled` 0, `disabled_reason` says why).
CREATE TABLE webhooks (
    webhook_id       TEXT PRIMARY KEY,
    network_id       TEXT NOT NULL REFERENCES networks(network_id) ON DELETE CASCADE,
    url              TEXT NOT NULL,
    secret           TEXT NOT NULL,
    events           TEXT NOT NULL DEFAULT '[]',
    aliases          TEXT NOT NULL DEFAULT '[]',
    description      TEXT NOT NULL DEFAULT '',
    enabled          INTEGER NOT NULL DEFAULT 1,
    disabled_reason  TEXT,
    failing_since_ts REAL,
    created_by       TEXT NOT NULL,
    created_at       TEXT NOT NULL
);
CREATE INDEX webhooks_by_network ON webhooks(network_id);

-- The durable outbox and the delivery log in one: a row per (webhook, event), written in the same transaction
-- as the event (Hub.record_event); status pending -> delivered | failed (given up: the webhook was disabled or
-- deleted). The event's JSON is kept here so a delivery outlives the event's retention.
CREATE TABLE webhook_deliveries (
    delivery_id     INTEGER PRIMARY KEY,  -- no AUTOINCREMENT: its sqlite_sequence write cost every send more
    webhook_id      TEXT NOT NULL REFERENCES webhooks(webhook_id) ON DELETE CASCADE,
    event_id        INTEGER NOT NULL,
    event           TEXT NOT NULL,
    alias           TEXT NOT NULL,
    payload         TEXT NOT NULL,
    status          TEXT NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'delivered', 'failed')),
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_ts REAL NOT NULL DEFAULT 0,
    last_status     INTEGER,
    last_error      TEXT,
    created_at      TEXT NOT NULL,
    updated_at      TEXT NOT NULL
);
-- One index serves the worker (a webhook's oldest pending row) and the log (a webhook's rows, newest first):
-- measured, a second index on the table added ~60 µs of CPU to every send that writes an outbox row.
CREATE INDEX webhook_deliveries_by_status ON webhook_deliveries(webhook_id, status, delivery_id);

-- Schedules (docs/schedules.md): a task sent to an alias once, every N seconds or by a cron expression in an IANA
-- time zone; each run is an ordinary task carrying schedule_id.
CREATE TABLE schedules (
    schedule_id      TEXT PRIMARY KEY,
    network_id       TEXT NOT NULL REFERENCES networks(network_id) ON DELETE CASCADE,
    created_by       TEXT NOT NULL,  -- the user behind it (a person, or the creator of the agent's token)
    token_id         TEXT,           -- an agent's schedule: the token it was made with (revoked: runs stop)
    from_name        TEXT NOT NULL,
    from_kind        TEXT NOT NULL CHECK (from_kind IN ('agent', 'person')),
    to_name          TEXT NOT NULL,
    title            TEXT,
    content          TEXT NOT NULL,
    context          TEXT,
    priority         TEXT NOT NULL CHECK (priority IN ('low', 'normal', 'high', 'urgent')),
    kind             TEXT NOT NULL CHECK (kind IN ('once', 'every', 'cron')),
    run_at           TEXT,
    every_seconds    INTEGER,
    cron             TEXT,
    tz               TEXT NOT NULL DEFAULT 'UTC',
    missed           TEXT NOT NULL DEFAULT 'run_once' CHECK (missed IN ('run_once', 'skip')),
    state            TEXT NOT NULL DEFAULT 'active' CHECK (state IN ('active', 'paused', 'finished')),
    next_run_ts      REAL,           -- NULL while paused or finished
    last_run_at      TEXT,
    last_task_id     TEXT,
    run_count        INTEGER NOT NULL DEFAULT 0,
    skip_count       INTEGER NOT NULL DEFAULT 0,
    last_skipped_at  TEXT,
    last_skip_reason TEXT,
    created_at       TEXT NOT NULL,
    updated_at       TEXT NOT NULL
);
-- The scheduler's one question: the earliest next run (only active schedules have one).
CREATE INDEX schedules_due ON schedules(next_run_ts) WHERE next_run_ts IS NOT NULL;
CREATE INDEX schedules_by_network ON schedules(network_id, created_at);

-- A2A server (docs/a2a.md): the aliases an owner/admin serves as A2A agents, and the A2A side of each task an A2A
-- client sent (the conversation it belongs to: contextId), by CommHub task id (the A2A task id is the task id).
CREATE TABLE a2a_agents (
    network_id  TEXT NOT NULL REFERENCES networks(network_id) ON DELETE CASCADE,
    alias       TEXT NOT NULL,
    enabled     INTEGER NOT NULL DEFAULT 1,
    description TEXT NOT NULL DEFAULT '',
    updated_by  TEXT NOT NULL,
    updated_at  TEXT NOT NULL,
    PRIMARY KEY (network_id, alias)
);
CREATE TABLE a2a_tasks (
    task_id     TEXT PRIMARY KEY,
    network_id  TEXT NOT NULL REFERENCES networks(network_id) ON DELETE CASCADE,
    alias       TEXT NOT NULL,
    caller      TEXT NOT NULL,
    context_id  TEXT NOT NULL,
    created_at  TEXT NOT NULL
);
-- Attachments (docs/attachments.md): files sent with tasks, messages and replies. A file's bytes are kept once per
-- network (attachment_blobs, by SHA-256): the same bytes uploaded again reuse the blob. Each upload is its own
-- attachment (att_ id, filename, content type) pointing at a blob; attachment_links ties an attachment to the items
-- it was sent with (a task by its task_id, a message or reply by its message_id; `task_id`: the task a reply is
-- about, so the task lists its replies' files). The triggers keep the rest in the writing transaction: an item
-- deleted (retention, a network's deletion) drops its links; an attachment whose last link went goes with it; a
-- blob no attachment uses goes; network_usage.file_bytes counts the blobs' bytes and each row.
CREATE TABLE attachment_blobs (
    blob_id    INTEGER PRIMARY KEY,
    network_id TEXT NOT NULL REFERENCES networks(network_id) ON DELETE CASCADE,
    sha256     TEXT NOT NULL,
    size       INTEGER NOT NULL,
    data       BLOB NOT NULL,
    UNIQUE (network_id, sha256)
);
CREATE TABLE attachments (
    attachment_id TEXT PRIMARY KEY,
    network_id    TEXT NOT NULL REFERENCES networks(network_id) ON DELETE CASCADE,
    blob_id       INTEGER NOT NULL REFERENCES attachment_blobs(blob_id) ON DELETE CASCADE,
    filename      TEXT NOT NULL,
    content_type  TEXT NOT NULL,
    uploaded_by   TEXT NOT NULL,  -- the uploader's user_id: before it is sent, only they may read or send it
    created_at    TEXT NOT NULL,
    created_ts    REAL NOT NULL
);
CREATE INDEX attachments_by_blob ON attachments(blob_id);
CREATE INDEX attachments_by_time ON attachments(created_ts);  -- the prune of uploads never sent
CREATE TABLE attachment_links (
    item_id       TEXT NOT NULL,
    attachment_id TEXT NOT NULL REFERENCES attachments(attachment_id) ON DELETE CASCADE,
    network_id    TEXT NOT NULL REFERENCES networks(network_id) ON DELETE CASCADE,
    task_id       TEXT,
    position      INTEGER NOT NULL,
    PRIMARY KEY (item_id, attachment_id)
) WITHOUT ROWID;
CREATE INDEX attachment_links_by_attachment ON attachment_links(attachment_id);
CREATE INDEX attachment_links_by_task ON attachment_links(task_id) WHERE task_id IS NOT NULL;
CREATE TRIGGER attachment_links_task_gone AFTER DELETE ON tasks BEGIN
    DELETE FROM attachment_links WHERE item_id = old.task_id;
END;
CREATE TRIGGER attachment_links_message_gone AFTER DELETE ON messages BEGIN
    DELETE FROM attachment_links WHERE item_id = old.message_id;
END;
CREATE TRIGGER attachments_release AFTER DELETE ON attachment_links BEGIN
    DELETE FROM attachments WHERE attachment_id = old.attachment_id
        AND NOT EXISTS (SELECT 1 FROM attachment_links WHERE attachment_id = old.attachment_id);
END;
CREATE TRIGGER attachment_blobs_release AFTER DELETE ON attachments BEGIN
    DELETE FROM attachment_blobs WHERE blob_id = old.blob_id
        AND NOT EXISTS (SELECT 1 FROM attachments WHERE blob_id = old.blob_id);
END;
CREATE TRIGGER usage_attachment_blobs_insert AFTER INSERT ON attachment_blobs BEGIN
    UPDATE network_usage SET file_bytes = file_bytes + 200 + new.size WHERE network_id = new.network_id;
END;
CREATE TRIGGER usage_attachment_blobs_delete AFTER DELETE ON attachment_blobs BEGIN
    UPDATE network_usage SET file_bytes = file_bytes - 200 - old.size WHERE network_id = old.network_id;
END;
CREATE TRIGGER usage_attachments_insert AFTER INSERT ON attachments BEGIN
    UPDATE network_usage SET file_bytes = file_bytes + 200 + octet_length(new.filename)
            + octet_length(new.content_type)
        WHERE network_id = new.network_id;
END;
CREATE TRIGGER usage_attachments_delete AFTER DELETE ON attachments BEGIN
    UPDATE network_usage SET file_bytes = file_bytes - 200 - octet_length(old.filename)
            - octet_length(old.content_type)
        WHERE network_id = old.network_id;
END;


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

-- Stream presence (0018): each process's live agent streams per alias (how many, and the strongest holder kind), kept
-- by that process (written a moment after a stream opens, at once when one closes, refreshed every third of
-- stream_presence_ttl_seconds). A row past expires_ts is ignored: a killed process's streams lapse by themselves.
CREATE TABLE stream_presence (
    network_id TEXT NOT NULL,  -- no foreign key: a row of a network deleted meanwhile lapses with its TTL
    alias      TEXT NOT NULL,
    process    TEXT NOT NULL,
    streams    INTEGER NOT NULL,
    held_by    TEXT NOT NULL,
    expires_ts REAL NOT NULL,
    PRIMARY KEY (network_id, alias, process)
);
CREATE INDEX stream_presence_process ON stream_presence(process);

-- MCP sessions (0018; Mcp-Session-Id): what a request needs from its session whichever process it lands on (the
-- token it was issued to, the negotiated version, the alias claimed on it). `ended` is set when the session is
-- ended (DELETE /mcp) or evicted by a cap: every process then answers its id 404. Rows unused for a day go.
CREATE TABLE mcp_sessions (
    session_id       TEXT PRIMARY KEY,
    token_id         TEXT NOT NULL REFERENCES tokens(token_id) ON DELETE CASCADE,
    protocol_version TEXT NOT NULL,
    alias            TEXT,
    client           TEXT,
    created_ts       REAL NOT NULL,
    used_ts          REAL NOT NULL,
    ended            TEXT
);
CREATE INDEX mcp_sessions_used ON mcp_sessions(used_ts);
