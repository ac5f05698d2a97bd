"""MCP 2026-07-28 on POST /mcp: no `initialize`, no session; every request carries its envelope.

A request is of this era when its `params._meta` names a protocol version, or when it has no session and its
Mcp-Protocol-Version header names no version of the `initialize` era (so a probe with a version the hub does not
know is told which ones it has, -32022, rather than treated as an old client). Its envelope is checked as the
specification's ladder says, first failure wins:
1. `params._meta` carries `io.modelcontextprotocol/protocolVersion` and `.../clientCapabilities` (else -32602);
2. the Mcp-Protocol-Version, Mcp-Method and Mcp-Name headers, where sent, agree with the body (else -32020);
3. the version is one the hub speaks (else -32022, its data naming every version the hub has, so a client
   can fall back to `initialize`).
Then the methods: `server/discover`, `tools/list`, `tools/call`, `subscriptions/listen` (the push stream, as
the `GET /mcp` stream of a session: mcp/listen.py) and `ping`. Every result carries `resultType`; an error is
answered with the HTTP status the transport assigns to its code (404 for an unknown method, 400 for a bad
request). Identity stays with the token: the alias bound to it, else the alias it last claimed (there is no
session to claim one on).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .. import __version__
from .versions import ALL_VERSIONS, MODERN_VERSIONS, SUPPORTED_VERSIONS

PROTOCOL_VERSION_KEY = "io.modelcontextprotocol/protocolVersion"
CLIENT_CAPABILITIES_KEY = "io.modelcontextprotocol/clientCapabilities"
CLIENT_INFO_KEY = "io.modelcontextprotocol/clientInfo"
SERVER_INFO_KEY = "io.modelcontextprotocol/serverInfo"
CHANNEL = "claude/channel"  # the extension (and filter key) under which the channel notifications ride

INVALID_REQUEST, METHOD_NOT_FOUND, INVALID_PARAMS = -32600, -32601, -32602
HEADER_MISMATCH, UNSUPPORTED_PROTOCOL_VERSION = -32020, -32022
# The HTTP status of an error answer, by JSON-RPC code (the 2026-07-28 Streamable HTTP table); others 200.
ERROR_STATUS = {-32700: 400, INVALID_REQUEST: 400, INVALID_PARAMS: 400, HEADER_MISMATCH: 400, -32021: 400,
                UNSUPPORTED_PROTOCOL_VERSION: 400, METHOD_NOT_FOUND: 404}
NAME_PARAMS = {"tools/call": "name", "prompts/get": "name", "resources/read": "uri"}  # mirrored in Mcp-Name
TOOLS_TTL_MS = 300_000  # how long a client may cache tools/list and server/discover (they change only on upgrade)


@dataclass(frozen=True, slots=True)
class Envelope:
    """What a 2026-07-28 request says about its client."""

    version: str
    capabilities: dict[str, Any]
    client_name: str | None


@dataclass(frozen=True, slots=True)
class Rejection:
    """The first rung of the ladder the request failed, as a JSON-RPC error."""

    code: int
    message: str
    data: Any = None


def meta_version(payload: Any) -> Any:
    """The protocol version a request's `params._meta` names, or None."""
    if not isinstance(payload, dict):
        return None
    params = payload.get("params")
    meta = params.get("_meta") if isinstance(params, dict) else None
    return meta.get(PROTOCOL_VERSION_KEY) if isinstance(meta, dict) else None


def is_modern_request(payload: Any, headers: Mapping[str, str]) -> bool:
    """Whether a POST /mcp belongs to the session-less era (the module's docstring says when)."""
    if meta_version(payload) is not None:
        return True
    header = headers.get("mcp-protocol-version")
    return bool(header) and header not in SUPPORTED_VERSIONS and not headers.get("mcp-session-id")


def classify(msg: dict[str, Any], headers: Mapping[str, str]) -> Envelope | Rejection:
    """Run the envelope ladder over one request (the module's docstring)."""
    params = msg.get("params")
    meta = params.get("_meta") if isinstance(params, dict) else None
    if not isinstance(meta, dict) or PROTOCOL_VERSION_KEY not in meta or CLIENT_CAPABILITIES_KEY not in meta:
        return Rejection(INVALID_PARAMS, f"params._meta must carry '{PROTOCOL_VERSION_KEY}' and "
                         f"'{CLIENT_CAPABILITIES_KEY}' (MCP 2026-07-28 sends them with every request); older "
                         "clients start with initialize instead")
    version = meta[PROTOCOL_VERSION_KEY]
    header = headers.get("mcp-protocol-version")
    if header is not None and header != version:
        return Rejection(HEADER_MISMATCH, "the Mcp-Protocol-Version header does not match the request's "
                         f"_meta protocol version ({header!r} vs {version!r})")
    method = msg.get("method")
    if headers.get("mcp-method") not in (None, method):
        return Rejection(HEADER_MISMATCH, "the Mcp-Method header does not match the request's method")
    name_key = NAME_PARAMS.get(str(method))
    if name_key and isinstance(params, dict) and headers.get("mcp-name") not in (None, params.get(name_key)):
        return Rejection(HEADER_MISMATCH, f"the Mcp-Name header does not match the request's '{name_key}'")
    if not isinstance(version, str):
        return Rejection(INVALID_PARAMS, "the _meta protocol version must be a string")
    if version not in MODERN_VERSIONS:
        return Rejection(UNSUPPORTED_PROTOCOL_VERSION, f"unsupported protocol version {version!r}",
                         {"supported": list(ALL_VERSIONS), "requested": version})
    capabilities = meta[CLIENT_CAPABILITIES_KEY]
    info = meta.get(CLIENT_INFO_KEY)
    name = info.get("name") if isinstance(info, dict) else None
    return Envelope(version, capabilities if isinstance(capabilities, dict) else {},
                    str(name)[:100] if name is not None else None)


def header_rejection(headers: Mapping[str, str]) -> Rejection | None:
    """For a message without an envelope of its own (a notification): its header names a version the hub has."""
    header = headers.get("mcp-protocol-version")
    if header and header not in ALL_VERSIONS:
        return Rejection(UNSUPPORTED_PROTOCOL_VERSION, f"unsupported protocol version {header!r}",
                         {"supported": list(ALL_VERSIONS), "requested": header})
    return None


def server_capabilities() -> dict[str, Any]:
    """What the hub offers a 2026-07-28 client: tools, and the channel notifications as an extension."""
    return {"tools": {"listChanged": False}, "experimental": {CHANNEL: {}}, "extensions": {CHANNEL: {}}}


def server_info() -> dict[str, Any]:
    """The hub as an MCP Implementation."""
    return {"name": "commhub", "title": "CommHub", "version": __version__}


def discover_result(instructions: str) -> dict[str, Any]:
    """The `server/discover` result: every version the hub speaks (newest first), capabilities, instructions."""
    return {"supportedVersions": list(ALL_VERSIONS), "capabilities": server_capabilities(),
            "instructions": instructions, "ttlMs": TOOLS_TTL_MS, "cacheScope": "private",
            "resultType": "complete", "_meta": {SERVER_INFO_KEY: server_info()}}


def wants_channel(capabilities: dict[str, Any], requested: Any) -> bool:
    """Whether a listen stream carries the channel notifications: the client asked for them in the filter
    (`"claude/channel": true`) or declared the extension (capabilities.extensions or .experimental)."""
    if isinstance(requested, dict) and requested.get(CHANNEL) is True:
        return True
    return any(isinstance(capabilities.get(key), dict) and CHANNEL in capabilities[key]
               for key in ("extensions", "experimental"))


def error_status(answer: dict[str, Any]) -> int:
    """The HTTP status of a 2026-07-28 answer."""
    error = answer.get("error")
    code = error.get("code") if isinstance(error, dict) else None
    return ERROR_STATUS.get(code, 200) if isinstance(code, int) else 200


def complete(answer: dict[str, Any]) -> dict[str, Any]:
    """An answer whose result says `resultType: complete` (2026-07-28 requires it on every result)."""
    result = answer.get("result")
    if isinstance(result, dict) and "resultType" not in result:
        return {**answer, "result": {**result, "resultType": "complete"}}
    return answer
