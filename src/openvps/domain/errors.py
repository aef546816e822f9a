"""The one error hierarchy. Each error carries a machine-readable code and an HTTP status;
api/errors.py maps them in one place. Messages say what went wrong and what to do next."""
from __future__ import annotations


class OpenVPSError(Exception):
    code = "internal"
    status = 500

    def __init__(self, message: str, **details):
        super().__init__(message)
        self.message = message
        self.details = details

    def to_dict(self) -> dict:
        return {"code": self.code, "message": self.message, "details": self.details}


class InvalidArgument(OpenVPSError):
    code = "invalid_argument"
    status = 400


class NotFound(OpenVPSError):
    code = "not_found"
    status = 404


class Conflict(OpenVPSError):
    """The object exists already (duplicate name / CTID) or is in use."""
    code = "conflict"
    status = 409


class InvalidState(OpenVPSError):
    """The operation is not allowed in the instance's current state."""
    code = "invalid_state"
    status = 409


class InsufficientResources(OpenVPSError):
    code = "insufficient_resources"
    status = 409


class Unauthenticated(OpenVPSError):
    """TCP requests need `Authorization: Bearer <token>` (make one with `openvps token create USER`)."""
    code = "unauthenticated"
    status = 401


class Forbidden(OpenVPSError):
    """The caller is known but may not do this (e.g. a non-admin managing users or templates)."""
    code = "forbidden"
    status = 403


class QuotaExceeded(OpenVPSError):
    """A per-user quota (instances, total RAM, public addresses) refuses the request. 403, not 429:
    retrying does not help until the user frees something or an admin raises the quota. (429 is kept
    for request-rate limiting.)"""
    code = "quota_exceeded"
    status = 403


class PreconditionFailed(OpenVPSError):
    """If-Match did not match the object's current ETag: someone changed it since you read it."""
    code = "precondition_failed"
    status = 412


class DriverError(OpenVPSError):
    """An OS-level step failed (runc, mount, cgroup); wrapped at the driver boundary."""
    code = "driver_error"
    status = 500


class Cancelled(OpenVPSError):
    code = "cancelled"
    status = 409


class RateLimited(OpenVPSError):
    """Too many requests from one user (details: retry_after seconds)."""
    code = "too_many_requests"
    status = 429


ERRORS_BY_CODE = {c.code: c for c in (OpenVPSError, InvalidArgument, NotFound, Conflict, InvalidState,
                                      InsufficientResources, Unauthenticated, Forbidden, QuotaExceeded,
                                      PreconditionFailed, DriverError, Cancelled, RateLimited)}


def from_dict(d: dict) -> OpenVPSError:
    """Rebuild an error from its wire form (client side)."""
    cls = ERRORS_BY_CODE.get(d.get("code", ""), OpenVPSError)
    err = cls(d.get("message", "unknown error"), **(d.get("details") or {}))
    err.code = d.get("code", cls.code)
    return err
