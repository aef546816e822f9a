"""The REST API (FastAPI). Faces only: parse, call the service, render. Long work answers
202 with the operation and a Location header; GET /1.0/operations/{id}/wait follows it.
Routers: routes_instances (instances), routes_users (users, tokens), routes_events (events, metrics);
here: server, node, limits, templates, operations, and the app with its request metrics."""
from __future__ import annotations

import asyncio
import time
from typing import Optional

from fastapi import APIRouter, Depends, FastAPI, Header, Query, Request
from fastapi.responses import JSONResponse, Response

from .. import __version__
from ..domain import limits as L
from ..service.instances import InstanceService
from ..service.metrics import RequestStats
from ..service.node import Node
from ..service.operations import OperationService, op_etag, op_view
from ..service.templates import TemplateService
from ..service.users import Actor, UserService, etag
from . import errors, exec_ws, routes_accounting, routes_events, routes_instances, routes_users
from .auth import admin_actor, current_actor
from ..service.ratelimit import RateLimiter
from .common import accepted, limits_of  # noqa: F401  (kept importable from here)
from .schemas import BuildTemplate

api = APIRouter(prefix="/1.0", dependencies=[Depends(current_actor)])


def _tagged(view: dict, tag: str, if_none_match: str | None) -> Response:
    if if_none_match and tag in [t.strip() for t in if_none_match.split(",")]:
        return Response(status_code=304, headers={"ETag": tag})
    return JSONResponse(view, headers={"ETag": tag})


@api.get("", summary="Server information, and who you are")
def server(req: Request, actor: Actor = Depends(current_actor)):
    return {"api_version": "1.0", "version": __version__, "node": req.app.state.node.info(),
            "auth": {"user": actor.name, "admin": actor.admin}}


@api.get("/node", summary="The node: capacity, drivers, orphans found at start-up")
def node(req: Request):
    return req.app.state.node.info()


@api.get("/limits", summary="The limits table: every knob, its range, default and kernel mapping")
def limits_table():
    return L.schema()


@api.get("/templates", summary="List built templates (with the instances using each: yours, or all for admins)")
def list_templates(req: Request, actor: Actor = Depends(current_actor)):
    return req.app.state.templates.list(actor.scope)


@api.get("/templates/builders", summary="Template names that can be built")
def builders(req: Request):
    return req.app.state.templates.builders()


@api.post("/templates", status_code=202, summary="Build a template (admins only; 202 + operation with progress)")
def build_template(req: Request, body: BuildTemplate, _a: Actor = Depends(admin_actor)):
    return accepted(req.app.state.templates.build(body.name, force=body.force))


@api.get("/templates/{name}", summary="Show one template, with its ETag")
def get_template(req: Request, name: str, actor: Actor = Depends(current_actor),
                 if_none_match: Optional[str] = Header(None)):
    view = req.app.state.templates.get(name, actor.scope)
    return _tagged(view, etag("template", *sorted((k, str(v)) for k, v in view.items())), if_none_match)


@api.delete("/templates/{name}", status_code=202, summary="Remove a template (admins only; refused while in use)")
def remove_template(req: Request, name: str, _a: Actor = Depends(admin_actor)):
    return accepted(req.app.state.templates.remove(name))


@api.get("/operations", summary="Recent operations (yours; all of them for admins)")
def list_operations(req: Request, actor: Actor = Depends(current_actor),
                    status: Optional[str] = Query(None, max_length=16),
                    limit: int = Query(100, ge=1, le=1000)):
    return [op_view(r) for r in req.app.state.operations.list(actor, status=status, limit=limit)]


@api.get("/operations/{op_id}", summary="One operation, with its ETag")
def get_operation(req: Request, op_id: str, actor: Actor = Depends(current_actor),
                  if_none_match: Optional[str] = Header(None)):
    row = req.app.state.operations.row(op_id, actor)
    return _tagged(op_view(row), op_etag(row), if_none_match)


@api.delete("/operations/{op_id}", summary="Cancel a pending operation (may_cancel); 409 once it runs")
def cancel_operation(req: Request, op_id: str, actor: Actor = Depends(current_actor)):
    return op_view(req.app.state.operations.cancel(op_id, actor))


@api.get("/operations/{op_id}/wait", summary="Long-poll until the operation ends or timeout seconds pass")
async def wait_operation(req: Request, op_id: str, actor: Actor = Depends(current_actor),
                         timeout: float = Query(30, ge=0, le=3600)):
    row = await asyncio.to_thread(req.app.state.operations.wait, op_id, timeout, actor)
    return op_view(row)


def _request_metrics(app: FastAPI, stats: RequestStats):
    """A small ASGI middleware: count requests and time them, by method and route template."""
    inner = app.build_middleware_stack

    def build():
        wrapped = inner()

        async def mw(scope, receive, send):
            if scope["type"] != "http":
                return await wrapped(scope, receive, send)
            t0, status = time.perf_counter(), [500]

            async def send_(msg):
                if msg["type"] == "http.response.start":
                    status[0] = msg["status"]
                await send(msg)
            try:
                await wrapped(scope, receive, send_)
            finally:
                route = getattr(scope.get("route"), "path", None) or "unmatched"
                stats.observe(scope.get("method", "?"), route, status[0], time.perf_counter() - t0)
        return mw
    app.build_middleware_stack = build


def _document_rate_limit(app: FastAPI) -> None:
    """Every operation may answer 429 to a TCP caller over its rate (service/ratelimit.py): say so in the
    OpenAPI document once, where it is generated."""
    generate = app.openapi

    def openapi() -> dict:
        if app.openapi_schema is None:
            for item in generate()["paths"].values():
                for op in item.values():
                    op.setdefault("responses", {}).setdefault("429", {
                        "description": "too many requests from this user over TCP: retry after Retry-After seconds"})
        return app.openapi_schema
    app.openapi = openapi


def create_app(node: Node) -> FastAPI:
    app = FastAPI(title="openvps", version=__version__,
                  description="Self-hosted VPS cloud: system containers on runc, limited the OpenVZ way. "
                              "Over the Unix socket you act as the built-in admin; over TCP send "
                              "`Authorization: Bearer <token>`.")
    app.state.node = node
    app.state.instances = InstanceService(node)
    app.state.templates = TemplateService(node)
    app.state.users = UserService(node)
    app.state.operations = OperationService(node)
    app.state.request_stats = RequestStats()
    app.state.rate_limiter = RateLimiter(node.config.rate_limit, node.config.rate_burst)
    errors.install(app)
    app.include_router(api)
    app.include_router(routes_instances.router)
    app.include_router(routes_users.router)
    app.include_router(routes_events.router)
    # beancounters and limit events: scoped to the caller's instances; capacity and split: admins
    app.include_router(routes_accounting.router)
    app.include_router(exec_ws.router)
    from . import routes_network
    # users manage the forwards, addresses and rules of their own instances (scoped in the service)
    app.include_router(routes_network.router)
    from ..service.images import ImageService
    from . import routes_images
    from ..service.backups import BackupService
    app.state.images = ImageService(node)     # publish, snapshots (issue 7)
    app.state.backups = BackupService(node)
    app.include_router(routes_images.router)
    from ..web import mount as mount_web    # the web dashboard at /ui/ (and its /1.0 additions)
    mount_web(app)
    from . import routes_keys
    app.include_router(routes_keys.router)      # EC2 access keys (the EC2 API itself: api/ec2, own port)
    _document_rate_limit(app)
    _request_metrics(app, app.state.request_stats)
    return app
