-- Schedules (docs/schedules.md): a task sent to an alias once, every N seconds or by a cron expression in an IANA
-- time zone; each run is an ordinary task that carries its schedule's id (tasks.schedule_id, added in place: no
-- rebuild of tasks, whose other columns, indexes and triggers stay as they are).
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
ALTER TABLE tasks ADD COLUMN schedule_id TEXT;
