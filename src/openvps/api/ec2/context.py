"""What an EC2 action works with: the caller (an openvps user), the same services the REST API
uses, the EC2 mapping table, and the translation of openvps errors into EC2 error codes."""
from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass, field

from ...domain.errors import (Conflict, Forbidden, InsufficientResources, InvalidArgument, InvalidState, NotFound,
                              OpenVPSError, QuotaExceeded)
from ...service.users import Actor
from ...store.ec2store import Ec2Store
from .wire import Ec2Error

PREFIXES = ("i-", "r-", "ami-", "sg-", "eipalloc-", "eipassoc-", "key-")


def new_id(prefix: str) -> str:
    return prefix + secrets.token_hex(9)[:17]


def ident(rec: dict) -> str:
    """The openvps instance behind an EC2 instance record: its name. RunInstances names the instance by
    its i- id (so ref == id there); an adopted instance (made by the CLI, REST or dashboard) keeps its
    own name. Use this, never rec["id"], whenever an openvps call needs the instance."""
    return rec.get("ref") or rec["id"]


def image_id(template: str) -> str:
    """Images are templates; their id is derived from the name, so it is stable without a table."""
    return "ami-" + hashlib.sha256(template.encode()).hexdigest()[:17]


@dataclass
class Services:
    node: object
    instances: object
    templates: object
    users: object
    operations: object
    ec2: Ec2Store
    region: str

    @property
    def networks(self):
        return self.node.networks


@dataclass
class Ctx:
    svc: Services
    actor: Actor
    action: str = ""
    extra: dict = field(default_factory=dict)

    @property
    def owner(self) -> str:
        return self.actor.name

    def owned(self, id: str, kind: str) -> dict | None:
        """The caller's EC2 record `id` of `kind`; None for a missing one or another user's (no leak)."""
        rec = self.svc.ec2.get(id)
        return rec if rec is not None and rec["kind"] == kind and self.actor.owns(rec) else None

    def wait(self, op: dict, timeout: float = 60) -> dict:
        """Run a short operation to its end (addresses, firewall, tags): EC2 answers those at once."""
        row = self.svc.node.runner.wait(op["id"], timeout)
        if row["status"] in ("pending", "running"):
            raise Ec2Error("RequestLimitExceeded", f"operation {row['kind']} is still {row['status']} after "
                           f"{timeout:.0f} s; retry later", 503)
        if row["status"] != "success":
            from ...domain.errors import from_dict
            raise translate(from_dict(row.get("error") or {"message": f"operation {row['kind']} {row['status']}"}))
        return row


def check_id(value: str, prefix: str, what: str) -> str:
    """A malformed id gives X.Malformed, like AWS."""
    body = value[len(prefix):] if isinstance(value, str) and value.startswith(prefix) else ""
    if not body or len(body) > 17 or any(c not in "0123456789abcdef" for c in body):
        raise Ec2Error(f"{what}.Malformed", f"Invalid id: \"{value}\" (expecting \"{prefix}...\")")
    return value


def translate(e: OpenVPSError, not_found: str | None = None) -> Ec2Error:
    """openvps error -> EC2 error. Everything but a genuine server fault is a 4xx."""
    if isinstance(e, NotFound):
        return Ec2Error(not_found or "InvalidParameterValue", e.message)
    if isinstance(e, QuotaExceeded):
        quota = e.details.get("quota")
        code = {"max_instances": "InstanceLimitExceeded", "max_public_ips": "AddressLimitExceeded"}.get(
            quota, "ResourceLimitExceeded")
        return Ec2Error(code, e.message)
    if isinstance(e, InvalidState):
        return Ec2Error("IncorrectInstanceState", e.message)
    if isinstance(e, InsufficientResources):
        return Ec2Error("InsufficientInstanceCapacity", e.message)
    if isinstance(e, Forbidden):
        return Ec2Error("UnauthorizedOperation", e.message, 403)
    if isinstance(e, Conflict):
        return Ec2Error("IncorrectState", e.message)
    if isinstance(e, InvalidArgument):
        return Ec2Error("InvalidParameterValue", e.message)
    if e.status < 500:
        return Ec2Error("InvalidParameterValue", e.message)
    return Ec2Error("InternalError", e.message, 500)
