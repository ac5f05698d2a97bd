"""Domain rules: the only layer that calls `store/` and the broker. No HTTP here."""
