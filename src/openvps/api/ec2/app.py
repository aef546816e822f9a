"""The EC2 endpoint: its own ASGI app (served by the daemon on `ec2_listen`). One route, `/`, GET
or POST: authenticate with SigV4, dispatch on Action, answer XML. Unknown actions: InvalidAction."""
from __future__ import annotations

import asyncio
import logging
from datetime import datetime, timezone

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ...domain.errors import OpenVPSError
from ...service.instances import InstanceService
from ...service.operations import OperationService
from ...service.templates import TemplateService
from ...service.users import Actor, UserService
from ...store.ec2store import Ec2Store
from . import actions
from .context import Ctx, Services, translate
from .wire import Ec2Error, Params, parse_params, render, render_error, request_id, verify_sigv4

log = logging.getLogger("openvps.ec2")
VERSION = "2016-11-15"
MAX_BODY = 1 << 20


def create_ec2_app(node, region: str = "openvps-1") -> Starlette:
    svc = Services(node=node, instances=InstanceService(node), templates=TemplateService(node),
                   users=UserService(node), operations=OperationService(node), ec2=Ec2Store(node.store),
                   region=region)

    async def endpoint(req: Request) -> Response:
        rid = request_id()
        try:
            body = await req.body()
            if len(body) > MAX_BODY:
                raise Ec2Error("InvalidParameterValue", "request body too large (1 MiB at most)")
            flat = parse_params(req.url.query, body, req.headers.get("content-type", ""))
            headers: dict[str, list[str]] = {}
            for k, v in req.headers.raw:
                headers.setdefault(k.decode("latin-1").lower(), []).append(v.decode("latin-1"))
            raw_path = req.scope.get("raw_path", b"/").decode("latin-1").split("?")[0]
            key_id = verify_sigv4(req.method, raw_path, req.url.query, headers, body,
                                  lambda k: (svc.ec2.access_key(k) or {}).get("secret"),
                                  now=datetime.now(timezone.utc))
            action = flat.get("Action", "")
            result = await asyncio.to_thread(_call, svc, key_id, action, flat)
            return Response(render(action, result, rid), media_type="text/xml")
        except Ec2Error as e:
            if e.status >= 500:
                log.error("%s: %s", e.code, e.message)
            return Response(render_error(e.code, e.message, rid), status_code=e.status, media_type="text/xml")
        except Exception:
            log.exception("EC2 request failed")
            return Response(render_error("InternalError", "internal error; see the daemon log", rid),
                            status_code=500, media_type="text/xml")

    return Starlette(routes=[Route("/", endpoint, methods=["GET", "POST"])])


def _call(svc: Services, key_id: str, action: str, flat: dict) -> dict:
    user = svc.node.store.find_user((svc.ec2.access_key(key_id) or {}).get("user", ""))
    if user is None:
        raise Ec2Error("AuthFailure", "the access key's user is gone", 401)
    if not action:
        raise Ec2Error("MissingAction", "The request must contain the parameter Action")
    fn = actions.ACTIONS.get(action)
    if fn is None:
        raise Ec2Error("InvalidAction", f"The action {action} is not valid for this web service "
                       f"(openvps implements: {', '.join(sorted(actions.ACTIONS))})")
    version = flat.get("Version")
    if version and version != VERSION:
        raise Ec2Error("InvalidParameterValue", f"API version {version} is not supported; use {VERSION}")
    ctx = Ctx(svc=svc, actor=Actor(user["name"], bool(user["admin"])), action=action)
    p = Params(flat)
    if p.bool("DryRun"):
        # a user may act on its own resources; nothing is checked beyond the signature and the action
        raise Ec2Error("DryRunOperation", "Request would have succeeded, but DryRun flag is set.", 412)
    try:
        return fn(ctx, p)
    except OpenVPSError as e:
        raise translate(e) from None
