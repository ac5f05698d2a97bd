"""MCP over Streamable HTTP: the JSON-RPC dispatcher (protocol.py) and the tool registry (tools.py)."""
