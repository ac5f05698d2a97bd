-- The PostgreSQL twin of migrations/0018_shared_state.sql (the same tables, PostgreSQL types).
-- State that several hub processes on one PostgreSQL database share (docs/postgresql.md "Several processes").
-- On SQLite (one process per database file) both tables stay empty: presence and MCP sessions are read from
-- memory there, as before. The tables exist on both engines so the schemas stay the same.

-- Stream presence: each process's live agent streams per alias (how many, and the strongest holder kind), kept
-- by that process (written a moment after a stream opens, at once when one closes, refreshed every third of
-- stream_presence_ttl_seconds). A row past expires_ts is ignored: a killed process's streams lapse by themselves.
CREATE TABLE stream_presence (
    network_id TEXT NOT NULL,  -- no foreign key: a row of a network deleted meanwhile lapses with its TTL
    alias      TEXT NOT NULL,
    process    TEXT NOT NULL,
    streams    bigint NOT NULL,
    held_by    TEXT NOT NULL,
    expires_ts double precision NOT NULL,
    PRIMARY KEY (network_id, alias, process)
);
CREATE INDEX stream_presence_process ON stream_presence(process);

-- MCP sessions (Mcp-Session-Id): what a request needs from its session whichever process it lands on (the
-- token it was issued to, the negotiated version, the alias claimed on it). `ended` is set when the session is
-- ended (DELETE /mcp) or evicted by a cap: every process then answers its id 404. Rows unused for a day go.
CREATE TABLE mcp_sessions (
    session_id       TEXT PRIMARY KEY,
    token_id         TEXT NOT NULL REFERENCES tokens(token_id) ON DELETE CASCADE,
    protocol_version TEXT NOT NULL,
    alias            TEXT,
    client           TEXT,
    created_ts       double precision NOT NULL,
    used_ts          double precision NOT NULL,
    ended            TEXT
);
CREATE INDEX mcp_sessions_used ON mcp_sessions(used_ts);

-- The loop guard's duplicate check (service/loopguard.py) with several writers, in one round trip: the network's
-- usage row locked to the commit (the row every write that stores in the network takes first, store/usage.hold_usage:
-- the same lock order everywhere), then the lookup with a snapshot taken after the lock (each statement of a VOLATILE
-- function takes its own under READ COMMITTED): a racing send of the same content waits for the other's commit and
-- then finds its item. PostgreSQL only (SQLite has one writer); store/quotas.find_duplicate_locked.
CREATE FUNCTION commhub_find_duplicate(digest bigint, net text, recipient text, since double precision, sender text)
RETURNS TABLE(message_id text, task_id text, kind text) LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    PERFORM 1 FROM network_usage u WHERE u.network_id = net FOR UPDATE;
    RETURN QUERY SELECT m.message_id, m.task_id, m.kind FROM messages m
        WHERE m.network_id = net AND m.to_name = recipient AND m.created_ts >= since AND m.content_hash = digest
          AND m.from_name = sender ORDER BY m.created_ts DESC LIMIT 1;
END $$;
