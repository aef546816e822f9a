"""/1.0/users/{name}/keys: access keys for the EC2-compatible API (yours, or anybody's for admins).
The secret is in the creation answer only."""
from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse

from ..service.access_keys import AccessKeyService
from ..service.users import Actor
from .auth import current_actor

router = APIRouter(prefix="/1.0", dependencies=[Depends(current_actor)])


def _keys(req: Request) -> AccessKeyService:
    return AccessKeyService(req.app.state.node)


@router.post("/users/{name}/keys", status_code=201,
             summary="Create an EC2 access key; the answer holds the secret, shown only once")
def create_key(req: Request, name: str, actor: Actor = Depends(current_actor)):
    return JSONResponse(_keys(req).create(actor, name), status_code=201)


@router.get("/users/{name}/keys", summary="List a user's EC2 access keys (never the secrets)")
def list_keys(req: Request, name: str, actor: Actor = Depends(current_actor)):
    return _keys(req).list(actor, name)


@router.delete("/users/{name}/keys/{key_id}", summary="Delete an EC2 access key: its signatures fail from now on")
def delete_key(req: Request, name: str, key_id: str, actor: Actor = Depends(current_actor)):
    _keys(req).delete(actor, name, key_id)
    return {"deleted": key_id}
