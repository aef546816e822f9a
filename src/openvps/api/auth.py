"""Who is calling. Requests over the Unix socket (root only) act as the built-in admin; requests
that came in over TCP are marked by `tcp_app` and need `Authorization: Bearer <token>`."""
from __future__ import annotations

from fastapi import Request

from ..service.users import ROOT, Actor

TCP = "openvps.tcp"
RATED = "openvps.rated"


def tcp_app(app):
    """Wrap the ASGI app served on TCP: every request it passes on is marked as remote."""
    async def marked(scope, receive, send):
        if scope["type"] in ("http", "websocket"):
            scope[TCP] = True
        await app(scope, receive, send)
    return marked


def actor_for(scope: dict, headers, users) -> Actor:
    if not scope.get(TCP):
        return ROOT
    return users.authenticate(headers.get("authorization"))


def current_actor(req: Request) -> Actor:
    actor = actor_for(req.scope, req.headers, req.app.state.users)
    if req.scope.get(TCP) and not req.scope.get(RATED):
        req.scope[RATED] = True              # once per request, however many dependencies ask
        req.app.state.rate_limiter.take(actor.name)
    return actor


def admin_actor(req: Request) -> Actor:
    actor = current_actor(req)
    req.app.state.users.require_admin(actor)
    return actor
