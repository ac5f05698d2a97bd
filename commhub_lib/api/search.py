"""Route: GET /api/search, full-text search over what the caller's lists show (docs/search.md)."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from ..http.request import authenticate, hub, query_arg
from ..models import MAX_LIMIT
from ..service import networks
from ..service import search as search_service
from ..vocabulary import MESSAGE_KINDS, MessageKind
from .common import query_choice, query_int
from .queries import NetworkScope
from .records import Ok, Record, Text


class SearchQuery(NetworkScope):
    """GET /api/search."""

    q: str = Field(description="plain words, all required; a word ending in * matches as a prefix")
    kind: MessageKind | None = Field(default=None, description="only this kind (task: the tasks themselves)")
    limit: int | None = Field(default=None, ge=1, le=MAX_LIMIT,
                              description=f"at most this many (default {search_service.DEFAULT_LIMIT}, "
                                          f"capped at {search_service.MAX_LIMIT})")


class SearchHit(Record):
    """One text found: a task, or an inbox item (message, reply, notice, broadcast)."""

    kind: str
    id: str = Field(description="task_id for a task, message_id otherwise")
    task_id: Text
    network_id: str
    from_name: str
    to_name: str = Field(description="'*' for a broadcast")
    title: Text
    status: Text
    created_at: str
    snippet: str = Field(description="the words around the match")


class SearchResults(Ok):
    """Matches, newest first."""

    query: str
    results: list[SearchHit]


async def search() -> dict[str, Any]:
    """Tasks, messages and replies of the caller's networks matching `q`, newest first."""
    scope = networks.scope(hub(), authenticate(), query_arg("network_id") or None)
    return search_service.search(hub(), scope, query_arg("q") or "", query_int("limit", None, 1),
                                 query_choice("kind", MESSAGE_KINDS))


__all__ = ["SearchHit", "SearchQuery", "SearchResults", "search"]
