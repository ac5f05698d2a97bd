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
