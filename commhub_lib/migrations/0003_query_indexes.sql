-- Flat to a million messages: an index for every list filter with its ORDER BY, and task counts kept
-- by triggers so /api/stats reads a few rows instead of counting every task. Each text stored once:
-- broadcast bodies shared, task notices and task results read from their task and completion.
-- Lists order by (created_ts DESC, rowid DESC): every index ends in the rowid, so the index order is the
-- list order and a LIMIT stops early. IF EXISTS / IF NOT EXISTS: an earlier step may rebuild tables.

CREATE INDEX IF NOT EXISTS tasks_by_status ON tasks(network_id, status, created_ts);
CREATE INDEX IF NOT EXISTS tasks_by_to_name ON tasks(network_id, to_name, created_ts);
CREATE INDEX IF NOT EXISTS tasks_by_from_name ON tasks(network_id, from_name, created_ts);

DROP INDEX IF EXISTS messages_unread;
CREATE INDEX IF NOT EXISTS messages_unread ON messages(network_id, to_name, read_at, created_ts);
CREATE INDEX IF NOT EXISTS messages_by_recipient ON messages(network_id, to_name, created_ts);
CREATE INDEX IF NOT EXISTS messages_by_kind ON messages(network_id, kind, created_ts);
CREATE INDEX IF NOT EXISTS messages_unread_by_network ON messages(network_id, read_at, created_ts);

CREATE INDEX IF NOT EXISTS task_events_by_network ON task_events(network_id, id);
CREATE INDEX IF NOT EXISTS completions_by_alias ON completions(network_id, alias, completed_at);

CREATE TABLE IF NOT EXISTS task_counts (
    network_id TEXT NOT NULL REFERENCES networks(network_id) ON DELETE CASCADE,
    status     TEXT NOT NULL,
    n          INTEGER NOT NULL,
    PRIMARY KEY (network_id, status)
) WITHOUT ROWID;
DELETE FROM task_counts;
INSERT INTO task_counts(network_id, status, n) SELECT network_id, status, count(*) FROM tasks GROUP BY 1, 2;
CREATE TRIGGER IF NOT EXISTS task_counts_insert AFTER INSERT ON tasks BEGIN
    INSERT INTO task_counts(network_id, status, n) VALUES (new.network_id, new.status, 1)
        ON CONFLICT (network_id, status) DO UPDATE SET n = n + 1;
END;
CREATE TRIGGER IF NOT EXISTS task_counts_update AFTER UPDATE OF status, network_id ON tasks
    WHEN old.status IS NOT new.status OR old.network_id IS NOT new.network_id BEGIN
    UPDATE task_counts SET n = n - 1 WHERE network_id = old.network_id AND status = old.status;
    INSERT INTO task_counts(network_id, status, n) VALUES (new.network_id, new.status, 1)
        ON CONFLICT (network_id, status) DO UPDATE SET n = n + 1;
END;
CREATE TRIGGER IF NOT EXISTS task_counts_delete AFTER DELETE ON tasks BEGIN
    UPDATE task_counts SET n = n - 1 WHERE network_id = old.network_id AND status = old.status;
END;

CREATE TABLE IF NOT EXISTS bodies (
    body_id INTEGER PRIMARY KEY,
    content TEXT NOT NULL
);
ALTER TABLE messages ADD COLUMN body_id INTEGER REFERENCES bodies(body_id);
CREATE INDEX IF NOT EXISTS messages_by_body ON messages(body_id) WHERE body_id IS NOT NULL;
CREATE TRIGGER IF NOT EXISTS bodies_release AFTER DELETE ON messages WHEN old.body_id IS NOT NULL BEGIN
    DELETE FROM bodies WHERE body_id = old.body_id
        AND NOT EXISTS (SELECT 1 FROM messages WHERE body_id = old.body_id);
END;
-- Existing rows: one body per distinct broadcast text, task notices and results that repeat their task's.
CREATE INDEX bodies_by_content_tmp ON bodies(content);
INSERT INTO bodies(content) SELECT DISTINCT content FROM messages WHERE kind = 'broadcast' AND content != '';
UPDATE messages SET body_id = (SELECT b.body_id FROM bodies b WHERE b.content = messages.content), content = ''
    WHERE kind = 'broadcast' AND content != '';
DROP INDEX bodies_by_content_tmp;
UPDATE messages SET content = '' WHERE kind = 'task' AND task_id IS NOT NULL
    AND content = (SELECT t.content FROM tasks t WHERE t.task_id = messages.task_id);
UPDATE tasks SET result = NULL WHERE result IS NOT NULL
    AND result = (SELECT c.result FROM completions c WHERE c.task_id = tasks.task_id);
