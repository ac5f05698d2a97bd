-- Runner support (docs/runner-server.md): a task may be flagged for a person's attention ('unanswered': a
-- runner's turn ended with the task still open), and an agent may ask a person for an approval and wait.
ALTER TABLE tasks ADD COLUMN flag TEXT;
ALTER TABLE tasks ADD COLUMN flagged_at TEXT;
CREATE INDEX tasks_flagged ON tasks(network_id, flag, created_ts) WHERE flag IS NOT NULL;  -- ?flag= lists

-- Approvals: an agent's question to a person that it waits on (docs/runner-server.md). The question is an
-- ordinary inbox item and its message id is the approval's id; this row marks it as an approval and keeps
-- how it was answered (status pending -> approved | denied, by the words in service/verdicts.py).
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
    answered_at TEXT
);
CREATE INDEX approvals_by_alias ON approvals(network_id, alias, status);  -- a reply to an agent settles one
CREATE INDEX approvals_by_network ON approvals(network_id, created_at);
