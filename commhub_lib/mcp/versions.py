"""MCP protocol versions: which ones the hub speaks, and since which one each version-dependent behaviour exists.

Two eras: up to 2025-11-25 a client negotiates its version with `initialize` and keeps it for its session;
from 2026-07-28 on ("modern") there is no session: every request carries its version and the client's
capabilities in `params._meta` (mcp/modern.py). A client that negotiated an older version never sees what a
newer version added: docs/mcp-versions.md lists every such behaviour and where it is gated. Versions are ISO
dates, so they compare as strings.
"""

from __future__ import annotations

# Reachable with `initialize`, newest first: it answers the client's version when it is here, else the newest.
SUPPORTED_VERSIONS = ("2025-11-25", "2025-06-18", "2025-03-26", "2024-11-05")
LATEST_VERSION = SUPPORTED_VERSIONS[0]
# Spoken per request, without `initialize` or sessions.
MODERN_VERSIONS = ("2026-07-28",)
ALL_VERSIONS = (*MODERN_VERSIONS, *SUPPORTED_VERSIONS)
# The version to assume when a request names none and has no session (the Streamable HTTP rule).
DEFAULT_VERSION = "2025-03-26"

# Since which version each behaviour exists (the version that added it).
PRIMING_EVENT = "2025-11-25"  # GET stream opens with an `id:` and an empty `data:` (clients before parse it as JSON)
BATCHES_REMOVED = "2025-06-18"  # JSON-RPC batches: allowed before this version, refused from it on
STRUCTURED_CONTENT = "2025-06-18"  # tool results' structuredContent
TITLES = "2025-06-18"  # `title` of serverInfo (Implementation)
TOOL_ANNOTATIONS = "2025-03-26"  # tools/list `annotations` (readOnlyHint ...)
RESOURCE_LINKS = "2025-06-18"  # `resource_link` content items in tool results (attachments: mcp/links.py)


def has(version: str | None, since: str) -> bool:
    """Whether a client on `version` knows the behaviour added in `since` (an unknown version: the default)."""
    return (version or DEFAULT_VERSION) >= since


def known_version(header: str | None) -> str:
    """The version a session taken up again (after a restart) speaks: its Mcp-Protocol-Version header when that
    names a version of the initialize era; else the default (clients before 2025-06-18 send no header)."""
    return header if header in SUPPORTED_VERSIONS else DEFAULT_VERSION


def is_modern(version: str | None) -> bool:
    """Whether the version is one of the session-less era (2026-07-28 on)."""
    return version in MODERN_VERSIONS
