-- Storage bounded per network (README "Limits and quotas"): bytes kept per network, counted by triggers in the
-- writing transaction (no scan), checked against max_network_bytes before each text is stored, and shown to
-- the operator (GET /api/networks/<id>/usage). A broadcast's SSE events share its body like its inbox copies.
ALTER TABLE bodies ADD COLUMN network_id TEXT;
UPDATE bodies SET network_id = (SELECT m.network_id FROM messages m WHERE m.body_id = bodies.body_id LIMIT 1);
ALTER TABLE events ADD COLUMN body_id INTEGER REFERENCES bodies(body_id);
CREATE INDEX events_by_body ON events(body_id) WHERE body_id IS NOT NULL;
DROP TRIGGER bodies_release;
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
CREATE TABLE network_usage (
    network_id  TEXT PRIMARY KEY REFERENCES networks(network_id) ON DELETE CASCADE,
    text_bytes  INTEGER NOT NULL DEFAULT 0,
    event_bytes INTEGER NOT NULL DEFAULT 0
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
-- Existing networks and rows: count them once.
INSERT INTO network_usage(network_id, text_bytes, event_bytes)
    SELECT n.network_id, coalesce(c.text_bytes, 0), coalesce(c.event_bytes, 0) FROM networks n LEFT JOIN (
        SELECT network_id, sum(t) AS text_bytes, sum(e) AS event_bytes FROM (
            SELECT network_id, 200 + octet_length(content) AS t, 0 AS e FROM messages
            UNION ALL SELECT network_id, octet_length(content), 0 FROM bodies WHERE network_id IS NOT NULL
            UNION ALL SELECT network_id, 300 + octet_length(content) + coalesce(octet_length(title), 0)
                + coalesce(octet_length(context), 0), 0 FROM tasks
            UNION ALL SELECT network_id, 100 + coalesce(octet_length(result), 0) + octet_length(artifacts), 0
                FROM completions
            UNION ALL SELECT network_id, 100 + coalesce(octet_length(detail), 0), 0 FROM task_events
            UNION ALL SELECT network_id, 0, 100 + octet_length(data) FROM events)
        GROUP BY network_id) c USING (network_id);
