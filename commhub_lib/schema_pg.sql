-- CommHub schema for PostgreSQL: the same tables, constraints, counters and order as schema.sql (SQLite) at schema
-- version 17 (db_pg.PG_BASE_VERSION). A fresh PostgreSQL database is created from this file; each later SQLite
-- migration that changes the schema has a twin in migrations/pg/ (tests/test_pg_schema.py fails when one is
-- missing). The version is kept in the table commhub_schema (PostgreSQL has no user_version).
-- Differences from the SQLite text, and why:
-- - INTEGER -> bigint, REAL -> double precision, BLOB -> bytea; SQLite's INTEGER PRIMARY KEY [AUTOINCREMENT]
--   ids -> bigint identity columns.
-- - Lists that SQLite orders by rowid order by `seq bigint generated always as identity` (store/dialect.py turns
--   the store's `rowid` into `seq`): messages, tasks, sessions, approvals, completions, schedules, tokens.
-- - COLLATE NOCASE -> the ICU collation `nocase` below (case-insensitive, deterministic = false; SQLite's folds
--   ASCII only, this one every script's case).
-- - Triggers -> PL/pgSQL functions; FTS5 -> a stored tsvector column per indexed table and a GIN index.
-- - commhub_changes: the counters db_pg.PgChangeWatch bumps (what SQLite's TEMP triggers and data_version do).

CREATE COLLATION nocase (provider = icu, locale = 'und-u-ks-level2', deterministic = false);

CREATE TABLE commhub_changes (
    name TEXT PRIMARY KEY,
    n    bigint NOT NULL DEFAULT 0
);

CREATE TABLE users (
    user_id       TEXT PRIMARY KEY,
    username      TEXT NOT NULL UNIQUE COLLATE nocase,
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
    max_members bigint NOT NULL DEFAULT 50,
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

CREATE TABLE invites (
    invite_id   TEXT PRIMARY KEY,
    code_hash   bytea NOT NULL UNIQUE,
    network_id  TEXT NOT NULL REFERENCES networks(network_id) ON DELETE CASCADE,
    role        TEXT NOT NULL CHECK (role IN ('admin', 'member')),
    max_uses    bigint NOT NULL,
    uses        bigint NOT NULL DEFAULT 0,
    created_by  TEXT NOT NULL REFERENCES users(user_id),
    created_at  TEXT NOT NULL,
    expires_at  TEXT,
    revoked_at  TEXT
);
CREATE INDEX invites_by_network ON invites(network_id, created_at);

CREATE TABLE tokens (
    token_id     TEXT PRIMARY KEY,
    kind         TEXT NOT NULL CHECK (kind IN ('user', 'network')),
    token_hash   bytea NOT NULL UNIQUE,
    user_id      TEXT NOT NULL REFERENCES users(user_id) ON DELETE CASCADE,
    network_id   TEXT REFERENCES networks(network_id) ON DELETE CASCADE,
    name         TEXT NOT NULL DEFAULT '',
    alias        TEXT,
    last_alias   TEXT,
    created_at   TEXT NOT NULL,
    last_used_at TEXT,
    revoked_at   TEXT,
    expires_at   TEXT,
    seq          bigint GENERATED ALWAYS AS IDENTITY
);
CREATE INDEX tokens_by_user ON tokens(user_id, kind);
CREATE INDEX tokens_by_alias ON tokens(network_id, alias) WHERE alias IS NOT NULL;

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
    last_seen_ts double precision NOT NULL,
    created_at   TEXT NOT NULL,
    retired_at   TEXT,
    last_call_ts double precision NOT NULL DEFAULT 0,
    seq          bigint GENERATED ALWAYS AS IDENTITY,
    PRIMARY KEY (network_id, alias)
);
CREATE UNIQUE INDEX sessions_seq ON sessions(seq);
CREATE INDEX sessions_alias_nocase ON sessions(alias COLLATE nocase);

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
    created_ts      double precision NOT NULL,
    updated_at      TEXT NOT NULL,
    flag            TEXT,
    flagged_at      TEXT,
    start_by        TEXT,
    start_by_ts     double precision,
    schedule_id     TEXT,
    seq             bigint GENERATED ALWAYS AS IDENTITY,
    search_tsv      tsvector GENERATED ALWAYS AS (to_tsvector('simple', coalesce(title, '') || ' ' || content
                                                  || ' ' || coalesce(context, ''))) STORED
);
CREATE UNIQUE INDEX tasks_seq ON tasks(seq);
CREATE UNIQUE INDEX tasks_idempotency ON tasks(network_id, from_name, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
-- Lists order by (created_ts DESC, seq DESC).
CREATE INDEX tasks_by_network ON tasks(network_id, created_ts, seq);
CREATE INDEX tasks_by_recipient ON tasks(network_id, to_name, status);
CREATE INDEX tasks_by_status ON tasks(network_id, status, created_ts, seq);
CREATE INDEX tasks_by_to_name ON tasks(network_id, to_name, created_ts, seq);
CREATE INDEX tasks_by_from_name ON tasks(network_id, from_name, created_ts, seq);
CREATE INDEX tasks_flagged ON tasks(network_id, flag, created_ts, seq) WHERE flag IS NOT NULL;
CREATE INDEX tasks_start_by ON tasks(start_by_ts) WHERE start_by_ts IS NOT NULL AND status = 'delivered';
CREATE INDEX tasks_search ON tasks USING gin(search_tsv);

CREATE TABLE task_counts (
    network_id TEXT NOT NULL REFERENCES networks(network_id) ON DELETE CASCADE,
    status     TEXT NOT NULL,
    n          bigint NOT NULL,
    PRIMARY KEY (network_id, status)
);
CREATE FUNCTION task_counts_insert() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN
    INSERT INTO task_counts(network_id, status, n) VALUES (NEW.network_id, NEW.status, 1)
        ON CONFLICT (network_id, status) DO UPDATE SET n = task_counts.n + 1;
    RETURN NULL;
END $$;
CREATE TRIGGER task_counts_insert AFTER INSERT ON tasks FOR EACH ROW EXECUTE FUNCTION task_counts_insert();
CREATE FUNCTION task_counts_update() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN
    UPDATE task_counts SET n = n - 1 WHERE network_id = OLD.network_id AND status = OLD.status;
    INSERT INTO task_counts(network_id, status, n) VALUES (NEW.network_id, NEW.status, 1)
        ON CONFLICT (network_id, status) DO UPDATE SET n = task_counts.n + 1;
    RETURN NULL;
END $$;
CREATE TRIGGER task_counts_update AFTER UPDATE OF status, network_id ON tasks FOR EACH ROW
    WHEN (OLD.status IS DISTINCT FROM NEW.status OR OLD.network_id IS DISTINCT FROM NEW.network_id)
    EXECUTE FUNCTION task_counts_update();
CREATE FUNCTION task_counts_delete() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN
    UPDATE task_counts SET n = n - 1 WHERE network_id = OLD.network_id AND status = OLD.status;
    RETURN NULL;
END $$;
CREATE TRIGGER task_counts_delete AFTER DELETE ON tasks FOR EACH ROW EXECUTE FUNCTION task_counts_delete();

CREATE TABLE bodies (
    body_id    bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    content    TEXT NOT NULL,
    network_id TEXT,
    search_tsv tsvector GENERATED ALWAYS AS (to_tsvector('simple', content)) STORED
);
CREATE INDEX bodies_search ON bodies USING gin(search_tsv);

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
    created_ts  double precision NOT NULL,
    read_at     TEXT,
    from_kind   TEXT NOT NULL DEFAULT 'agent' CHECK (from_kind IN ('agent', 'person')),
    to_kind     TEXT NOT NULL DEFAULT 'agent' CHECK (to_kind IN ('agent', 'person')),
    body_id     bigint REFERENCES bodies(body_id),
    content_hash bigint,
    seq         bigint GENERATED ALWAYS AS IDENTITY,
    -- Only rows with their own text are searched (a task notice's is its task's, a broadcast copy's its body's).
    search_tsv  tsvector GENERATED ALWAYS AS (CASE WHEN kind <> 'task' AND content <> ''
                                              THEN to_tsvector('simple', content) END) STORED
);
CREATE UNIQUE INDEX messages_seq ON messages(seq);
CREATE INDEX messages_unread ON messages(network_id, to_name, read_at, created_ts, seq);
CREATE INDEX messages_by_network ON messages(network_id, created_ts, seq);
CREATE INDEX messages_by_recipient ON messages(network_id, to_name, created_ts, seq);
CREATE INDEX messages_by_kind ON messages(network_id, kind, created_ts, seq);
CREATE INDEX messages_unread_by_network ON messages(network_id, read_at, created_ts, seq);
CREATE INDEX messages_by_body ON messages(body_id) WHERE body_id IS NOT NULL;
CREATE INDEX messages_questions ON messages(task_id, created_ts) WHERE status = 'question';
CREATE INDEX messages_answers ON messages(task_id, created_ts) WHERE status = 'answer';
CREATE INDEX messages_search ON messages USING gin(search_tsv);

CREATE TABLE unread_counts (
    network_id TEXT NOT NULL REFERENCES networks(network_id) ON DELETE CASCADE,
    to_name    TEXT NOT NULL,
    to_kind    TEXT NOT NULL,
    n          bigint NOT NULL,
    PRIMARY KEY (network_id, to_name, to_kind)
);
CREATE FUNCTION unread_counts_add() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN
    INSERT INTO unread_counts(network_id, to_name, to_kind, n) VALUES (NEW.network_id, NEW.to_name, NEW.to_kind, 1)
        ON CONFLICT (network_id, to_name, to_kind) DO UPDATE SET n = unread_counts.n + 1;
    RETURN NULL;
END $$;
CREATE FUNCTION unread_counts_remove() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN
    UPDATE unread_counts SET n = n - 1
        WHERE network_id = OLD.network_id AND to_name = OLD.to_name AND to_kind = OLD.to_kind;
    RETURN NULL;
END $$;
CREATE TRIGGER unread_counts_insert AFTER INSERT ON messages FOR EACH ROW WHEN (NEW.read_at IS NULL)
    EXECUTE FUNCTION unread_counts_add();
CREATE TRIGGER unread_counts_update_old AFTER UPDATE OF read_at, network_id, to_name, to_kind ON messages FOR EACH ROW
    WHEN (OLD.read_at IS NULL AND (NEW.read_at IS NOT NULL OR OLD.network_id IS DISTINCT FROM NEW.network_id
        OR OLD.to_name IS DISTINCT FROM NEW.to_name OR OLD.to_kind IS DISTINCT FROM NEW.to_kind))
    EXECUTE FUNCTION unread_counts_remove();
CREATE TRIGGER unread_counts_update_new AFTER UPDATE OF read_at, network_id, to_name, to_kind ON messages FOR EACH ROW
    WHEN (NEW.read_at IS NULL AND (OLD.read_at IS NOT NULL OR OLD.network_id IS DISTINCT FROM NEW.network_id
        OR OLD.to_name IS DISTINCT FROM NEW.to_name OR OLD.to_kind IS DISTINCT FROM NEW.to_kind))
    EXECUTE FUNCTION unread_counts_add();
CREATE TRIGGER unread_counts_delete AFTER DELETE ON messages FOR EACH ROW WHEN (OLD.read_at IS NULL)
    EXECUTE FUNCTION unread_counts_remove();

CREATE TABLE task_events (
    id         bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
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
    duration_seconds double precision NOT NULL,
    completed_at     TEXT NOT NULL,
    seq              bigint GENERATED ALWAYS AS IDENTITY
);
CREATE INDEX completions_by_network ON completions(network_id, completed_at, seq);
CREATE INDEX completions_by_alias ON completions(network_id, alias, completed_at, seq);

-- The durable SSE log. The identity never reuses an id, as AUTOINCREMENT (events pruned, ids kept).
CREATE TABLE events (
    id         bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    network_id TEXT NOT NULL REFERENCES networks(network_id) ON DELETE CASCADE,
    alias      TEXT NOT NULL,
    event      TEXT NOT NULL,
    data       TEXT NOT NULL,
    created_at TEXT NOT NULL,
    body_id    bigint REFERENCES bodies(body_id)
);
CREATE INDEX events_by_alias ON events(network_id, alias, id);
CREATE INDEX events_by_body ON events(body_id) WHERE body_id IS NOT NULL;
CREATE INDEX events_loop_broken ON events(network_id, id) WHERE event = 'loop_broken';
CREATE FUNCTION bodies_release() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN
    DELETE FROM bodies WHERE body_id = OLD.body_id
        AND NOT EXISTS (SELECT 1 FROM messages WHERE body_id = OLD.body_id)
        AND NOT EXISTS (SELECT 1 FROM events WHERE body_id = OLD.body_id);
    RETURN NULL;
END $$;
CREATE TRIGGER bodies_release AFTER DELETE ON messages FOR EACH ROW WHEN (OLD.body_id IS NOT NULL)
    EXECUTE FUNCTION bodies_release();
CREATE TRIGGER bodies_release_by_event AFTER DELETE ON events FOR EACH ROW WHEN (OLD.body_id IS NOT NULL)
    EXECUTE FUNCTION bodies_release();

CREATE TABLE audit_log (
    id         bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    network_id TEXT,
    user_id    TEXT,
    actor      TEXT NOT NULL,
    action     TEXT NOT NULL,
    detail     TEXT NOT NULL DEFAULT '',
    ip         TEXT,
    created_at TEXT NOT NULL
);
CREATE INDEX audit_by_network ON audit_log(network_id, id);

-- Bytes kept per network, kept by triggers (schema.sql says what each row counts).
CREATE TABLE network_usage (
    network_id  TEXT PRIMARY KEY REFERENCES networks(network_id) ON DELETE CASCADE,
    text_bytes  bigint NOT NULL DEFAULT 0,
    event_bytes bigint NOT NULL DEFAULT 0,
    file_bytes  bigint NOT NULL DEFAULT 0
);
CREATE FUNCTION usage_networks_insert() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN
    INSERT INTO network_usage(network_id) VALUES (NEW.network_id);
    RETURN NULL;
END $$;
CREATE TRIGGER usage_networks_insert AFTER INSERT ON networks FOR EACH ROW EXECUTE FUNCTION usage_networks_insert();
-- One function per counted table: the bytes a row counts for (TG_OP tells added from removed).
CREATE FUNCTION usage_text_bytes() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    r record;
    delta bigint;
BEGIN
    IF TG_OP = 'INSERT' THEN r := NEW; ELSE r := OLD; END IF;
    IF TG_TABLE_NAME = 'messages' THEN
        delta := 200 + octet_length(r.content);
    ELSIF TG_TABLE_NAME = 'bodies' THEN
        IF r.network_id IS NULL THEN RETURN NULL; END IF;
        delta := octet_length(r.content);
    ELSIF TG_TABLE_NAME = 'tasks' THEN
        delta := 300 + octet_length(r.content) + coalesce(octet_length(r.title), 0)
                 + coalesce(octet_length(r.context), 0);
    ELSIF TG_TABLE_NAME = 'completions' THEN
        delta := 100 + coalesce(octet_length(r.result), 0) + octet_length(r.artifacts);
    ELSE  -- task_events
        delta := 100 + coalesce(octet_length(r.detail), 0);
    END IF;
    IF TG_OP = 'DELETE' THEN delta := -delta; END IF;
    UPDATE network_usage SET text_bytes = text_bytes + delta WHERE network_id = r.network_id;
    RETURN NULL;
END $$;
CREATE TRIGGER usage_messages AFTER INSERT OR DELETE ON messages FOR EACH ROW EXECUTE FUNCTION usage_text_bytes();
CREATE TRIGGER usage_bodies AFTER INSERT OR DELETE ON bodies FOR EACH ROW EXECUTE FUNCTION usage_text_bytes();
CREATE TRIGGER usage_tasks AFTER INSERT OR DELETE ON tasks FOR EACH ROW EXECUTE FUNCTION usage_text_bytes();
CREATE TRIGGER usage_completions AFTER INSERT OR DELETE ON completions FOR EACH ROW
    EXECUTE FUNCTION usage_text_bytes();
CREATE TRIGGER usage_task_events AFTER INSERT OR DELETE ON task_events FOR EACH ROW
    EXECUTE FUNCTION usage_text_bytes();
CREATE FUNCTION usage_event_bytes() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN
    IF TG_OP = 'INSERT' THEN
        UPDATE network_usage SET event_bytes = event_bytes + 100 + octet_length(NEW.data)
            WHERE network_id = NEW.network_id;
    ELSE
        UPDATE network_usage SET event_bytes = event_bytes - 100 - octet_length(OLD.data)
            WHERE network_id = OLD.network_id;
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER usage_events AFTER INSERT OR DELETE ON events FOR EACH ROW EXECUTE FUNCTION usage_event_bytes();

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
    answered_at TEXT,
    seq         bigint GENERATED ALWAYS AS IDENTITY
);
CREATE INDEX approvals_by_alias ON approvals(network_id, alias, status);
CREATE INDEX approvals_by_network ON approvals(network_id, created_at, seq);

CREATE TABLE webhooks (
    webhook_id       TEXT PRIMARY KEY,
    network_id       TEXT NOT NULL REFERENCES networks(network_id) ON DELETE CASCADE,
    url              TEXT NOT NULL,
    secret           TEXT NOT NULL,
    events           TEXT NOT NULL DEFAULT '[]',
    aliases          TEXT NOT NULL DEFAULT '[]',
    description      TEXT NOT NULL DEFAULT '',
    enabled          bigint NOT NULL DEFAULT 1,
    disabled_reason  TEXT,
    failing_since_ts double precision,
    created_by       TEXT NOT NULL,
    created_at       TEXT NOT NULL
);
CREATE INDEX webhooks_by_network ON webhooks(network_id);

CREATE TABLE webhook_deliveries (
    delivery_id     bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    webhook_id      TEXT NOT NULL REFERENCES webhooks(webhook_id) ON DELETE CASCADE,
    event_id        bigint NOT NULL,
    event           TEXT NOT NULL,
    alias           TEXT NOT NULL,
    payload         TEXT NOT NULL,
    status          TEXT NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'delivered', 'failed')),
    attempts        bigint NOT NULL DEFAULT 0,
    next_attempt_ts double precision NOT NULL DEFAULT 0,
    last_status     bigint,
    last_error      TEXT,
    created_at      TEXT NOT NULL,
    updated_at      TEXT NOT NULL
);
CREATE INDEX webhook_deliveries_by_status ON webhook_deliveries(webhook_id, status, delivery_id);

CREATE TABLE schedules (
    schedule_id      TEXT PRIMARY KEY,
    network_id       TEXT NOT NULL REFERENCES networks(network_id) ON DELETE CASCADE,
    created_by       TEXT NOT NULL,
    token_id         TEXT,
    from_name        TEXT NOT NULL,
    from_kind        TEXT NOT NULL CHECK (from_kind IN ('agent', 'person')),
    to_name          TEXT NOT NULL,
    title            TEXT,
    content          TEXT NOT NULL,
    context          TEXT,
    priority         TEXT NOT NULL CHECK (priority IN ('low', 'normal', 'high', 'urgent')),
    kind             TEXT NOT NULL CHECK (kind IN ('once', 'every', 'cron')),
    run_at           TEXT,
    every_seconds    bigint,
    cron             TEXT,
    tz               TEXT NOT NULL DEFAULT 'UTC',
    missed           TEXT NOT NULL DEFAULT 'run_once' CHECK (missed IN ('run_once', 'skip')),
    state            TEXT NOT NULL DEFAULT 'active' CHECK (state IN ('active', 'paused', 'finished')),
    next_run_ts      double precision,
    last_run_at      TEXT,
    last_task_id     TEXT,
    run_count        bigint NOT NULL DEFAULT 0,
    skip_count       bigint NOT NULL DEFAULT 0,
    last_skipped_at  TEXT,
    last_skip_reason TEXT,
    created_at       TEXT NOT NULL,
    updated_at       TEXT NOT NULL,
    seq              bigint GENERATED ALWAYS AS IDENTITY
);
CREATE INDEX schedules_due ON schedules(next_run_ts) WHERE next_run_ts IS NOT NULL;
CREATE INDEX schedules_by_network ON schedules(network_id, created_at, seq);

CREATE TABLE a2a_agents (
    network_id  TEXT NOT NULL REFERENCES networks(network_id) ON DELETE CASCADE,
    alias       TEXT NOT NULL,
    enabled     bigint NOT NULL DEFAULT 1,
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

-- Attachments (migration 0013, docs/attachments.md): a file's bytes once per network (attachment_blobs), each upload
-- naming them (attachments), and which inbox items and tasks carry which upload (attachment_links).
CREATE TABLE attachment_blobs (
    blob_id    bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    network_id TEXT NOT NULL REFERENCES networks(network_id) ON DELETE CASCADE,
    sha256     TEXT NOT NULL,
    size       bigint NOT NULL,
    data       bytea NOT NULL,
    UNIQUE (network_id, sha256)
);
CREATE TABLE attachments (
    attachment_id TEXT PRIMARY KEY,
    network_id    TEXT NOT NULL REFERENCES networks(network_id) ON DELETE CASCADE,
    blob_id       bigint NOT NULL REFERENCES attachment_blobs(blob_id) ON DELETE CASCADE,
    filename      TEXT NOT NULL,
    content_type  TEXT NOT NULL,
    uploaded_by   TEXT NOT NULL,
    created_at    TEXT NOT NULL,
    created_ts    double precision NOT NULL
);
CREATE INDEX attachments_by_blob ON attachments(blob_id);
CREATE INDEX attachments_by_time ON attachments(created_ts);
CREATE TABLE attachment_links (
    item_id       TEXT NOT NULL,
    attachment_id TEXT NOT NULL REFERENCES attachments(attachment_id) ON DELETE CASCADE,
    network_id    TEXT NOT NULL REFERENCES networks(network_id) ON DELETE CASCADE,
    task_id       TEXT,
    position      bigint NOT NULL,
    PRIMARY KEY (item_id, attachment_id)
);
CREATE INDEX attachment_links_by_attachment ON attachment_links(attachment_id);
CREATE INDEX attachment_links_by_task ON attachment_links(task_id) WHERE task_id IS NOT NULL;
CREATE FUNCTION attachment_links_item_gone() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN
    IF TG_TABLE_NAME = 'tasks' THEN
        DELETE FROM attachment_links WHERE item_id = OLD.task_id;
    ELSE
        DELETE FROM attachment_links WHERE item_id = OLD.message_id;
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER attachment_links_task_gone AFTER DELETE ON tasks FOR EACH ROW
    EXECUTE FUNCTION attachment_links_item_gone();
CREATE TRIGGER attachment_links_message_gone AFTER DELETE ON messages FOR EACH ROW
    EXECUTE FUNCTION attachment_links_item_gone();
CREATE FUNCTION attachments_release() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN
    DELETE FROM attachments WHERE attachment_id = OLD.attachment_id
        AND NOT EXISTS (SELECT 1 FROM attachment_links WHERE attachment_id = OLD.attachment_id);
    RETURN NULL;
END $$;
CREATE TRIGGER attachments_release AFTER DELETE ON attachment_links FOR EACH ROW
    EXECUTE FUNCTION attachments_release();
CREATE FUNCTION attachment_blobs_release() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN
    DELETE FROM attachment_blobs WHERE blob_id = OLD.blob_id
        AND NOT EXISTS (SELECT 1 FROM attachments WHERE blob_id = OLD.blob_id);
    RETURN NULL;
END $$;
CREATE TRIGGER attachment_blobs_release AFTER DELETE ON attachments FOR EACH ROW
    EXECUTE FUNCTION attachment_blobs_release();
CREATE FUNCTION usage_file_bytes() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    r record;
    delta bigint;
BEGIN
    IF TG_OP = 'INSERT' THEN r := NEW; ELSE r := OLD; END IF;
    IF TG_TABLE_NAME = 'attachment_blobs' THEN
        delta := 200 + r.size;
    ELSE  -- attachments
        delta := 200 + octet_length(r.filename) + octet_length(r.content_type);
    END IF;
    IF TG_OP = 'DELETE' THEN delta := -delta; END IF;
    UPDATE network_usage SET file_bytes = file_bytes + delta WHERE network_id = r.network_id;
    RETURN NULL;
END $$;
CREATE TRIGGER usage_attachment_blobs AFTER INSERT OR DELETE ON attachment_blobs FOR EACH ROW
    EXECUTE FUNCTION usage_file_bytes();
CREATE TRIGGER usage_attachments AFTER INSERT OR DELETE ON attachments FOR EACH ROW
    EXECUTE FUNCTION usage_file_bytes();

-- A2A client (migration 0015, docs/a2a-client.md): aliases bound to external A2A agents, the durable outbox of what
-- is to be sent to them, and the tasks forwarded (their remote ids and state).
CREATE TABLE a2a_remotes (
    network_id TEXT NOT NULL REFERENCES networks(network_id) ON DELETE CASCADE,
    alias      TEXT NOT NULL,
    url        TEXT NOT NULL,
    token      TEXT,
    enabled    bigint NOT NULL DEFAULT 1,
    created_by TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (network_id, alias)
);
CREATE TABLE a2a_outbox (
    outbox_id       bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    network_id      TEXT NOT NULL,
    alias           TEXT NOT NULL,
    kind            TEXT NOT NULL CHECK (kind IN ('task', 'answer', 'cancel')),
    task_id         TEXT NOT NULL,
    message_id      TEXT,
    status          TEXT NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'sent', 'failed')),
    attempts        bigint NOT NULL DEFAULT 0,
    first_try_ts    double precision,
    next_attempt_ts double precision NOT NULL DEFAULT 0,
    last_error      TEXT,
    created_at      TEXT NOT NULL,
    updated_at      TEXT NOT NULL
);
CREATE INDEX a2a_outbox_by_task ON a2a_outbox(task_id, status, outbox_id);
CREATE INDEX a2a_outbox_pending ON a2a_outbox(status, task_id);
CREATE TABLE a2a_forwarded (
    task_id           TEXT PRIMARY KEY,
    network_id        TEXT NOT NULL,
    alias             TEXT NOT NULL,
    remote_task_id    TEXT NOT NULL,
    remote_context_id TEXT,
    remote_state      TEXT,
    seen              TEXT,
    following         bigint NOT NULL DEFAULT 1,
    poll_seconds      double precision NOT NULL DEFAULT 0,
    next_poll_ts      double precision NOT NULL DEFAULT 0,
    created_at        TEXT NOT NULL,
    updated_at        TEXT NOT NULL
);
CREATE INDEX a2a_forwarded_following ON a2a_forwarded(following) WHERE following = 1;
