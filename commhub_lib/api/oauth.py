"""Telling a client how to authenticate: the Bearer challenge on every 401 (RFC 6750) and the OAuth 2.0 protected
resource metadata it points to (RFC 9728).

CommHub's tokens are issued by CommHub itself (the dashboard, `commhub connect`, `POST /api/tokens`), so the
metadata names no authorization server: it tells a client that this is a bearer-token resource, that the token
goes in the `Authorization` header, and where the documentation is. The challenge carries
`resource_metadata="<public url>/.well-known/oauth-protected-resource"`, and `error="invalid_token"` when the
request carried a token that was refused (none when it carried none, as RFC 6750 asks:
https://www.rfc-editor.org/rfc/rfc6750#section-3.1). The metadata's `resource` is the hub's MCP endpoint, which is
what the MCP clients ask for it (RFC 9728 wants it to be the URL they used:
https://www.rfc-editor.org/rfc/rfc9728#section-3.3); it is also served at
`/.well-known/oauth-protected-resource/mcp`, the place RFC 9728 derives for it
(https://www.rfc-editor.org/rfc/rfc9728#section-3.1).
"""

from __future__ import annotations

from typing import Any

from ..http.request import hub, public_url, request_host

WELL_KNOWN = "/.well-known/oauth-protected-resource"
__all__ = ["WELL_KNOWN", "challenge", "metadata", "public_url"]  # public_url lives in http/request.py (MCP uses it)
def challenge(base: str, refused_token: bool) -> str:
    """The WWW-Authenticate value of a 401."""
    error = 'error="invalid_token", ' if refused_token else ""
    return f'Bearer {error}resource_metadata="{base}{WELL_KNOWN}"'


def metadata(base: str) -> dict[str, Any]:
    """The protected resource metadata document (https://www.rfc-editor.org/rfc/rfc9728#section-2)."""
    return {"resource": f"{base}/mcp", "bearer_methods_supported": ["header"], "resource_name": "CommHub",
            "resource_documentation": f"{base}/docs"}


async def protected_resource() -> dict[str, Any]:
    """The OAuth 2.0 protected resource metadata (RFC 9728): no authentication."""
    return metadata(public_url(hub().settings, *request_host()))


async def protected_resource_mcp() -> dict[str, Any]:
    """The same document where RFC 9728 derives it from the MCP endpoint's URL.

    https://www.rfc-editor.org/rfc/rfc9728#section-3.1"""
    return metadata(public_url(hub().settings, *request_host()))
