"""The dashboard's pages. Each needs a browser session (the cookie from /ui/login); the page carries
the session's CSRF token for the browser's own calls to /1.0 (header X-CSRF-Token) and forms."""
from __future__ import annotations

import socket
from pathlib import Path
from urllib.parse import urlsplit

import jinja2
from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response

from ..domain.errors import OpenVPSError
from ..service.accounting import AccountingService
from ..service.users import Actor
from ..service.webauth import COOKIE, SESSION_TTL, csrf_ok
from .rest import bookmarks_view, ssh_command

router = APIRouter(prefix="/ui", include_in_schema=False)

_env = jinja2.Environment(loader=jinja2.FileSystemLoader(Path(__file__).parent / "templates"),
                          autoescape=jinja2.select_autoescape(["html"]))


def _size(n) -> str:
    if n is None:
        return "-"
    n = float(n)
    for unit in ("B", "K", "M", "G", "T"):
        if abs(n) < 1024 or unit == "T":
            return f"{n:.0f}{unit}" if unit == "B" else f"{n:.1f}{unit}"
        n /= 1024
    return str(n)


_env.filters["size"] = _size


class NeedLogin(Exception):
    pass


def render(name: str, status: int = 200, **ctx) -> HTMLResponse:
    resp = HTMLResponse(_env.get_template(name).render(**ctx), status_code=status)
    # no framing by other sites (clickjacking); scripts and styles only from us
    resp.headers["X-Frame-Options"] = "DENY"
    # (xterm.js writes its own <style> elements, hence inline styles)
    resp.headers["Content-Security-Policy"] = ("default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
                                               "img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'")
    resp.headers["Cache-Control"] = "no-store"
    return resp


def _session(req: Request) -> dict | None:
    return req.app.state.webauth.session(req.cookies.get(COOKIE))


def _page(req: Request, name: str, **ctx) -> Response:
    s = _session(req)
    if s is None:
        return RedirectResponse("/ui/login", status_code=303)
    actor = Actor(s["user"], s["admin"])
    return render(name, actor=actor, csrf=s["csrf"], hostname=socket.gethostname(), **ctx)


def _same_origin(req: Request) -> bool:
    origin = req.headers.get("origin")
    return not origin or urlsplit(origin).netloc == req.headers.get("host", "")


# ---------------------------------------------------------------- login / logout
@router.get("/login")
def login_page(req: Request):
    return render("login.html", actor=None, error=None)


@router.post("/login")
def login(req: Request, user: str = Form(""), password: str = Form(""), token: str = Form("")):
    if not _same_origin(req):      # login CSRF: only our own login form may log a browser in
        return render("login.html", status=403, actor=None, error="login from another site refused")
    try:
        secret, _csrf, _actor = req.app.state.webauth.login(user.strip() or None, password or None, token or None,
                                                            address=req.client.host if req.client else "")
    except OpenVPSError as e:
        resp = render("login.html", status=e.status, actor=None, error=e.message, user=user)
        if "retry_after" in e.details:
            resp.headers["Retry-After"] = str(e.details["retry_after"])
        return resp
    resp = RedirectResponse("/ui/", status_code=303)
    resp.set_cookie(COOKIE, secret, max_age=SESSION_TTL, httponly=True, samesite="strict", path="/",
                    secure=req.url.scheme == "https")
    return resp


@router.post("/logout")
def logout(req: Request, csrf: str = Form("")):
    s = _session(req)
    if s is not None:
        if not csrf_ok(s, "POST", csrf):
            return JSONResponse({"error": {"code": "forbidden", "message": "missing or wrong CSRF token",
                                           "details": {}}}, status_code=403)
        req.app.state.webauth.logout(req.cookies.get(COOKIE))
    resp = RedirectResponse("/ui/login", status_code=303)
    resp.delete_cookie(COOKIE, path="/")
    return resp


# ---------------------------------------------------------------- inventory
@router.get("/")
def inventory(req: Request):
    return _page(req, "inventory.html")


@router.get("/inventory.json")
def inventory_json(req: Request):
    """Every instance the session's user may see, with its latest RAM/swap sample and bookmarks."""
    s = _session(req)
    if s is None:
        return JSONResponse({"error": {"code": "unauthenticated", "message": "log in first", "details": {}}},
                            status_code=401)
    actor = Actor(s["user"], s["admin"])
    node = req.app.state.node
    views = req.app.state.instances.list(actor)
    ctids = [v["ctid"] for v in views]
    web = req.app.state.webauth.store
    latest = web.latest_samples(req.app.state.samples.interval)
    marks = web.bookmarks(ctids)
    host = socket.gethostname()
    items = []
    for v in views:
        smp = latest.get(v["ctid"]) if v["state"] in ("running", "suspended") else None
        items.append({"ctid": v["ctid"], "name": v["name"], "state": v["state"], "template": v["template"],
                      "node": host, "ip": v["ip"], "owner": v["owner"], "tags": v["tags"],
                      "ram": v["limits"].get("ram"), "swap_limit": v["limits"].get("swap"),
                      "memory": smp["memory"] if smp else None, "swap": smp["swap"] if smp else None,
                      "bookmarks": marks.get(v["ctid"], []),
                      "ssh": ssh_command(node, v["ctid"], v["ip"], req.url.hostname)})
    return JSONResponse({"items": items, "user": actor.name, "admin": actor.admin})


@router.get("/new")
def new_instance(req: Request):
    node = req.app.state.node
    s = _session(req)
    scope = None if s is None or s["admin"] else s["user"]
    templates = [t["name"] for t in req.app.state.templates.list(scope)] if s else []
    networks = [n["name"] for n in node.networks.list_networks()] if s and hasattr(node, "networks") else []
    return _page(req, "new.html", templates=templates, networks=networks)


# ---------------------------------------------------------------- one instance
@router.get("/instances/{ident}")
def instance_page(req: Request, ident: str):
    s = _session(req)
    if s is None:
        return RedirectResponse("/ui/login", status_code=303)
    actor = Actor(s["user"], s["admin"])
    try:
        view = req.app.state.instances.get(ident, actor)
        row = req.app.state.instances._row(ident, actor)
    except OpenVPSError as e:
        return render("error.html", status=404, actor=actor, csrf=s["csrf"], error=e.message)
    acc = AccountingService(req.app.state.node)
    # the owner reads their own instance's counters and limit events (the /1.0 routes are admin-only)
    beans = acc.beancounters(row["ctid"])
    events = acc.events(row["ctid"], limit=50)
    marks = bookmarks_view(req, row)
    return _page(req, "instance.html", inst=view, beans=beans, limit_events=events, marks=marks)


@router.get("/instances/{ident}/console")
def console_page(req: Request, ident: str):
    s = _session(req)
    if s is None:
        return RedirectResponse("/ui/login", status_code=303)
    try:
        view = req.app.state.instances.get(ident, Actor(s["user"], s["admin"]))
    except OpenVPSError as e:
        return render("error.html", status=404, actor=Actor(s["user"], s["admin"]), csrf=s["csrf"], error=e.message)
    return _page(req, "console.html", inst=view)


# ---------------------------------------------------------------- the node (admins)
@router.get("/node")
def node_page(req: Request):
    s = _session(req)
    if s is None:
        return RedirectResponse("/ui/login", status_code=303)
    actor = Actor(s["user"], s["admin"])
    if not actor.admin:
        return render("error.html", status=403, actor=actor, csrf=s["csrf"], error="the node page is for admins")
    node = req.app.state.node
    nets = node.networks
    return _page(req, "node.html", info=node.info(), capacity=AccountingService(node).capacity(),
                 networks=nets.list_networks(), addresses=nets.list_addresses(), forwards=nets.list_forwards(),
                 templates=req.app.state.templates.list(None))
