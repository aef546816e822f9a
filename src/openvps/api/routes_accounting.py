"""Accounting routes: beancounters and limit/OOM events (a user sees those of their own instances),
node capacity and split (admins: they show every instance)."""
from __future__ import annotations

import json

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse, Response

from ..service.accounting import AccountingService
from ..service.users import Actor
from .auth import admin_actor, current_actor

router = APIRouter(prefix="/1.0")


def _acc(req: Request) -> AccountingService:
    return AccountingService(req.app.state.node)


@router.get("/instances/{ident}/beancounters", summary="OpenVZ-style beancounters of one instance")
def beancounters(req: Request, ident: str, actor: Actor = Depends(current_actor)):
    return _acc(req).beancounters(ident, actor)


@router.post("/instances/{ident}/beancounters/reset", status_code=202,
             summary="Zero maxheld and failcnt where the kernel allows (202 + operation)")
def reset(req: Request, ident: str, actor: Actor = Depends(current_actor)):
    from .app import op_view
    row = _acc(req).reset(ident, actor)
    return JSONResponse(op_view(row), status_code=202, headers={"Location": f"/1.0/operations/{row['id']}"})


@router.get("/beancounters", summary="Beancounters of every running instance")
def beancounters_all(req: Request, actor: Actor = Depends(current_actor)):
    # plain ints and strings: skip FastAPI's generic encoder (it dominates for 200 instances)
    return Response(json.dumps(_acc(req).beancounters_all(actor)), media_type="application/json")


@router.get("/instances/{ident}/events", summary="Limit hits and OOM kills of one instance, newest first")
def instance_events(req: Request, ident: str, limit: int = Query(100, ge=1, le=10000),
                    actor: Actor = Depends(current_actor)):
    return _acc(req).events(ident, limit=limit, actor=actor)


@router.get("/limit-events", summary="Limit hits and OOM kills of every instance, newest first "
            "(they are also in the event stream, GET /1.0/events, as type instance.limit)")
def events(req: Request, limit: int = Query(100, ge=1, le=10000), actor: Actor = Depends(current_actor)):
    return _acc(req).events(None, limit=limit, actor=actor)


@router.get("/node/capacity", summary="Overcommit accounting: RAM, swap, guarantees, limits, free to promise "
            "(admins only)", dependencies=[Depends(admin_actor)])
def capacity(req: Request):
    return _acc(req).capacity()


@router.get("/node/split", summary="Sizes of N equal instances for this node (vzsplit; admins only)",
            dependencies=[Depends(admin_actor)])
def split(req: Request, n: int = Query(..., ge=1, le=100000)):
    return _acc(req).split(n)
