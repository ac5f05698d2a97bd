-- Loop guard (docs/loop-guard.md): a message or task notice from an agent keeps a hash of who sent what to whom.
-- The hub holds the last window's hashes in memory (read back from here by rowid when it starts) and asks the
-- database only about a likely duplicate, through messages_by_recipient. No index of its own: a hash is random, so
-- an index on it would dirty one more random page per send, which a grouped commit cannot share (measured: +5-15 %
-- server CPU per send_message in bench/bench_mcp.py).
ALTER TABLE messages ADD COLUMN content_hash INTEGER;
