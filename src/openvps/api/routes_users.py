"""/1.0/users and /1.0/tokens. Users: admins only (a user may read itself). Tokens: your own, or
anybody's for admins; the secret is in the creation answer only."""
from __future__ import annotations

from typing import Optional

from fastapi import APIRouter, Depends, Header, Query, Request
from fastapi.responses import JSONResponse

from ..service.users import Actor, token_view, user_etag, user_view
from .auth import current_actor
from .schemas import CreateToken, CreateUser, UpdateUser

router = APIRouter(prefix="/1.0", dependencies=[Depends(current_actor)])


def _users(req: Request):
    return req.app.state.users


def _user_response(row: dict, status: int = 200) -> JSONResponse:
    return JSONResponse(user_view(row), status_code=status, headers={"ETag": user_etag(row)})


@router.get("/users", summary="List users (admins only)")
def list_users(req: Request, actor: Actor = Depends(current_actor)):
    return [user_view(u) for u in _users(req).list(actor)]


@router.post("/users", status_code=201, summary="Create a user (admins only)")
def create_user(req: Request, body: CreateUser, actor: Actor = Depends(current_actor)):
    q = body.quotas.model_dump(exclude_unset=True)
    return _user_response(_users(req).create(actor, body.name, admin=body.admin, quotas=q), 201)


@router.get("/users/{name}", summary="Show a user and its quotas, with its ETag (admins, or the user itself)")
def get_user(req: Request, name: str, actor: Actor = Depends(current_actor)):
    return _user_response(_users(req).get(actor, name))


@router.patch("/users/{name}", summary="Change a user's admin flag or quotas (admins only; If-Match honoured)")
def update_user(req: Request, name: str, body: UpdateUser, actor: Actor = Depends(current_actor),
                if_match: Optional[str] = Header(None)):
    q = body.quotas.model_dump(exclude_unset=True)
    return _user_response(_users(req).update(actor, name, admin=body.admin, quotas=q, if_match=if_match))


@router.delete("/users/{name}", summary="Delete a user and its tokens (refused while it owns instances)")
def delete_user(req: Request, name: str, actor: Actor = Depends(current_actor)):
    _users(req).delete(actor, name)
    return {"deleted": name}


@router.get("/tokens", summary="List API tokens (never the secrets): yours, or anybody's for admins")
def list_tokens(req: Request, actor: Actor = Depends(current_actor),
                user: Optional[str] = Query(None, max_length=63)):
    return [token_view(t) for t in _users(req).list_tokens(actor, user)]


@router.post("/tokens", status_code=201, summary="Create an API token; the answer holds the secret, shown only once")
def create_token(req: Request, body: CreateToken, actor: Actor = Depends(current_actor)):
    row, secret = _users(req).create_token(actor, body.user, body.description)
    return JSONResponse({**token_view(row), "token": secret}, status_code=201)


@router.delete("/tokens/{token_id}", summary="Revoke a token")
def revoke_token(req: Request, token_id: str, actor: Actor = Depends(current_actor)):
    _users(req).revoke_token(actor, token_id)
    return {"revoked": token_id}
