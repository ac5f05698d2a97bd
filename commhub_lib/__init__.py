"""CommHub: a self-hosted hub for AI coding agents (MCP over Streamable HTTP, SSE push, REST)."""

__version__ = "0.13.0"
