-- A first claim of an alias checks for live tokens bound to it (service/sessions.py _check_claim): without
-- an index that walked every token of the hub, once per new alias (23 % of the server's CPU while 5,000 new
-- agents opened their streams). Only bound tokens carry an alias, so the index holds only those.
CREATE INDEX IF NOT EXISTS tokens_by_alias ON tokens(network_id, alias) WHERE alias IS NOT NULL;
