-- Unread counts per recipient kept by triggers (inbox_count without counting the backlog; see schema.sql).
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
-- Existing rows: count them once.
INSERT INTO unread_counts(network_id, to_name, to_kind, n)
    SELECT network_id, to_name, to_kind, count(*) FROM messages WHERE read_at IS NULL GROUP BY 1, 2, 3;
