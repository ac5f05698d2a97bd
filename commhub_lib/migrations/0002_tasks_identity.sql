-- Step 2: the task question state (input_required), people and agents told apart (from_kind/to_kind),
-- token expiry, retired aliases, and invites kept only as a hash of their code.
-- SQLite cannot change a CHECK constraint or a primary key in place: tasks and invites are rebuilt
-- (renamed aside, created as in schema.sql, copied, dropped). No other table refers to them.

ALTER TABLE tasks RENAME TO tasks_v1;
DROP INDEX tasks_idempotency;
DROP INDEX tasks_by_network;
DROP INDEX tasks_by_recipient;
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
                                                'failed', 'cancelled')),
    deadline        TEXT,
    idempotency_key TEXT,
    message_id      TEXT NOT NULL,
    result          TEXT,
    created_at      TEXT NOT NULL,
    created_ts      REAL NOT NULL,
    updated_at      TEXT NOT NULL
);
CREATE UNIQUE INDEX tasks_idempotency ON tasks(network_id, from_name, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
CREATE INDEX tasks_by_network ON tasks(network_id, created_ts);
CREATE INDEX tasks_by_recipient ON tasks(network_id, to_name, status);

INSERT INTO tasks(task_id, network_id, from_name, to_name, title, content, context, priority, status, deadline,
                  idempotency_key, message_id, result, created_at, created_ts, updated_at)
    SELECT task_id, network_id, from_name, to_name, title, content, context, priority, status, deadline,
           idempotency_key, message_id, result, created_at, created_ts, updated_at FROM tasks_v1;
DROP TABLE tasks_v1;

ALTER TABLE messages ADD COLUMN from_kind TEXT NOT NULL DEFAULT 'agent' CHECK (from_kind IN ('agent', 'person'));
ALTER TABLE messages ADD COLUMN to_kind TEXT NOT NULL DEFAULT 'agent' CHECK (to_kind IN ('agent', 'person'));

-- Before this step a person sent as their username: a name that is a username and was never an alias of
-- the network was a person.
UPDATE tasks SET from_kind = 'person' WHERE from_name IN (SELECT username FROM users)
    AND from_name NOT IN (SELECT alias FROM sessions s WHERE s.network_id = tasks.network_id);
UPDATE messages SET from_kind = 'person' WHERE from_name IN (SELECT username FROM users)
    AND from_name NOT IN (SELECT alias FROM sessions s WHERE s.network_id = messages.network_id);
UPDATE messages SET to_kind = 'person' WHERE to_name IN (SELECT username FROM users)
    AND to_name NOT IN (SELECT alias FROM sessions s WHERE s.network_id = messages.network_id);

ALTER TABLE tokens ADD COLUMN expires_at TEXT;
ALTER TABLE sessions ADD COLUMN retired_at TEXT;

-- Invite codes were stored (and written to the audit log) in plain text, so they must be treated as
-- known: existing invites are carried over revoked, under a random hash no code matches. Re-create them.
ALTER TABLE invites RENAME TO invites_v1;
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

INSERT INTO invites(invite_id, code_hash, network_id, role, max_uses, uses, created_by, created_at, expires_at,
                    revoked_at)
    SELECT 'ivt_' || lower(hex(randomblob(8))), randomblob(32), network_id, role, max_uses, uses, created_by,
           created_at, expires_at, strftime('%Y-%m-%d %H:%M:%S', 'now') FROM invites_v1;
DROP TABLE invites_v1;
UPDATE audit_log SET detail = json_remove(detail, '$.invite_code')
    WHERE action IN ('invite_create', 'invite_redeem') AND json_valid(detail);
