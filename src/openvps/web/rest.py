"""REST routes the dashboard adds to /1.0: a user's password, an instance's bookmarks and its
samples (the graphs). Owners read and change their own instances; admins everybody's."""
from __future__ import annotations

from typing import Optional
from urllib.parse import urlsplit

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from ..domain.errors import InvalidArgument
from ..service.users import Actor
from ..api.auth import current_actor

router = APIRouter(prefix="/1.0", dependencies=[Depends(current_actor)])

MAX_BOOKMARKS = 20


class SetPassword(BaseModel):
    model_config = ConfigDict(extra="forbid")
    password: Optional[str] = Field(..., description="at least 8 characters; null removes it (token logins only)")


class Bookmark(BaseModel):
    model_config = ConfigDict(extra="forbid")
    label: str = Field(description="what the link is, e.g. web site", examples=["web site"])
    url: str = Field(description="http(s) or ssh URL", examples=["http://198.51.100.7/"])


class SetBookmarks(BaseModel):
    model_config = ConfigDict(extra="forbid")
    bookmarks: list[Bookmark] = Field(default_factory=list, description=f"the whole list (at most {MAX_BOOKMARKS})")


def validate_bookmarks(items: list[dict]) -> list[dict]:
    if len(items) > MAX_BOOKMARKS:
        raise InvalidArgument(f"bookmarks: at most {MAX_BOOKMARKS}", field="bookmarks")
    out = []
    for i, b in enumerate(items):
        label, url = (b.get("label") or "").strip(), (b.get("url") or "").strip()
        if not _clean(label) or not _clean(url):
            raise InvalidArgument(f"bookmark {i + 1}: no control characters or invalid Unicode", field="bookmarks")
        if not 1 <= len(label) <= 100:
            raise InvalidArgument(f"bookmark {i + 1}: a label of 1 to 100 characters", field="label")
        parts = urlsplit(url)
        # only links a browser opens safely: never javascript: or data: (they would run in the dashboard)
        if parts.scheme not in ("http", "https", "ssh") or not parts.netloc or len(url) > 2000:
            raise InvalidArgument(f"bookmark {i + 1}: the URL must be http://, https:// or ssh:// with a host "
                                  "(at most 2000 characters)", field="url")
        out.append({"label": label, "url": url})
    return out


def _clean(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:      # lone surrogates from JSON escapes
        return False
    return not any(ord(c) < 32 or ord(c) == 127 for c in text)


def ssh_command(node, ctid: int, addresses: list[str], host: str | None) -> str | None:
    """How to reach the instance's sshd: its public address, else a forward to port 22 on the node,
    else its own address (from the node)."""
    info = node.networks.instance_info(ctid) if hasattr(node, "networks") else {}
    if info.get("public"):
        return f"ssh root@{info['public'][0]}"
    for f in info.get("forwards", []):
        if f["proto"] == "tcp" and f["target_port"] == 22 and host:
            return f"ssh -p {f['port']} root@{host}"
    return f"ssh root@{addresses[0]}" if addresses else None


def bookmarks_view(req: Request, row: dict) -> dict:
    node = req.app.state.node
    ips = node.netstore.addresses_of(row["ctid"]) if hasattr(node, "netstore") else []
    items = req.app.state.webauth.store.bookmarks([row["ctid"]]).get(row["ctid"], [])
    return {"ctid": row["ctid"], "name": row["name"], "bookmarks": items,
            "ssh": ssh_command(node, row["ctid"], ips, req.url.hostname)}


@router.put("/users/{name}/password", summary="Set a user's dashboard password (admins: anybody's; users: "
                                              "their own). Ends the user's browser sessions")
def set_password(req: Request, name: str, body: SetPassword, actor: Actor = Depends(current_actor)):
    req.app.state.webauth.set_password(actor, name, body.password)
    return {"user": name, "password": body.password is not None}


@router.get("/instances/{ident}/bookmarks", summary="An instance's bookmarks and its generated ssh command")
def get_bookmarks(req: Request, ident: str, actor: Actor = Depends(current_actor)):
    return bookmarks_view(req, req.app.state.instances._row(ident, actor))


@router.put("/instances/{ident}/bookmarks", summary="Replace an instance's bookmarks (label + http(s)/ssh URL)")
def put_bookmarks(req: Request, ident: str, body: SetBookmarks, actor: Actor = Depends(current_actor)):
    row = req.app.state.instances._row(ident, actor)
    items = validate_bookmarks([b.model_dump() for b in body.bookmarks])
    req.app.state.webauth.store.set_bookmarks(row["ctid"], items)
    return bookmarks_view(req, row)


@router.get("/instances/{ident}/samples", summary="CPU, RAM, swap and network samples for graphs "
                                                 "(range 1h at the sample interval, 1d at 5 minutes)")
def get_samples(req: Request, ident: str, actor: Actor = Depends(current_actor),
                range: str = Query("1h", pattern="^(1h|1d)$", description="1h or 1d")):
    row = req.app.state.instances._row(ident, actor)
    out = req.app.state.samples.query(row["ctid"], range)
    return {"ctid": row["ctid"], "name": row["name"],
            "limits": {"ram": row["limits"].get("ram"), "swap": row["limits"].get("swap")}, **out}
