-- Full-text search (docs/search.md): one FTS5 index per table that stores a text once, each an external-content
-- table (the index keeps tokens, the text stays in its table), kept by triggers in the writing transaction.
-- A task notice's text is its task's (content ''), a broadcast copy's is its body's (content ''): only rows
-- with their own text are indexed, so each text is found once. The index rows are keyed by the table's rowid;
-- a step that rebuilds tasks, messages or bodies must re-create these triggers and rebuild the index.
CREATE VIRTUAL TABLE search_tasks USING fts5(title, content, context, content='tasks',
    tokenize='unicode61 remove_diacritics 2');
CREATE VIRTUAL TABLE search_messages USING fts5(content, content='messages',
    tokenize='unicode61 remove_diacritics 2');
CREATE VIRTUAL TABLE search_bodies USING fts5(content, content='bodies',
    tokenize='unicode61 remove_diacritics 2');
CREATE TRIGGER search_tasks_insert AFTER INSERT ON tasks BEGIN
    INSERT INTO search_tasks(rowid, title, content, context) VALUES (new.rowid, new.title, new.content, new.context);
END;
CREATE TRIGGER search_tasks_delete AFTER DELETE ON tasks BEGIN
    INSERT INTO search_tasks(search_tasks, rowid, title, content, context)
        VALUES ('delete', old.rowid, old.title, old.content, old.context);
END;
CREATE TRIGGER search_tasks_update AFTER UPDATE OF title, content, context ON tasks BEGIN
    INSERT INTO search_tasks(search_tasks, rowid, title, content, context)
        VALUES ('delete', old.rowid, old.title, old.content, old.context);
    INSERT INTO search_tasks(rowid, title, content, context) VALUES (new.rowid, new.title, new.content, new.context);
END;
CREATE TRIGGER search_messages_insert AFTER INSERT ON messages WHEN new.kind <> 'task' AND new.content <> '' BEGIN
    INSERT INTO search_messages(rowid, content) VALUES (new.rowid, new.content);
END;
CREATE TRIGGER search_messages_delete AFTER DELETE ON messages WHEN old.kind <> 'task' AND old.content <> '' BEGIN
    INSERT INTO search_messages(search_messages, rowid, content) VALUES ('delete', old.rowid, old.content);
END;
CREATE TRIGGER search_messages_update_old AFTER UPDATE OF kind, content ON messages
    WHEN old.kind <> 'task' AND old.content <> '' BEGIN
    INSERT INTO search_messages(search_messages, rowid, content) VALUES ('delete', old.rowid, old.content);
END;
CREATE TRIGGER search_messages_update_new AFTER UPDATE OF kind, content ON messages
    WHEN new.kind <> 'task' AND new.content <> '' BEGIN
    INSERT INTO search_messages(rowid, content) VALUES (new.rowid, new.content);
END;
CREATE TRIGGER search_bodies_insert AFTER INSERT ON bodies BEGIN
    INSERT INTO search_bodies(rowid, content) VALUES (new.rowid, new.content);
END;
CREATE TRIGGER search_bodies_delete AFTER DELETE ON bodies BEGIN
    INSERT INTO search_bodies(search_bodies, rowid, content) VALUES ('delete', old.rowid, old.content);
END;
CREATE TRIGGER search_bodies_update AFTER UPDATE OF content ON bodies BEGIN
    INSERT INTO search_bodies(search_bodies, rowid, content) VALUES ('delete', old.rowid, old.content);
    INSERT INTO search_bodies(rowid, content) VALUES (new.rowid, new.content);
END;
-- Existing rows: index them once, with the triggers' conditions.
INSERT INTO search_tasks(rowid, title, content, context) SELECT rowid, title, content, context FROM tasks;
INSERT INTO search_messages(rowid, content) SELECT rowid, content FROM messages WHERE kind <> 'task' AND content <> '';
INSERT INTO search_bodies(rowid, content) SELECT rowid, content FROM bodies;
