"""MCP protocol versions: which ones the hub speaks, and since which one each version-dependent behaviour exists.

A client that negotiated an older version never sees what a newer version added: docs/mcp-versions.md lists
every such behaviour and where it is gated. Versions are ISO dates, so they compare as strings.
"""

from __future__ import annotations

# Newest first: `initialize` answers the client's version when it is here, else the newest with sessions.
SUPPORTED_VERSIONS = ("2025-11-25", "2025-06-18", "2025-03-26", "2024-11-05")
LATEST_VERSION = SUPPORTED_VERSIONS[0]
# The version to assume when a request names none and has no session (the Streamable HTTP rule).
DEFAULT_VERSION = "2025-03-26"

# Since which version each behaviour exists (the version that added it).
PRIMING_EVENT = "2025-11-25"  # GET stream opens with an `id:` and an empty `data:` (clients before parse it as JSON)
BATCHES_REMOVED = "2025-06-18"  # JSON-RPC batches: allowed before this version, refused from it on
STRUCTURED_CONTENT = "2025-06-18"  # tool results' structuredContent
TITLES = "2025-06-18"  # `title` of serverInfo (Implementation) and of tools
TOOL_ANNOTATIONS = "2025-03-26"  # tools/list `annotations` (readOnlyHint ...)


def has(version: str | None, since: str) -> bool:
    """Whether a client on `version` knows the behaviour added in `since` (an unknown version: the default)."""
    return (version or DEFAULT_VERSION) >= since
