-- Full-text search (docs/search.md): one FTS5 index per table that stores a text once, each an external-content
-- table (the index keeps tokens, the text stays in its table), kept by triggers in the writing transaction.
-- A task notice's text is its task's (content ''), a broadcast copy's is its body's (content ''): only rows
-- with their own text are indexed, so each text is found once. The index rows are keyed by the table's rowid;
-- a step that rebuilds tasks, messages or bodies must re-create these triggers and rebuild the index.
-- network_id is indexed too: a search names the caller's networks inside the FTS5 query, so FTS5 skips the other
-- networks' hits itself (a word common elsewhere but absent from the caller's networks cost ~0.6 s at 1M
-- messages when each hit was joined to its row and dropped there).
CREATE VIRTUAL TABLE search_tasks USING fts5(title, content, context, network_id, content='tasks',
    tokenize='unicode61 remove_diacritics 2');
CREATE VIRTUAL TABLE search_messages USING fts5(content, network_id, content='messages',
    tokenize='unicode61 remove_diacritics 2');
CREATE VIRTUAL TABLE search_bodies USING fts5(content, network_id, content='bodies',
    tokenize='unicode61 remove_diacritics 2');
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
CREATE TRIGGER search_messages_insert AFTER INSERT ON messages WHEN new.kind <> 'task' AND new.content <> '' BEGIN
    INSERT INTO search_messages(rowid, content, network_id) VALUES (new.rowid, new.content, new.network_id);
END;
CREATE TRIGGER search_messages_delete AFTER DELETE ON messages WHEN old.kind <> 'task' AND old.content <> '' BEGIN
    INSERT INTO search_messages(search_messages, rowid, content, network_id)
        VALUES ('delete', old.rowid, old.content, old.network_id);
END;
CREATE TRIGGER search_messages_update_old AFTER UPDATE OF kind, content, network_id ON messages
    WHEN old.kind <> 'task' AND old.content <> '' BEGIN
    INSERT INTO search_messages(search_messages, rowid, content, network_id)
        VALUES ('delete', old.rowid, old.content, old.network_id);
END;
CREATE TRIGGER search_messages_update_new AFTER UPDATE OF kind, content, network_id ON messages
    WHEN new.kind <> 'task' AND new.content <> '' BEGIN
    INSERT INTO search_messages(rowid, content, network_id) VALUES (new.rowid, new.content, new.network_id);
END;
CREATE TRIGGER search_bodies_insert AFTER INSERT ON bodies BEGIN
    INSERT INTO search_bodies(rowid, content, network_id) VALUES (new.rowid, new.content, new.network_id);
END;
CREATE TRIGGER search_bodies_delete AFTER DELETE ON bodies BEGIN
    INSERT INTO search_bodies(search_bodies, rowid, content, network_id)
        VALUES ('delete', old.rowid, old.content, old.network_id);
END;
CREATE TRIGGER search_bodies_update AFTER UPDATE OF content, network_id ON bodies BEGIN
    INSERT INTO search_bodies(search_bodies, rowid, content, network_id)
        VALUES ('delete', old.rowid, old.content, old.network_id);
    INSERT INTO search_bodies(rowid, content, network_id) VALUES (new.rowid, new.content, new.network_id);
END;
-- Existing rows: index them once, with the triggers' conditions.
INSERT INTO search_tasks(rowid, title, content, context, network_id)
    SELECT rowid, title, content, context, network_id FROM tasks;
INSERT INTO search_messages(rowid, content, network_id)
    SELECT rowid, content, network_id FROM messages WHERE kind <> 'task' AND content <> '';
INSERT INTO search_bodies(rowid, content, network_id) SELECT rowid, content, network_id FROM bodies;
