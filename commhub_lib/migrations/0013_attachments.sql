-- Attachments (docs/attachments.md): files sent with tasks, messages and replies. A file's bytes are kept once per
-- network (attachment_blobs, by SHA-256): the same bytes uploaded again reuse the blob. Each upload is its own
-- attachment (att_ id, filename, content type) pointing at a blob; attachment_links ties an attachment to the items
-- it was sent with (a task by its task_id, a message or reply by its message_id; `task_id`: the task a reply is
-- about, so the task lists its replies' files). The triggers keep the rest in the writing transaction: an item
-- deleted (retention, a network's deletion) drops its links; an attachment whose last link went goes with it; a
-- blob no attachment uses goes; network_usage.file_bytes counts the blobs' bytes and each row.
ALTER TABLE network_usage ADD COLUMN file_bytes INTEGER NOT NULL DEFAULT 0;
CREATE TABLE attachment_blobs (
    blob_id    INTEGER PRIMARY KEY,
    network_id TEXT NOT NULL REFERENCES networks(network_id) ON DELETE CASCADE,
    sha256     TEXT NOT NULL,
    size       INTEGER NOT NULL,
    data       BLOB NOT NULL,
    UNIQUE (network_id, sha256)
);
CREATE TABLE attachments (
    attachment_id TEXT PRIMARY KEY,
    network_id    TEXT NOT NULL REFERENCES networks(network_id) ON DELETE CASCADE,
    blob_id       INTEGER NOT NULL REFERENCES attachment_blobs(blob_id) ON DELETE CASCADE,
    filename      TEXT NOT NULL,
    content_type  TEXT NOT NULL,
    uploaded_by   TEXT NOT NULL,  -- the uploader's user_id: before it is sent, only they may read or send it
    created_at    TEXT NOT NULL,
    created_ts    REAL NOT NULL
);
CREATE INDEX attachments_by_blob ON attachments(blob_id);
CREATE INDEX attachments_by_time ON attachments(created_ts);  -- the prune of uploads never sent
CREATE TABLE attachment_links (
    item_id       TEXT NOT NULL,
    attachment_id TEXT NOT NULL REFERENCES attachments(attachment_id) ON DELETE CASCADE,
    network_id    TEXT NOT NULL REFERENCES networks(network_id) ON DELETE CASCADE,
    task_id       TEXT,
    position      INTEGER NOT NULL,
    PRIMARY KEY (item_id, attachment_id)
) WITHOUT ROWID;
CREATE INDEX attachment_links_by_attachment ON attachment_links(attachment_id);
CREATE INDEX attachment_links_by_task ON attachment_links(task_id) WHERE task_id IS NOT NULL;
CREATE TRIGGER attachment_links_task_gone AFTER DELETE ON tasks BEGIN
    DELETE FROM attachment_links WHERE item_id = old.task_id;
END;
CREATE TRIGGER attachment_links_message_gone AFTER DELETE ON messages BEGIN
    DELETE FROM attachment_links WHERE item_id = old.message_id;
END;
CREATE TRIGGER attachments_release AFTER DELETE ON attachment_links BEGIN
    DELETE FROM attachments WHERE attachment_id = old.attachment_id
        AND NOT EXISTS (SELECT 1 FROM attachment_links WHERE attachment_id = old.attachment_id);
END;
CREATE TRIGGER attachment_blobs_release AFTER DELETE ON attachments BEGIN
    DELETE FROM attachment_blobs WHERE blob_id = old.blob_id
        AND NOT EXISTS (SELECT 1 FROM attachments WHERE blob_id = old.blob_id);
END;
CREATE TRIGGER usage_attachment_blobs_insert AFTER INSERT ON attachment_blobs BEGIN
    UPDATE network_usage SET file_bytes = file_bytes + 200 + new.size WHERE network_id = new.network_id;
END;
CREATE TRIGGER usage_attachment_blobs_delete AFTER DELETE ON attachment_blobs BEGIN
    UPDATE network_usage SET file_bytes = file_bytes - 200 - old.size WHERE network_id = old.network_id;
END;
CREATE TRIGGER usage_attachments_insert AFTER INSERT ON attachments BEGIN
    UPDATE network_usage SET file_bytes = file_bytes + 200 + octet_length(new.filename)
            + octet_length(new.content_type)
        WHERE network_id = new.network_id;
END;
CREATE TRIGGER usage_attachments_delete AFTER DELETE ON attachments BEGIN
    UPDATE network_usage SET file_bytes = file_bytes - 200 - octet_length(old.filename)
            - octet_length(old.content_type)
        WHERE network_id = old.network_id;
END;
