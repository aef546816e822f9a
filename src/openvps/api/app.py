"""The REST API (FastAPI). Faces only: parse, call the service, render. Long work answers
202 with the operation and a Location header; GET /1.0/operations/{id}/wait follows it."""
from __future__ import annotations

import asyncio

from fastapi import APIRouter, FastAPI, Query, Request
from fastapi.responses import JSONResponse

from .. import __version__
from ..domain import limits as L
from ..service.instances import InstanceService
from ..service.node import Node
from ..service.templates import TemplateService
from ..service.views import iso
from . import errors, exec_ws, routes_accounting
from .schemas import BuildTemplate, CreateInstance, RestartInstance, SetInstance, StopInstance

api = APIRouter(prefix="/1.0")


def op_view(row: dict) -> dict:
    return {
        "id": row["id"], "kind": row["kind"], "status": row["status"], "target": row["target"],
        "progress": row["progress"], "message": row["message"], "result": row["result"], "error": row["error"],
        "created_at": iso(row["created_at"]), "updated_at": iso(row["updated_at"]),
    }


def accepted(row: dict) -> JSONResponse:
    return JSONResponse(op_view(row), status_code=202, headers={"Location": f"/1.0/operations/{row['id']}"})


def _svc(req: Request) -> InstanceService:
    return req.app.state.instances


def _limits(model) -> dict:
    return {k: v for k, v in model.model_dump().items() if v is not None}


@api.get("", summary="Server information")
def server(req: Request):
    return {"api_version": "1.0", "version": __version__, "node": req.app.state.node.info()}


@api.get("/node", summary="The node: capacity, drivers, orphans found at start-up")
def node(req: Request):
    return req.app.state.node.info()


@api.get("/limits", summary="The limits table: every knob, its range, default and kernel mapping")
def limits_table():
    return L.schema()


@api.get("/instances", summary="List instances")
def list_instances(req: Request):
    return _svc(req).list()


@api.post("/instances", status_code=202, summary="Create an instance (202 + operation)")
def create_instance(req: Request, body: CreateInstance):
    return accepted(_svc(req).create(name=body.name, template=body.template, ctid=body.ctid, hostname=body.hostname,
                                     limits=_limits(body.limits), ssh_keys=body.ssh_keys,
                                     root_password=body.root_password, start=body.start))


@api.get("/instances/{ident}", summary="Show one instance (by CTID or name)")
def get_instance(req: Request, ident: str):
    return _svc(req).get(ident)


@api.patch("/instances/{ident}", status_code=202, summary="Change limits or hostname live, and with save persist them")
def set_instance(req: Request, ident: str, body: SetInstance):
    return accepted(_svc(req).set(ident, limits=_limits(body.limits), hostname=body.hostname, save=body.save))


@api.delete("/instances/{ident}", status_code=202, summary="Destroy an instance (refused while running unless force)")
def destroy_instance(req: Request, ident: str, force: bool = False):
    return accepted(_svc(req).destroy(ident, force=force))


@api.post("/instances/{ident}/start", status_code=202, summary="Start")
def start(req: Request, ident: str):
    return accepted(_svc(req).start(ident))


@api.post("/instances/{ident}/stop", status_code=202, summary="Stop: the init's stop signal, then a kill after timeout")
def stop(req: Request, ident: str, body: StopInstance | None = None):
    body = body or StopInstance()
    return accepted(_svc(req).stop(ident, timeout=body.timeout, force=body.force))


@api.post("/instances/{ident}/restart", status_code=202, summary="Restart")
def restart(req: Request, ident: str, body: RestartInstance | None = None):
    return accepted(_svc(req).restart(ident, timeout=(body or RestartInstance()).timeout))


@api.post("/instances/{ident}/suspend", status_code=202, summary="Suspend (freeze every process)")
def suspend(req: Request, ident: str):
    return accepted(_svc(req).suspend(ident))


@api.post("/instances/{ident}/resume", status_code=202, summary="Resume a suspended instance")
def resume(req: Request, ident: str):
    return accepted(_svc(req).resume(ident))


@api.get("/templates", summary="List built templates (with the instances using each)")
def list_templates(req: Request):
    return req.app.state.templates.list()


@api.get("/templates/builders", summary="Template names that can be built")
def builders(req: Request):
    return req.app.state.templates.builders()


@api.post("/templates", status_code=202, summary="Build a template (202 + operation with progress)")
def build_template(req: Request, body: BuildTemplate):
    return accepted(req.app.state.templates.build(body.name, force=body.force))


@api.get("/templates/{name}", summary="Show one template")
def get_template(req: Request, name: str):
    return req.app.state.templates.get(name)


@api.delete("/templates/{name}", status_code=202, summary="Remove a template (refused while instances use it)")
def remove_template(req: Request, name: str):
    return accepted(req.app.state.templates.remove(name))


@api.get("/operations", summary="Recent operations")
def list_operations(req: Request, status: str | None = None, limit: int = Query(100, ge=1, le=1000)):
    return [op_view(r) for r in req.app.state.node.store.list_operations(status=status, limit=limit)]


@api.get("/operations/{op_id}", summary="One operation")
def get_operation(req: Request, op_id: str):
    return op_view(req.app.state.node.store.get_operation(op_id))


@api.get("/operations/{op_id}/wait", summary="Long-poll until the operation ends or timeout seconds pass")
async def wait_operation(req: Request, op_id: str, timeout: float = Query(30, ge=0, le=3600)):
    row = await asyncio.to_thread(req.app.state.node.runner.wait, op_id, timeout)
    return op_view(row)


def create_app(node: Node) -> FastAPI:
    app = FastAPI(title="openvps", version=__version__,
                  description="Self-hosted VPS cloud: system containers on runc, limited the OpenVZ way.")
    app.state.node = node
    app.state.instances = InstanceService(node)
    app.state.templates = TemplateService(node)
    errors.install(app)
    app.include_router(api)
    app.include_router(routes_accounting.router)
    app.include_router(exec_ws.router)
    return app
