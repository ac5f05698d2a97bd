-- Loop guard (docs/loop-guard.md): a message or task notice keeps a hash of who sent what to whom, so the same
-- content from the same sender to the same recipient within the duplicate window is found by one index probe
-- instead of comparing texts. The hash covers the network, both ends, the kind and the text, so the index can be
-- this one 8-byte column (the cheapest entry a send adds); the query re-checks the ends against a collision.
ALTER TABLE messages ADD COLUMN content_hash INTEGER;
CREATE INDEX messages_by_content_hash ON messages(content_hash) WHERE content_hash IS NOT NULL;
