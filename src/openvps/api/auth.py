"""Who is calling. Requests over the Unix socket (root only) act as the built-in admin; requests
that came in over TCP are marked by `tcp_app` and need `Authorization: Bearer <token>`, or the
dashboard's session cookie (service/webauth.py; unsafe methods also need its CSRF token)."""
from __future__ import annotations

from urllib.parse import urlsplit

from fastapi import Request
from starlette.requests import cookie_parser

from ..domain.errors import Forbidden
from ..service.users import ROOT, Actor
from ..service.webauth import COOKIE, CSRF_HEADER

TCP = "openvps.tcp"
RATED = "openvps.rated"


def tcp_app(app):
    """Wrap the ASGI app served on TCP: every request it passes on is marked as remote."""
    async def marked(scope, receive, send):
        if scope["type"] in ("http", "websocket"):
            scope[TCP] = True
        await app(scope, receive, send)
    return marked


def actor_for(scope: dict, headers, users, method: str = "GET") -> Actor:
    if not scope.get(TCP):
        return ROOT
    web = getattr(getattr(scope.get("app"), "state", None), "webauth", None)
    if web is not None and not headers.get("authorization"):
        # the dashboard's browser: its session cookie, with the CSRF token on unsafe methods
        session = cookie_parser(headers.get("cookie") or "").get(COOKIE)
        if session:
            if scope["type"] == "websocket" and not same_origin(headers):
                raise Forbidden("WebSocket from another site refused (Origin does not match Host)")
            return web.actor(session, method, headers.get(CSRF_HEADER))
    return users.authenticate(headers.get("authorization"))


def same_origin(headers) -> bool:
    """Browsers always send Origin on WebSockets: it must name this server (no cross-site hijacking)."""
    origin = headers.get("origin")
    if not origin:
        return True         # not a browser
    return urlsplit(origin).netloc == (headers.get("host") or "")


def current_actor(req: Request) -> Actor:
    actor = actor_for(req.scope, req.headers, req.app.state.users, req.method)
    if req.scope.get(TCP) and not req.scope.get(RATED):
        req.scope[RATED] = True              # once per request, however many dependencies ask
        req.app.state.rate_limiter.take(actor.name)
    return actor


def admin_actor(req: Request) -> Actor:
    actor = current_actor(req)
    req.app.state.users.require_admin(actor)
    return actor
