"""/1.0/instances: list (paged, filtered), create, show (ETag), change (If-Match), lifecycle."""
from __future__ import annotations

from typing import Optional

from fastapi import APIRouter, Depends, Header, Query, Request
from fastapi.responses import JSONResponse, Response

from ..service.users import Actor
from .auth import current_actor
from .common import accepted, limits_of
from .schemas import CreateInstance, RestartInstance, SetInstance, StopInstance

router = APIRouter(prefix="/1.0", dependencies=[Depends(current_actor)])


def _svc(req: Request):
    return req.app.state.instances


@router.get("/instances", summary="List instances, a page at a time (cursor over CTID), with filters")
def list_instances(req: Request, actor: Actor = Depends(current_actor),
                   limit: int = Query(500, ge=1, le=1000, description="items per page"),
                   cursor: Optional[str] = Query(None, max_length=200, description="next_cursor of the previous page"),
                   state: Optional[str] = Query(None, max_length=32, description="e.g. running"),
                   template: Optional[str] = Query(None, max_length=64),
                   name_prefix: Optional[str] = Query(None, max_length=63),
                   owner: Optional[str] = Query(None, max_length=63, description="admins only; others see their own"),
                   tag: list[str] = Query([], description="key=value; repeat to require several"),
                   fields: Optional[str] = Query(None, max_length=500, description="comma-separated, e.g. ctid,name,state")):
    page = _svc(req).page(actor, limit=limit, cursor=cursor, state=state, template=template, name_prefix=name_prefix,
                          owner=owner, tags=tag, fields=[f for f in (fields or "").split(",") if f] or None)
    return JSONResponse(page)   # plain JSON already: skip the generic encoder on the hot path


@router.post("/instances", status_code=202, summary="Create an instance (202 + operation)")
def create_instance(req: Request, body: CreateInstance, actor: Actor = Depends(current_actor)):
    return accepted(_svc(req).create(name=body.name, template=body.template, ctid=body.ctid, hostname=body.hostname,
                                     limits=limits_of(body.limits), ssh_keys=body.ssh_keys,
                                     root_password=body.root_password, start=body.start, nets=body.nets,
                                     ipadd=body.ipadd, nameservers=body.nameservers, searchdomain=body.searchdomain,
                                     privileged=body.privileged, tags=body.tags, description=body.description,
                                     volumes=body.volumes, mounts=body.mounts, actor=actor))


@router.get("/instances/{ident}", summary="Show one instance (by CTID or name), with its ETag")
def get_instance(req: Request, ident: str, actor: Actor = Depends(current_actor),
                 if_none_match: Optional[str] = Header(None)):
    view, tag = _svc(req).get_with_etag(ident, actor)
    if if_none_match and tag in [t.strip() for t in if_none_match.split(",")]:
        return Response(status_code=304, headers={"ETag": tag})
    return JSONResponse(view, headers={"ETag": tag})


@router.patch("/instances/{ident}", status_code=202,
              summary="Change limits or hostname live (save persists them), tags and description. "
                      "If-Match: a stale ETag answers 412")
def set_instance(req: Request, ident: str, body: SetInstance, actor: Actor = Depends(current_actor),
                 if_match: Optional[str] = Header(None)):
    return accepted(_svc(req).set(ident, limits=limits_of(body.limits), hostname=body.hostname, save=body.save,
                                  ipadd=body.ipadd, ipdel=body.ipdel, nameservers=body.nameservers,
                                  searchdomain=body.searchdomain, tags=body.tags, untag=body.untag,
                                  description=body.description, if_match=if_match, actor=actor))


@router.delete("/instances/{ident}", status_code=202, summary="Destroy an instance (refused while running unless force)")
def destroy_instance(req: Request, ident: str, force: bool = False, actor: Actor = Depends(current_actor)):
    return accepted(_svc(req).destroy(ident, force=force, actor=actor))


@router.post("/instances/{ident}/start", status_code=202, summary="Start")
def start(req: Request, ident: str, actor: Actor = Depends(current_actor)):
    return accepted(_svc(req).start(ident, actor=actor))


@router.post("/instances/{ident}/stop", status_code=202, summary="Stop: the init's stop signal, then a kill after timeout")
def stop(req: Request, ident: str, body: StopInstance | None = None, actor: Actor = Depends(current_actor)):
    body = body or StopInstance()
    return accepted(_svc(req).stop(ident, timeout=body.timeout, force=body.force, actor=actor))


@router.post("/instances/{ident}/restart", status_code=202, summary="Restart")
def restart(req: Request, ident: str, body: RestartInstance | None = None, actor: Actor = Depends(current_actor)):
    return accepted(_svc(req).restart(ident, timeout=(body or RestartInstance()).timeout, actor=actor))


@router.post("/instances/{ident}/suspend", status_code=202, summary="Suspend (freeze every process)")
def suspend(req: Request, ident: str, actor: Actor = Depends(current_actor)):
    return accepted(_svc(req).suspend(ident, actor=actor))


@router.post("/instances/{ident}/resume", status_code=202, summary="Resume a suspended instance")
def resume(req: Request, ident: str, actor: Actor = Depends(current_actor)):
    return accepted(_svc(req).resume(ident, actor=actor))
