"""The ASGI dispatch of the routes served ahead of Quart, made from the route table (http/routes.py)."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from functools import partial

from hypercorn.typing import ASGIReceiveCallable, ASGISendCallable, HTTPScope

from .answers import JsonAnswer, error_bytes
from .asgi import PostEndpoint, RouteContext, send_json, serve_stream
from .routes import FAST_KINDS, Route

# How a route served ahead of Quart is called: the ASGI triple and the path's parameters.
Served = Callable[[HTTPScope, ASGIReceiveCallable, ASGISendCallable, dict[str, str]], Awaitable[None]]
METHOD_ORDER = ("GET", "POST", "PUT", "PATCH", "DELETE")
_PARAM = re.compile(r"<(?:(\w+):)?(\w+)>")


def _pattern(path: str) -> re.Pattern[str]:
    """A rule's path as a regular expression: <name> is one segment, <path:name> any rest (as Quart's rules)."""
    out, last = [], 0
    for m in _PARAM.finditer(path):
        out.append(re.escape(path[last:m.start()]))
        out.append(f"(?P<{m.group(2)}>{'.+' if m.group(1) == 'path' else '[^/]+'})")
        last = m.end()
    out.append(re.escape(path[last:]))
    return re.compile("".join(out) + r"\Z")


class FastDispatch:
    """Finds the route served ahead of Quart for a method and path, if any: exact paths by a dict lookup, paths
    with parameters by their fixed prefix, then a pattern (a REST request pays a dict miss and a prefix test)."""

    def __init__(self, routes: tuple[Route, ...], ctx: RouteContext):
        self.exact: dict[str, dict[str, Served]] = {}
        self.patterns: list[tuple[str, re.Pattern[str], dict[str, Served]]] = []
        by_path: dict[str, dict[str, Served]] = {}
        for route in routes:
            if route.kind not in FAST_KINDS:
                continue
            # The Allow list of a stream's 405: every method the table has for the path.
            allow = ", ".join(sorted({r.method for r in routes if r.path == route.path}, key=METHOD_ORDER.index))
            served = self._served(route, ctx, allow)
            methods = by_path.setdefault(route.path, {})
            methods[route.method] = served
            if route.kind == "stream":
                methods["HEAD"] = served  # answered 405: a stream has no head
        for path, methods in by_path.items():
            if "<" in path:
                self.patterns.append((path[:path.index("<")], _pattern(path), methods))
            else:
                self.exact[path] = methods

    @staticmethod
    def _served(route: Route, ctx: RouteContext, allow: str) -> Served:
        if route.kind in ("mcp", "upload"):
            endpoint = PostEndpoint(ctx, route.handler, route.endpoint, route.body_limit, route.body_slack,
                                    retry_writes=route.kind == "upload")

            async def post(scope: HTTPScope, receive: ASGIReceiveCallable, send: ASGISendCallable,
                           params: dict[str, str]) -> None:
                await endpoint(scope, receive, send, params)
            return post
        handler = route.handler

        async def stream(scope: HTTPScope, receive: ASGIReceiveCallable, send: ASGISendCallable,
                         params: dict[str, str]) -> None:
            if scope["method"] == "HEAD":  # a stream has no head: one would stay open with nothing to send
                message = f"{scope['path']} is an event stream: open it with GET"
                await send_json(send, JsonAnswer(405, error_bytes("method_not_allowed", message), {"Allow": allow}))
                return
            opener = partial(handler, ctx, **params) if params else partial(handler, ctx)
            await serve_stream(scope, receive, send, ctx.lock_watch, opener, route.endpoint, ctx.hub.metrics,
                               run=ctx.hub.db.run if route.off_loop else None)
        return stream

    def find(self, method: str, path: str) -> tuple[Served, dict[str, str]] | None:
        """The route served ahead of Quart for this request and its path parameters; None: Quart serves it."""
        methods = self.exact.get(path)
        if methods is not None:
            served = methods.get(method)
            return (served, {}) if served is not None else None
        for prefix, pattern, methods in self.patterns:
            if path.startswith(prefix):
                served = methods.get(method)
                if served is not None and (m := pattern.match(path)):
                    return served, m.groupdict()
        return None
