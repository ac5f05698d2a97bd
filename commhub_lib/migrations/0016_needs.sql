-- "Needs you" (docs/dashboard.md#needs-you): what waits for a person is read on every dashboard refresh, so each
-- part has a small index of its own. Both are partial: they hold only the few rows they are for, so the sends that
-- write other rows never touch them.
-- The question a task waits on: its newest `question` reply, found by task (messages has no task_id index), and
-- whether an answer (a reply with status `answer`) came after it.
CREATE INDEX messages_questions ON messages(task_id, created_ts) WHERE status = 'question';
CREATE INDEX messages_answers ON messages(task_id, created_ts) WHERE status = 'answer';
-- The loops the guard broke, newest first per network (the event log is otherwise read by alias).
CREATE INDEX events_loop_broken ON events(network_id, id) WHERE event = 'loop_broken';
