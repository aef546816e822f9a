"""The ONE error -> HTTP table. Every error leaves as {"error": {"code", "message", "details"}}."""
from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from ..domain.errors import OpenVPSError

log = logging.getLogger("openvps.api")


def body(code: str, message: str, details: dict | None = None) -> dict:
    return {"error": {"code": code, "message": message, "details": details or {}}}


def install(app: FastAPI) -> None:
    @app.exception_handler(OpenVPSError)
    async def _domain(_req: Request, exc: OpenVPSError):
        if exc.status >= 500:
            log.error("%s: %s", exc.code, exc.message)
        headers = {"Retry-After": str(exc.details["retry_after"])} if "retry_after" in exc.details else None
        return JSONResponse(body(exc.code, exc.message, exc.details), status_code=exc.status, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(_req: Request, exc: RequestValidationError):
        errs = exc.errors()
        first = errs[0] if errs else {}
        where = ".".join(str(x) for x in first.get("loc", ()) if x != "body")
        msg = f"{where}: {first.get('msg', 'invalid request')}" if where else first.get("msg", "invalid request")
        details = {"errors": [{"loc": [str(x) for x in e.get("loc", ())], "msg": e.get("msg")} for e in errs]}
        return JSONResponse(body("invalid_argument", msg, details), status_code=400)

    @app.exception_handler(HTTPException)
    async def _http(_req: Request, exc: HTTPException):
        code = {401: "unauthenticated", 403: "forbidden", 404: "not_found", 405: "method_not_allowed",
                412: "precondition_failed", 422: "invalid_argument", 429: "too_many_requests"}.get(exc.status_code, "http_error")
        return JSONResponse(body(code, str(exc.detail)), status_code=exc.status_code)

    @app.exception_handler(OverflowError)
    async def _overflow(_req: Request, exc: OverflowError):
        # a number too large for the store (e.g. an id of 2**63): bad input, not our crash
        return JSONResponse(body("invalid_argument", "a number in the request is out of range"), status_code=400)

    @app.exception_handler(Exception)
    async def _crash(_req: Request, exc: Exception):
        log.exception("unhandled error")
        return JSONResponse(body("internal", f"internal error: {type(exc).__name__}; see the daemon log"),
                            status_code=500)
