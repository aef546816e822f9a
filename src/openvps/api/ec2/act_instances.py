"""Instances: RunInstances, DescribeInstances, Start/Stop/Reboot/TerminateInstances. An EC2 instance
is a mapping row (kind instance, id i-...) over an openvps instance: RunInstances names the instance
by its i- id; instances made elsewhere (CLI, REST, dashboard) are adopted on the first listing and
keep their names (ident(rec) is always the name). The row keeps what EC2 adds (reservation, type, key,
groups, the last operation) and outlives the instance for an hour, so waiters see 'terminated'."""
from __future__ import annotations

import logging
from datetime import datetime, timedelta, timezone

from ...domain import instance_types as T
from ...domain.errors import Conflict, OpenVPSError
from ...domain.instance import validate_tags
from .act_basic import find_template, zone
from .context import Ctx, check_id, ident, image_id, new_id, translate
from .registry import action, page, tag_list
from .wire import Ec2Error, Params, matches

log = logging.getLogger("openvps.ec2")
TERMINATED_VISIBLE = timedelta(hours=1)
CODES = {"pending": 0, "running": 16, "shutting-down": 32, "terminated": 48, "stopping": 64, "stopped": 80}
ROW_STATES = {"creating": "pending", "running": "running", "stopped": "stopped", "suspended": "stopped",
              "destroying": "shutting-down"}
OP_STATES = {"create": "pending", "start": "pending", "stop": "stopping", "reboot": "running",
             "terminate": "shutting-down"}


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _aware(t) -> datetime:
    if isinstance(t, str):
        t = datetime.fromisoformat(t)
    return t if t.tzinfo else t.replace(tzinfo=timezone.utc)


def _born(row: dict) -> str:
    return _aware(row["created_at"]).isoformat()


def live_row(ctx: Ctx, rec: dict) -> dict | None:
    """The openvps instance behind the record, or None when it is gone. A record that knows when its
    instance was born does not follow the name to a later instance that re-uses it."""
    row = ctx.svc.node.store.find_instance(ident(rec))
    born = rec["data"].get("born")
    if row is not None and born and _born(row) != _aware(born).isoformat():
        return None
    return row


def _visible(ctx: Ctx, rec: dict, row: dict | None) -> bool:
    """Gone instances stay visible (terminated) for an hour after we first see them gone."""
    if row is not None:
        return True
    gone = rec["data"].get("gone_at")
    if gone is None:
        ctx.svc.ec2.update(rec["id"], data={**rec["data"], "gone_at": _now().isoformat()})
        return True
    if _now() - _aware(gone) > TERMINATED_VISIBLE:
        ctx.svc.ec2.delete(rec["id"])
        return False
    return True


def _adopt(ctx: Ctx) -> None:
    """Give every instance in the caller's scope that no record stands for a record of its own (a fresh
    i- id and reservation), so instances made by the CLI, REST or the dashboard are EC2 instances too.
    The instances are read before the records: RunInstances writes its record before it creates the
    instance, so an instance seen here has its record seen below. Two listings at once may both try:
    the record's name is the key "<name>@<born>", unique per owner and kind in the store
    (uq_ec2_objects_name), so the second insert fails and is skipped."""
    scope = ctx.actor.scope
    rows = [r for r in ctx.svc.node.store.list_instances() if scope is None or r.get("owner") == scope]
    if not rows:
        return
    unborn, born = set(), set()
    for rec in ctx.svc.ec2.find("instance"):
        b = rec["data"].get("born")
        if b:
            born.add((ident(rec), _aware(b).isoformat()))
        else:
            unborn.add(ident(rec))        # RunInstances records from before "born": the name alone
    cpus = ctx.svc.node.facts.cpus
    for row in rows:
        when = _born(row)
        if row["name"] in unborn or (row["name"], when) in born:
            continue
        itype = T.closest(row.get("limits") or {}, cpus)
        try:
            ctx.svc.ec2.add("instance", new_id("i-"), row.get("owner") or "admin", name=f"{row['name']}@{when}",
                            ref=row["name"], data={
                                "reservation": new_id("r-"), "type": itype.name, "image": image_id(row["template"]),
                                "key_name": None, "groups": [], "client_token": None, "launch_index": 0,
                                "tags": dict(row.get("tags") or {}), "adopted": True, "born": when})
        except Conflict:          # another request adopted it a moment ago
            continue


def records(ctx: Ctx) -> list[tuple[dict, dict | None]]:
    _adopt(ctx)
    recs = ctx.svc.ec2.find("instance", owner=ctx.actor.scope)
    out = []
    for r in recs:
        row = live_row(ctx, r)
        if _visible(ctx, r, row):
            out.append((r, row))
    return out


def find_instance(ctx: Ctx, iid: str) -> dict:
    check_id(iid, "i-", "InvalidInstanceID")
    rec = ctx.owned(iid, "instance")
    if rec is None or not _visible(ctx, rec, live_row(ctx, rec)):
        raise Ec2Error("InvalidInstanceID.NotFound", f"The instance ID '{iid}' does not exist")
    return rec


def state_of(ctx: Ctx, rec: dict, row: dict | None) -> str:
    if row is None:
        return "terminated"
    if rec["data"].get("terminating"):
        return "shutting-down"
    op = rec["data"].get("op")
    if op:
        try:
            status = ctx.svc.node.store.get_operation(op["id"])["status"]
        except OpenVPSError:
            status = "success"
        if status in ("pending", "running"):
            return OP_STATES.get(op["action"], "pending")
    return ROW_STATES.get(row["state"], "pending")


def _state(name: str) -> dict:
    return {"code": CODES[name], "name": name}


def _groups(ctx: Ctx, rec: dict) -> list[dict]:
    out = []
    for gid in rec["data"].get("groups", []):
        g = ctx.svc.ec2.get(gid)
        out.append({"groupId": gid, "groupName": g["name"] if g else ""})
    return out


def instance_view(ctx: Ctx, rec: dict, row: dict | None, public: dict[str, str]) -> dict:
    d = rec["data"]
    st = state_of(ctx, rec, row)
    ips = ctx.svc.node.netstore.addresses_of(row["ctid"]) if row else []
    tags = row.get("tags") or {} if row else d.get("tags", {})
    reason = None
    if st == "terminated":
        reason = {"code": "Client.UserInitiatedShutdown", "message": "Client.UserInitiatedShutdown: User initiated "
                  "shutdown"} if d.get("terminating") else {"code": "Server.InternalError",
                                                              "message": "the instance is gone (create failed or "
                                                                         "it was destroyed outside EC2)"}
    return {"instanceId": rec["id"], "imageId": d.get("image"), "instanceState": _state(st),
            "privateDnsName": "", "dnsName": "", "reason": "", "keyName": d.get("key_name"),
            "amiLaunchIndex": d.get("launch_index", 0), "productCodes": [], "instanceType": d.get("type"),
            "launchTime": _aware(d.get("born") or rec["created_at"]),
            "placement": {"availabilityZone": zone(ctx), "groupName": "", "tenancy": "default"},
            "monitoring": {"state": "disabled"},
            "privateIpAddress": ips[0] if ips and st != "terminated" else None,
            "ipAddress": public.get(ident(rec)) if st != "terminated" else None,
            "stateReason": reason, "architecture": "x86_64", "rootDeviceType": "instance-store",
            "virtualizationType": "hvm", "clientToken": d.get("client_token"), "tagSet": tag_list(tags),
            "groupSet": _groups(ctx, rec), "hypervisor": "xen", "platformDetails": "Linux/UNIX"}


def public_map(ctx: Ctx) -> dict[str, str]:
    return {p["instance"]: p["address"] for p in ctx.svc.node.netstore.list_public() if p.get("instance")}


def reservations(ctx: Ctx, pairs: list[tuple[dict, dict | None]], public: dict | None = None) -> list[dict]:
    public = public_map(ctx) if public is None else public
    out: dict[str, dict] = {}
    for rec, row in pairs:
        rid = rec["data"].get("reservation")
        res = out.setdefault(rid, {"reservationId": rid, "ownerId": rec["owner"], "groupSet": [], "instancesSet": []})
        res["instancesSet"].append(instance_view(ctx, rec, row, public))
    return list(out.values())


def _fields(v: dict, rec: dict) -> dict:
    return {"instance-id": v["instanceId"], "instance-state-name": v["instanceState"]["name"],
            "instance-state-code": v["instanceState"]["code"], "instance-type": v["instanceType"],
            "image-id": v["imageId"], "key-name": v["keyName"], "reservation-id": rec["data"].get("reservation"),
            "private-ip-address": v["privateIpAddress"], "ip-address": v["ipAddress"],
            "availability-zone": v["placement"]["availabilityZone"], "owner-id": rec["owner"],
            "instance.group-id": [g["groupId"] for g in v["groupSet"]],
            "instance.group-name": [g["groupName"] for g in v["groupSet"]],
            "group-id": [g["groupId"] for g in v["groupSet"]], "group-name": [g["groupName"] for g in v["groupSet"]],
            "client-token": v["clientToken"], "architecture": "x86_64", "root-device-type": "instance-store",
            "launch-time": v["launchTime"].strftime("%Y-%m-%dT%H:%M:%S.000Z"), "tenancy": "default",
            "virtualization-type": "hvm", "hypervisor": "xen", "platform-details": "Linux/UNIX"}


@action("DescribeInstances")
def describe_instances(ctx: Ctx, p: Params) -> dict:
    ids = p.strs("InstanceId")
    if ids and p.str("MaxResults"):
        raise Ec2Error("InvalidParameterCombination", "The parameter instancesSet cannot be used with the parameter "
                       "maxResults")
    filters = p.filters()
    if ids:
        pairs = [(r, live_row(ctx, r)) for r in (find_instance(ctx, i) for i in ids)]
    else:
        pairs = records(ctx)
    public = public_map(ctx)
    chosen = []
    for rec, row in pairs:
        v = instance_view(ctx, rec, row, public)
        tags = {t["key"]: t["value"] for t in v["tagSet"]}
        if matches(filters, _fields(v, rec), tags):
            chosen.append((rec, row))
    chunk, nxt = page(chosen, p, lambda x: x[0]["id"], minimum=5)
    return {"reservationSet": reservations(ctx, chunk, public), "nextToken": nxt}


def _tag_specs(p: Params, want: str) -> dict[str, str]:
    tags: dict[str, str] = {}
    for spec in p.list("TagSpecification"):
        if not isinstance(spec, dict):
            raise Ec2Error("InvalidParameterValue", "TagSpecification.N needs ResourceType and Tag.M")
        rtype = spec.get("ResourceType")
        if rtype not in (want, None):
            raise Ec2Error("InvalidParameterValue", f"'{rtype}' is not a valid taggable resource type for this "
                           f"operation (openvps tags: {want})")
        for t in spec.get("Tag", []) if isinstance(spec.get("Tag"), list) else []:
            if not isinstance(t, dict) or not t.get("Key"):
                raise Ec2Error("InvalidParameterValue", "each Tag.M needs a Key")
            tags[t["Key"]] = t.get("Value", "")
    try:
        return validate_tags(tags)
    except OpenVPSError as e:
        raise translate(e) from None


@action("RunInstances")
def run_instances(ctx: Ctx, p: Params) -> dict:
    template = find_template(ctx, p.str("ImageId", required=True))
    tname = p.str("InstanceType") or T.DEFAULT
    itype = T.TYPES.get(tname)
    if itype is None:
        raise Ec2Error("InvalidParameterValue", f"Invalid value '{tname}' for InstanceType "
                       f"(openvps offers {', '.join(T.TYPES)})")
    lo, hi = p.int("MinCount", required=True), p.int("MaxCount", required=True)
    if lo < 1 or hi < lo:
        raise Ec2Error("InvalidParameterValue", "MinCount and MaxCount: 1 <= MinCount <= MaxCount")
    if hi > 100:
        raise Ec2Error("InvalidParameterValue", "MaxCount: at most 100 instances per request")
    token = p.str("ClientToken")
    if token:
        same = [(r, live_row(ctx, r)) for r in ctx.svc.ec2.find("instance", owner=ctx.owner)
                if r["data"].get("client_token") == token]
        if same:      # idempotent retry: the reservation already made
            return reservations(ctx, same)[0]
    key_name = p.str("KeyName")
    ssh_keys = []
    if key_name:
        from .act_keypairs import find_key
        ssh_keys = [find_key(ctx, name=key_name)["data"]["public_key"]]
    from .act_groups import find_group, sync_instance
    groups = [find_group(ctx, gid=g)["id"] for g in p.strs("SecurityGroupId")]
    groups += [find_group(ctx, name=g)["id"] for g in p.strs("SecurityGroup")]
    tags = _tag_specs(p, "instance")
    limits = itype.limits(ctx.svc.node.facts.cpus)
    try:
        ctx.svc.users.check_quota(ctx.owner, add_instances=lo, ram_delta=lo * itype.ram)
    except OpenVPSError as e:
        raise translate(e) from None
    rid = new_id("r-")
    made = []
    for n in range(hi):
        iid = new_id("i-")
        rec = ctx.svc.ec2.add("instance", iid, ctx.owner, ref=iid, data={
            "reservation": rid, "type": itype.name, "image": image_id(template), "key_name": key_name,
            "groups": groups, "client_token": token, "launch_index": n, "tags": tags})
        try:
            op = ctx.svc.instances.create(name=iid, template=template, limits=limits, ssh_keys=ssh_keys, start=True,
                                          tags=tags, description=f"EC2 {itype.name} in reservation {rid}",
                                          actor=ctx.actor)
        except OpenVPSError as e:
            ctx.svc.ec2.delete(iid)
            if len(made) >= lo:
                break
            _unlaunch(ctx, made)          # EC2: fewer than MinCount launches none
            raise translate(e, "InvalidParameterValue") from None
        row = ctx.svc.node.store.find_instance(iid)       # reserved by create: remember its birth
        born = {"born": _born(row)} if row else {}
        rec = ctx.svc.ec2.update(iid, data={**rec["data"], **born, "op": {"id": op["id"], "action": "create"}})
        if groups:
            sync_instance(ctx, rec)
        made.append((rec, live_row(ctx, rec)))
    return reservations(ctx, made)[0]


def _unlaunch(ctx: Ctx, made: list[tuple[dict, dict | None]]) -> None:
    """Undo the instances a RunInstances made before it fell short of MinCount: each create is
    cancelled if still queued, else awaited and destroyed; their records go at once."""
    for rec, _ in made:
        try:
            if _settle_create(ctx, rec) is not None:
                ctx.svc.instances.destroy(ident(rec), force=True, actor=ctx.actor)
        except OpenVPSError as e:       # the caller's error is the one to report; this one is logged
            log.warning("could not undo %s of a short RunInstances: %s", rec["id"], e.message)
        ctx.svc.ec2.delete(rec["id"])


def _change(ctx: Ctx, p: Params, verb: str) -> list[tuple[dict, str, str]]:
    """Resolve every id first (all or nothing), then act on each: (record, previous, current)."""
    ids = p.strs("InstanceId")
    if not ids:
        raise Ec2Error("MissingParameter", "The request must contain the parameter InstanceId")
    recs = [find_instance(ctx, i) for i in ids]
    prevs = [state_of(ctx, rec, live_row(ctx, rec)) for rec in recs]     # as the caller saw them
    return [(rec, prev, _act(ctx, p, verb, rec, prev)) for rec, prev in zip(recs, prevs)]


def _act(ctx: Ctx, p: Params, verb: str, rec: dict, prev: str) -> str:
    iid, name, inst = rec["id"], ident(rec), ctx.svc.instances
    bad = Ec2Error("IncorrectInstanceState", f"The instance '{iid}' is not in a state from which it can be "
                   f"{ {'start': 'started', 'stop': 'stopped', 'reboot': 'rebooted'}.get(verb, 'terminated')} (it is {prev})")
    try:
        if verb == "start":
            if prev in ("running", "pending"):
                return prev
            if prev != "stopped":
                raise bad
            op, cur = inst.start(name, actor=ctx.actor), "pending"
        elif verb == "stop":
            if prev in ("stopped", "stopping"):
                return prev
            if prev != "running":
                raise bad
            op, cur = inst.stop(name, force=p.bool("Force"), actor=ctx.actor), "stopping"
        elif verb == "reboot":
            if prev != "running":
                raise bad
            op, cur = inst.restart(name, actor=ctx.actor), "running"
        else:
            if prev in ("terminated", "shutting-down"):
                return prev
            row = _settle_create(ctx, rec)
            rec["data"]["terminating"] = True
            if row is None:         # cancelled before it ran: nothing was made
                ctx.svc.ec2.update(iid, data=rec["data"])
                return "terminated"
            op, cur = inst.destroy(name, force=True, actor=ctx.actor), "shutting-down"
            rec["data"]["terminating"] = True
            rec["data"]["tags"] = (row or {}).get("tags") or rec["data"].get("tags", {})
    except OpenVPSError as e:
        raise translate(e, "InvalidInstanceID.NotFound") from None
    ctx.svc.ec2.update(iid, data={**rec["data"], "op": {"id": op["id"], "action": verb}})
    return cur


def _settle_create(ctx: Ctx, rec: dict) -> dict | None:
    """EC2 may terminate a pending instance. A create still queued is cancelled (the reserved row goes
    with it); one already running is awaited, then destroyed as usual."""
    row = live_row(ctx, rec)
    if row is None or row["state"] != "creating":
        return row
    op = rec["data"].get("op") or {}
    if op.get("action") == "create":
        if ctx.svc.node.runner.cancel(op["id"]) is None:
            ctx.svc.node.runner.wait(op["id"], 300)
    return live_row(ctx, rec)


def _changes(items) -> dict:
    return {"instancesSet": [{"instanceId": r["id"], "currentState": _state(cur), "previousState": _state(prev)}
                             for r, prev, cur in items]}


@action("StartInstances")
def start_instances(ctx: Ctx, p: Params) -> dict:
    return _changes(_change(ctx, p, "start"))


@action("StopInstances")
def stop_instances(ctx: Ctx, p: Params) -> dict:
    return _changes(_change(ctx, p, "stop"))


@action("RebootInstances")
def reboot_instances(ctx: Ctx, p: Params) -> dict:
    _change(ctx, p, "reboot")
    return {"return": True}


@action("TerminateInstances")
def terminate_instances(ctx: Ctx, p: Params) -> dict:
    return _changes(_change(ctx, p, "terminate"))
