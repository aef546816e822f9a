"""Elastic addresses = the node's public addresses (service/networks.py): AllocateAddress,
AssociateAddress, DisassociateAddress, ReleaseAddress, DescribeAddresses. The network service owns the
rules (an address belongs to who allocated it; max_public_ips); the mapping row adds the AWS ids."""
from __future__ import annotations

from ...domain.errors import InsufficientResources, OpenVPSError, QuotaExceeded
from .context import Ctx, check_id, ident, new_id, translate
from .registry import action, tag_list
from .wire import Ec2Error, Params, matches


def _find(ctx: Ctx, alloc: str | None = None, ip: str | None = None, assoc: str | None = None) -> dict:
    if alloc:
        check_id(alloc, "eipalloc-", "InvalidAllocationID")
        rec = ctx.owned(alloc, "address")
        if rec:
            return rec
        raise Ec2Error("InvalidAllocationID.NotFound", f"The allocation ID '{alloc}' does not exist")
    for rec in ctx.svc.ec2.find("address", owner=ctx.actor.scope):
        if (ip and rec["ref"] == ip) or (assoc and (rec["data"].get("association") or {}).get("id") == assoc):
            return rec
    if assoc:
        raise Ec2Error("InvalidAssociationID.NotFound", f"The association ID '{assoc}' does not exist")
    raise Ec2Error("InvalidAddress.NotFound", f"Address '{ip}' not found.")


def _live(ctx: Ctx) -> dict[str, str | None]:
    return {p["address"]: p.get("instance") for p in ctx.svc.node.netstore.list_public()}


def _bound(ctx: Ctx) -> dict[str, str]:
    """openvps instance name -> the i- id of the caller's live EC2 instance of that name."""
    from .act_instances import records
    return {ident(rec): rec["id"] for rec, row in records(ctx) if row is not None}


def _association(rec: dict, live: dict, bound: dict) -> dict | None:
    """Where the address points now: {"id", "instance" (i- id), "name"} or None. The association EC2
    made, if the address still maps to that instance (older rows have no "name": it equals the id);
    else, when it was associated outside EC2 (CLI, REST) with one of the caller's EC2 instances, that
    instance without an association id."""
    a = rec["data"].get("association")
    name = live.get(rec["ref"])
    if not name:
        return None
    iid = bound.get(name)
    if a and a.get("name", a["instance"]) == name and iid in (None, a["instance"]):
        return a
    return {"id": None, "instance": iid, "name": name} if iid else None


@action("AllocateAddress")
def allocate_address(ctx: Ctx, p: Params) -> dict:
    from .act_instances import _tag_specs
    if (p.str("Domain") or "vpc") not in ("vpc", "standard"):
        raise Ec2Error("InvalidParameterValue", "Domain: vpc or standard")
    tags = _tag_specs(p, "elastic-ip")
    try:
        op = ctx.svc.networks.allocate_address(p.str("Address"), actor=ctx.actor)
        ctx.wait(op)
    except (InsufficientResources, QuotaExceeded) as e:
        raise Ec2Error("AddressLimitExceeded", e.message) from None
    except OpenVPSError as e:
        raise translate(e) from None
    address = op["target"]
    rec = ctx.svc.ec2.add("address", new_id("eipalloc-"), ctx.owner, ref=address, data={"tags": tags})
    return {"publicIp": address, "allocationId": rec["id"], "domain": "vpc", "publicIpv4Pool": "openvps",
            "networkBorderGroup": ctx.svc.region}


@action("AssociateAddress")
def associate_address(ctx: Ctx, p: Params) -> dict:
    from .act_instances import find_instance, live_row
    rec = _find(ctx, alloc=p.str("AllocationId"), ip=p.str("PublicIp"))
    if p.str("NetworkInterfaceId"):
        raise Ec2Error("InvalidParameterValue", "openvps associates addresses with instances (InstanceId), "
                       "not network interfaces")
    inst = find_instance(ctx, p.str("InstanceId", required=True))
    if live_row(ctx, inst) is None:
        raise Ec2Error("IncorrectInstanceState", f"The instance '{inst['id']}' is terminated")
    current = _live(ctx).get(rec["ref"])
    if current and current != ident(inst) and not p.bool("AllowReassociation", True):
        raise Ec2Error("Resource.AlreadyAssociated", f"the address {rec['ref']} is associated with {current}")
    try:
        ctx.wait(ctx.svc.networks.associate(rec["ref"], ident(inst), actor=ctx.actor))
    except OpenVPSError as e:
        raise translate(e, "InvalidInstanceID.NotFound") from None
    assoc = {"id": new_id("eipassoc-"), "instance": inst["id"], "name": ident(inst)}
    ctx.svc.ec2.update(rec["id"], data={**rec["data"], "association": assoc})
    return {"associationId": assoc["id"]}


@action("DisassociateAddress")
def disassociate_address(ctx: Ctx, p: Params) -> dict:
    assoc, ip = p.str("AssociationId"), p.str("PublicIp")
    if not assoc and not ip:
        raise Ec2Error("MissingParameter", "The request must contain the parameter AssociationId or PublicIp")
    if assoc:
        check_id(assoc, "eipassoc-", "InvalidAssociationID")
    rec = _find(ctx, ip=ip, assoc=assoc)
    a = _association(rec, _live(ctx), _bound(ctx))
    if a is None or (assoc and a["id"] != assoc):
        if assoc:
            raise Ec2Error("InvalidAssociationID.NotFound", f"The association ID '{assoc}' does not exist")
        return {"return": True}
    try:
        ctx.wait(ctx.svc.networks.disassociate(rec["ref"], actor=ctx.actor))
    except OpenVPSError as e:
        raise translate(e) from None
    ctx.svc.ec2.update(rec["id"], data={**rec["data"], "association": None})
    return {"return": True}


@action("ReleaseAddress")
def release_address(ctx: Ctx, p: Params) -> dict:
    alloc, ip = p.str("AllocationId"), p.str("PublicIp")
    if not alloc and not ip:
        raise Ec2Error("MissingParameter", "The request must contain the parameter AllocationId or PublicIp")
    rec = _find(ctx, alloc=alloc, ip=ip)
    if _live(ctx).get(rec["ref"]):
        raise Ec2Error("InvalidIPAddress.InUse", f"Address {rec['ref']} is in use (associated with "
                       f"{_live(ctx)[rec['ref']]}); disassociate it first")
    try:
        ctx.wait(ctx.svc.networks.release(rec["ref"], actor=ctx.actor))
    except OpenVPSError as e:
        raise translate(e) from None
    ctx.svc.ec2.delete(rec["id"])
    return {"return": True}


@action("DescribeAddresses")
def describe_addresses(ctx: Ctx, p: Params) -> dict:
    allocs, ips = p.strs("AllocationId"), p.strs("PublicIp")
    recs = [_find(ctx, alloc=a) for a in allocs] + [_find(ctx, ip=i) for i in ips]
    if not allocs and not ips:
        recs = ctx.svc.ec2.find("address", owner=ctx.actor.scope)
    live, bound = _live(ctx), _bound(ctx)
    out = []
    for rec in recs:
        a = _association(rec, live, bound)
        inst = a["instance"] if a else None
        private = None
        if inst:
            row = ctx.svc.node.store.find_instance(a.get("name", inst))
            ips_ = ctx.svc.node.netstore.addresses_of(row["ctid"]) if row else []
            private = ips_[0] if ips_ else None
        v = {"publicIp": rec["ref"], "allocationId": rec["id"], "domain": "vpc", "instanceId": inst,
             "associationId": a["id"] if a else None, "privateIpAddress": private, "publicIpv4Pool": "openvps",
             "networkBorderGroup": ctx.svc.region, "tagSet": tag_list(rec["data"].get("tags", {}))}
        fields = {"allocation-id": rec["id"], "public-ip": rec["ref"], "instance-id": inst, "domain": "vpc",
                  "association-id": v["associationId"], "private-ip-address": private}
        if matches(p.filters(), fields, rec["data"].get("tags", {})):
            out.append(v)
    return {"addressesSet": out}
