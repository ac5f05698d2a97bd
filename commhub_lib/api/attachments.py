"""Routes: upload a file to send with tasks, messages and replies (POST /api/attachments, served ahead of Quart with
its own body limit: http/routes.py kind "upload"), and download one (GET /api/attachments/<id>), always as a
download, never rendered by the browser (docs/attachments.md)."""

from __future__ import annotations

from urllib.parse import quote

from ..http.answers import Answer, json_bytes, text_answer
from ..http.asgi import RouteContext
from ..http.auth import authenticate_token
from ..http.request import PostRequest, authenticate, form_file, hub, query_arg
from ..service import attachments, networks

# Served with their own type: data no browser runs as a page or script. Anything else (text/html, image/svg+xml,
# XML, JavaScript...) is served as application/octet-stream; all of them as a download (Content-Disposition).
SAFE_TYPES = frozenset({
    "text/plain", "text/csv", "text/markdown", "text/x-diff", "text/x-patch", "application/json", "application/pdf",
    "application/zip", "application/gzip", "application/x-tar", "image/png", "image/jpeg", "image/gif", "image/webp",
})
DOWNLOAD_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    # Should a browser show it after all, it runs nothing and loads nothing, in a sandbox of its own.
    "Content-Security-Policy": "default-src 'none'; sandbox",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Cache-Control": "private, no-store",
    "Referrer-Policy": "no-referrer",
}


def content_disposition(filename: str) -> str:
    """`attachment` with an ASCII fallback name and the real one as RFC 5987 `filename*` (UTF-8, percent-encoded):
    no quote, backslash or control character reaches the header."""
    fallback = "".join(c if 32 <= ord(c) < 127 and c not in '"\\;%' else "_" for c in filename) or "file"
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(filename, safe='')}"


def served_type(content_type: str) -> str:
    """The Content-Type a download is served with: its own when it is a safe one, else application/octet-stream."""
    return content_type if content_type in SAFE_TYPES else attachments.DEFAULT_TYPE


async def upload(ctx: RouteContext, req: PostRequest) -> tuple[int, bytes]:
    """POST /api/attachments: a raw body (Content-Type as given, the name from ?filename= or X-Filename) or a
    multipart/form-data body (its first file field); `network_id` as other sends take it."""
    h = ctx.hub
    principal = req.principal or authenticate_token(h, ctx.token_limiter, req.bearer())
    network_id = networks.single_network(h, principal, req.arg("network_id") or None)
    content_type = req.headers.get("content-type", "")
    if content_type.lower().startswith("multipart/form-data"):
        filename, file_type, data = form_file(content_type, req.body)
    else:
        filename, file_type, data = req.arg("filename") or req.headers.get("x-filename"), content_type, req.body
    return 200, json_bytes(attachments.upload(h, principal, network_id, filename, file_type, data))


async def download(attachment_id: str) -> Answer:
    """GET /api/attachments/<id>: the file, for a caller who may read an item it was sent with (its uploader before
    it is sent), as a download."""
    principal = authenticate()
    scope = networks.scope(hub(), principal, query_arg("network_id") or None)
    found = attachments.download(hub(), scope, principal, attachment_id)
    headers = {**DOWNLOAD_HEADERS, "Content-Disposition": content_disposition(found["filename"]),
               "ETag": f"\"{found['sha256']}\"", "X-Attachment-Sha256": found["sha256"]}
    return text_answer(found["data"], served_type(found["content_type"]), headers)
