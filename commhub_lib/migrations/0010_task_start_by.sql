-- Tasks that must start by a time (docs/tasks-deadlines.md): the new final status 'expired', and the time
-- itself (start_by as ISO text, start_by_ts as a number for the expiry job's index). SQLite cannot change a
-- CHECK constraint in place: tasks is rebuilt (renamed aside, created as in schema.sql, copied, dropped) and
-- its indexes and its triggers (task_counts, network_usage) are made again after the copy, so the counts and
-- the usage they keep are unchanged.

DROP TRIGGER task_counts_insert;
DROP TRIGGER task_counts_update;
DROP TRIGGER task_counts_delete;
DROP TRIGGER usage_tasks_insert;
DROP TRIGGER usage_tasks_delete;
ALTER TABLE tasks RENAME TO tasks_v9;
DROP INDEX tasks_idempotency;
DROP INDEX tasks_by_network;
DROP INDEX tasks_by_recipient;
DROP INDEX tasks_by_status;
DROP INDEX tasks_by_to_name;
DROP INDEX tasks_by_from_name;
DROP INDEX tasks_flagged;
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
    flag            TEXT,
    flagged_at      TEXT,
    start_by        TEXT,
    start_by_ts     REAL
);
INSERT INTO tasks(task_id, network_id, from_name, from_kind, to_name, to_kind, title, content, context, priority,
                  status, deadline, idempotency_key, message_id, result, created_at, created_ts, updated_at, flag,
                  flagged_at)
    SELECT task_id, network_id, from_name, from_kind, to_name, to_kind, title, content, context, priority,
           status, deadline, idempotency_key, message_id, result, created_at, created_ts, updated_at, flag,
           flagged_at FROM tasks_v9 ORDER BY rowid;  -- rowid order: lists break ties of created_ts by rowid
DROP TABLE tasks_v9;
CREATE UNIQUE INDEX tasks_idempotency ON tasks(network_id, from_name, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
CREATE INDEX tasks_by_network ON tasks(network_id, created_ts);
CREATE INDEX tasks_by_recipient ON tasks(network_id, to_name, status);
CREATE INDEX tasks_by_status ON tasks(network_id, status, created_ts);
CREATE INDEX tasks_by_to_name ON tasks(network_id, to_name, created_ts);
CREATE INDEX tasks_by_from_name ON tasks(network_id, from_name, created_ts);
CREATE INDEX tasks_flagged ON tasks(network_id, flag, created_ts) WHERE flag IS NOT NULL;
CREATE INDEX tasks_start_by ON tasks(start_by_ts) WHERE start_by_ts IS NOT NULL AND status = 'delivered';
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
-- Full-text search (0009_search.sql): its triggers on tasks went with tasks_v9, and the copy gave the rows new
-- rowids (the index's keys): make the triggers again and re-read the index from the new table.
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
INSERT INTO search_tasks(search_tasks) VALUES ('rebuild');
