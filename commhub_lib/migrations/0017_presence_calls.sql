-- Presence that means "can work now" (docs/presence.md): a session without a stream is online only while its
-- last tool call (or REST call as the agent) is within the presence timeout; last_seen_* keep the last sign of
-- life of any kind (a stream opening or closing too), for people to read. Existing sessions start from their
-- last sign of life, so no agent that was online before the upgrade is shown offline by it.
ALTER TABLE sessions ADD COLUMN last_call_ts REAL NOT NULL DEFAULT 0;
UPDATE sessions SET last_call_ts = last_seen_ts;
