"""CommHub as an A2A server: the JSON-RPC endpoint (protocol.py), the wire shapes of tasks (mapping.py) and the
Agent Card (card.py); docs/a2a.md."""
