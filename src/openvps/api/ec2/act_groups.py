"""Security groups: an EC2-layer table of groups (name, description, ingress rules) realised as the
node firewall's per-instance allows (service/networks.py allow/remove_rule) for every member
instance. Inbound traffic from the uplink is dropped unless a rule allows it, as in EC2."""
from __future__ import annotations

import ipaddress

from ...domain.errors import OpenVPSError
from .context import Ctx, check_id, ident, new_id, translate
from .registry import action, page, tag_list
from .wire import Ec2Error, Params, matches

PROTOS = {"tcp": "tcp", "6": "tcp", "udp": "udp", "17": "udp"}
MAX_PORTS = 64        # the firewall allows single ports: a range becomes one rule per port


def find_group(ctx: Ctx, gid: str | None = None, name: str | None = None) -> dict:
    if gid:
        check_id(gid, "sg-", "InvalidGroupId")
        rec = ctx.owned(gid, "group")
        if rec:
            return rec
        raise Ec2Error("InvalidGroup.NotFound", f"The security group '{gid}' does not exist")
    found = ctx.svc.ec2.find("group", owner=ctx.owner, name=name)
    if not name or not found:
        raise Ec2Error("InvalidGroup.NotFound", f"The security group '{name}' does not exist")
    return found[0]


def _group_of(ctx: Ctx, p: Params) -> dict:
    gid, name = p.str("GroupId"), p.str("GroupName")
    if not gid and not name:
        raise Ec2Error("MissingParameter", "The request must contain the parameter GroupId or GroupName")
    return find_group(ctx, gid=gid, name=name)


def _desired(ctx: Ctx, rec: dict) -> set[tuple[str, int, str]]:
    out = set()
    for gid in rec["data"].get("groups", []):
        g = ctx.svc.ec2.get(gid)
        for r in (g["data"].get("rules", []) if g else []):
            for port in range(r["from"], r["to"] + 1):
                out.add((r["proto"], port, r["cidr"]))
    return out


def sync_instance(ctx: Ctx, rec: dict) -> None:
    """Make the instance's firewall allows match its groups' rules. Only allows that EC2 made are
    removed (an admin's own `openvps firewall allow` rules stay)."""
    from .act_instances import live_row
    row = live_row(ctx, rec)
    if row is None:
        return
    rec = ctx.svc.ec2.get(rec["id"]) or rec
    want = _desired(ctx, rec)
    mine = {tuple(x) for x in rec["data"].get("fw", [])}
    actual = {(r["proto"], r["port"], r["source"]): r["id"] for r in ctx.svc.node.netstore.list_rules(row["ctid"])}
    net = ctx.svc.networks
    try:
        for proto, port, cidr in sorted(want - set(actual)):
            ctx.wait(net.allow(ident(rec), proto, port, cidr, actor=ctx.actor))
        for key in sorted((mine - want) & set(actual)):
            ctx.wait(net.remove_rule(actual[key], actor=ctx.actor))
    except OpenVPSError as e:
        raise translate(e) from None
    fresh = ctx.svc.ec2.get(rec["id"]) or rec
    ctx.svc.ec2.update(rec["id"], data={**fresh["data"], "fw": sorted([list(k) for k in want])})


def _sync_group(ctx: Ctx, gid: str) -> None:
    from .act_instances import records
    for rec, row in records(ctx):
        if row is not None and gid in rec["data"].get("groups", []):
            sync_instance(ctx, rec)


def _set_rules(ctx: Ctx, g: dict, rules: list[dict]) -> None:
    """The group's new rule set, realised on its member instances; if that fails half-way, the old set
    is stored and realised again (no half-made change, for an authorize or a revoke)."""
    ctx.svc.ec2.update(g["id"], data={**g["data"], "rules": rules})
    try:
        _sync_group(ctx, g["id"])
    except Exception:
        ctx.svc.ec2.update(g["id"], data=g["data"])
        _sync_group(ctx, g["id"])
        raise


def _permissions(p: Params) -> list[dict]:
    perms = p.list("IpPermissions")
    if not perms and p.str("IpProtocol"):
        perms = [{"IpProtocol": p.str("IpProtocol"), "FromPort": p.str("FromPort"), "ToPort": p.str("ToPort"),
                  "IpRanges": [{"CidrIp": p.str("CidrIp") or "0.0.0.0/0"}]}]
    if not perms:
        raise Ec2Error("MissingParameter", "give IpPermissions.N (IpProtocol, FromPort, ToPort, IpRanges.M.CidrIp)")
    out = []
    for perm in perms:
        if not isinstance(perm, dict):
            raise Ec2Error("InvalidParameterValue", "IpPermissions.N: IpProtocol, FromPort, ToPort, IpRanges")
        proto = PROTOS.get(str(perm.get("IpProtocol", "")).lower())
        if proto is None:
            raise Ec2Error("InvalidParameterValue", f"Invalid value '{perm.get('IpProtocol')}' for IP protocol: "
                           "the openvps firewall allows tcp or udp ports")
        try:
            lo, hi = int(perm.get("FromPort", "")), int(perm.get("ToPort", perm.get("FromPort", "")))
        except (TypeError, ValueError):
            raise Ec2Error("InvalidParameterValue", "FromPort and ToPort: port numbers") from None
        if not (1 <= lo <= hi <= 65535):
            raise Ec2Error("InvalidParameterValue", f"Invalid port range {lo}-{hi}: 1 <= FromPort <= ToPort <= 65535")
        if hi - lo + 1 > MAX_PORTS:
            raise Ec2Error("InvalidParameterValue", f"port range {lo}-{hi}: at most {MAX_PORTS} ports per rule here")
        ranges = perm.get("IpRanges") or []
        if perm.get("Groups") or perm.get("UserIdGroupPairs") or perm.get("Ipv6Ranges") or not ranges:
            raise Ec2Error("InvalidParameterValue", "rules take IPv4 source ranges (IpRanges.M.CidrIp) only")
        for r in ranges:
            cidr = r.get("CidrIp") if isinstance(r, dict) else None
            try:
                cidr = str(ipaddress.IPv4Network(str(cidr), strict=False))
            except ValueError:
                raise Ec2Error("InvalidParameterValue", f"Invalid IPv4 CIDR '{cidr}'") from None
            out.append({"proto": proto, "from": lo, "to": hi, "cidr": cidr})
    return out


def _describe_rule(r: dict) -> str:
    return f"peer: {r['cidr']}, {r['proto'].upper()}, from port: {r['from']}, to port: {r['to']}, ALLOW"


@action("CreateSecurityGroup")
def create_security_group(ctx: Ctx, p: Params) -> dict:
    from .act_instances import _tag_specs
    name, desc = p.str("GroupName", required=True), p.str("GroupDescription", required=True)
    if len(name) > 255 or len(desc) > 255 or name.startswith("sg-"):
        raise Ec2Error("InvalidParameterValue", "GroupName and GroupDescription: up to 255 characters; a name "
                       "cannot start with sg-")
    tags = _tag_specs(p, "security-group")
    if ctx.svc.ec2.find("group", owner=ctx.owner, name=name):
        raise Ec2Error("InvalidGroup.Duplicate", f"The security group '{name}' already exists")
    rec = ctx.svc.ec2.add("group", new_id("sg-"), ctx.owner, name=name,
                          data={"description": desc, "rules": [], "tags": tags})
    return {"return": True, "groupId": rec["id"], "tagSet": tag_list(tags)}


@action("AuthorizeSecurityGroupIngress")
def authorize_ingress(ctx: Ctx, p: Params) -> dict:
    g = _group_of(ctx, p)
    new = _permissions(p)
    rules = g["data"].get("rules", [])
    for r in new:
        if r in rules or new.count(r) > 1:
            raise Ec2Error("InvalidPermission.Duplicate", f"the specified rule \"{_describe_rule(r)}\" already exists")
    _set_rules(ctx, g, rules + new)
    return {"return": True, "securityGroupRuleSet": [
        {"groupId": g["id"], "groupOwnerId": g["owner"], "isEgress": False, "ipProtocol": r["proto"],
         "fromPort": r["from"], "toPort": r["to"], "cidrIpv4": r["cidr"]} for r in new]}


@action("RevokeSecurityGroupIngress")
def revoke_ingress(ctx: Ctx, p: Params) -> dict:
    g = _group_of(ctx, p)
    gone = _permissions(p)
    rules = g["data"].get("rules", [])
    for r in gone:
        if r not in rules:
            raise Ec2Error("InvalidPermission.NotFound", f"The specified rule does not exist in this security group: "
                           f"{_describe_rule(r)}")
    _set_rules(ctx, g, [r for r in rules if r not in gone])
    return {"return": True}


@action("DeleteSecurityGroup")
def delete_security_group(ctx: Ctx, p: Params) -> dict:
    from .act_instances import records
    g = _group_of(ctx, p)
    users = [rec["id"] for rec, row in records(ctx) if row is not None and g["id"] in rec["data"].get("groups", [])]
    if users:
        raise Ec2Error("DependencyViolation", f"resource {g['id']} has a dependent object: instance(s) "
                       f"{', '.join(users)}")
    ctx.svc.ec2.delete(g["id"])
    return {"return": True, "groupId": g["id"]}


def _perm_view(rules: list[dict]) -> list[dict]:
    out: dict[tuple, dict] = {}
    for r in rules:
        v = out.setdefault((r["proto"], r["from"], r["to"]), {
            "ipProtocol": r["proto"], "fromPort": r["from"], "toPort": r["to"], "groups": [], "ipRanges": [],
            "ipv6Ranges": [], "prefixListIds": []})
        v["ipRanges"].append({"cidrIp": r["cidr"]})
    return list(out.values())


@action("DescribeSecurityGroups")
def describe_security_groups(ctx: Ctx, p: Params) -> dict:
    ids, names = p.strs("GroupId"), p.strs("GroupName")
    recs = [find_group(ctx, gid=i) for i in ids] + [find_group(ctx, name=n) for n in names]
    if not ids and not names:
        recs = ctx.svc.ec2.find("group", owner=ctx.actor.scope)
    out = []
    for g in recs:
        d = g["data"]
        rules = d.get("rules", [])
        fields = {"group-id": g["id"], "group-name": g["name"], "description": d["description"], "owner-id": g["owner"],
                  "ip-permission.protocol": [r["proto"] for r in rules],
                  "ip-permission.from-port": [r["from"] for r in rules],
                  "ip-permission.to-port": [r["to"] for r in rules],
                  "ip-permission.cidr": [r["cidr"] for r in rules]}
        if matches(p.filters(), fields, d.get("tags", {})):
            out.append({"ownerId": g["owner"], "groupId": g["id"], "groupName": g["name"],
                        "groupDescription": d["description"], "ipPermissions": _perm_view(rules),
                        "ipPermissionsEgress": [{"ipProtocol": "-1", "groups": [], "ipRanges": [{"cidrIp": "0.0.0.0/0"}],
                                                 "ipv6Ranges": [], "prefixListIds": []}],
                        "tagSet": tag_list(d.get("tags", {}))})
    chunk, nxt = page(out, p, lambda x: x["groupId"], minimum=5)
    return {"securityGroupInfo": chunk, "nextToken": nxt}
