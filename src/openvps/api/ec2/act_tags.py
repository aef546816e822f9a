"""CreateTags, DescribeTags, DeleteTags. Instance tags are the openvps instance's own tags (the
REST API and CLI see them too); key pairs, security groups and addresses keep theirs in the
mapping row."""
from __future__ import annotations

from ...domain.errors import OpenVPSError
from ...domain.instance import validate_tags
from .context import Ctx, ident, translate
from .registry import action, page
from .wire import Ec2Error, Params, matches

KINDS = {"i-": ("instance", "instance", "InvalidInstanceID"), "key-": ("keypair", "key-pair", "InvalidKeyPairId"),
         "sg-": ("group", "security-group", "InvalidGroup"), "eipalloc-": ("address", "elastic-ip", "InvalidAllocationID")}


def _resolve(ctx: Ctx, rid: str) -> tuple[dict, str]:
    for prefix, (kind, rtype, err) in KINDS.items():
        if isinstance(rid, str) and rid.startswith(prefix):
            rec = ctx.owned(rid, kind)
            if rec is None:
                raise Ec2Error(f"{err}.NotFound", f"The ID '{rid}' does not exist")
            return rec, rtype
    raise Ec2Error("InvalidID", f"The ID '{rid}' is not valid (openvps tags i-, key-, sg- and eipalloc- resources)")


def _tags(p: Params, name: str = "Tag", need_value: bool = True) -> list[tuple[str, str | None]]:
    out = []
    for t in p.list(name):
        if not isinstance(t, dict) or not t.get("Key") or not isinstance(t["Key"], str) \
                or not isinstance(t.get("Value", ""), str):
            raise Ec2Error("InvalidParameterValue", f"each {name}.N needs a Key")
        out.append((t["Key"], t.get("Value", "" if need_value else None)))
    return out


def _instance_tags(ctx: Ctx, rec: dict, tags: dict | None = None, untag: list[str] | None = None) -> None:
    from .act_instances import live_row
    if live_row(ctx, rec) is None:
        raise Ec2Error("IncorrectInstanceState", f"The instance '{rec['id']}' is terminated")
    try:
        ctx.wait(ctx.svc.instances.set(ident(rec), tags=tags, untag=untag, actor=ctx.actor))
    except OpenVPSError as e:
        raise translate(e, "InvalidInstanceID.NotFound") from None


@action("CreateTags")
def create_tags(ctx: Ctx, p: Params) -> dict:
    ids, tags = p.strs("ResourceId"), dict(_tags(p))
    if not ids or not tags:
        raise Ec2Error("MissingParameter", "CreateTags needs ResourceId.N and Tag.N.Key")
    try:
        validate_tags(tags)
    except OpenVPSError as e:
        raise translate(e) from None
    recs = [_resolve(ctx, i)[0] for i in ids]
    for rec in recs:
        if rec["kind"] == "instance":
            _instance_tags(ctx, rec, tags=tags)
        else:
            ctx.svc.ec2.update(rec["id"], data={**rec["data"], "tags": {**rec["data"].get("tags", {}), **tags}})
    return {"return": True}


@action("DeleteTags")
def delete_tags(ctx: Ctx, p: Params) -> dict:
    ids = p.strs("ResourceId")
    if not ids:
        raise Ec2Error("MissingParameter", "DeleteTags needs ResourceId.N")
    wanted = _tags(p, need_value=False)
    for rec in [_resolve(ctx, i)[0] for i in ids]:
        current = current_tags(ctx, rec)
        # a Tag with a Value deletes only when the value matches; no Tag at all deletes every tag
        drop = [k for k, v in (wanted or [(k, None) for k in current]) if k in current and v in (None, current[k])]
        if not drop:
            continue
        if rec["kind"] == "instance":
            _instance_tags(ctx, rec, untag=drop)
        else:
            ctx.svc.ec2.update(rec["id"], data={**rec["data"], "tags": {k: v for k, v in current.items()
                                                                         if k not in drop}})
    return {"return": True}


def current_tags(ctx: Ctx, rec: dict) -> dict:
    if rec["kind"] == "instance":
        from .act_instances import live_row
        row = live_row(ctx, rec)
        return (row.get("tags") or {}) if row else rec["data"].get("tags", {})
    return rec["data"].get("tags", {})


@action("DescribeTags")
def describe_tags(ctx: Ctx, p: Params) -> dict:
    from .act_instances import records
    out = []
    objs = [(rec, "instance") for rec, _row in records(ctx)]
    for prefix, (kind, rtype, _) in KINDS.items():
        if kind != "instance":
            objs += [(r, rtype) for r in ctx.svc.ec2.find(kind, owner=ctx.actor.scope)]
    for rec, rtype in objs:
        for k, v in sorted(current_tags(ctx, rec).items()):
            item = {"resourceId": rec["id"], "resourceType": rtype, "key": k, "value": v}
            if matches(p.filters(), {"resource-id": rec["id"], "resource-type": rtype, "key": k, "value": v}):
                out.append(item)
    chunk, nxt = page(out, p, lambda x: f"{x['resourceId']}\0{x['key']}", minimum=5)
    return {"tagSet": chunk, "nextToken": nxt}
