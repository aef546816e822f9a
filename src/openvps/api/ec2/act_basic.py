"""DescribeRegions, DescribeAvailabilityZones (one region, one zone per node), DescribeInstanceTypes
(the size table) and images (templates): DescribeImages, CreateImage."""
from __future__ import annotations


from ...domain import instance_types as T
from ...domain.errors import Conflict, InvalidArgument, OpenVPSError
from .context import Ctx, check_id, ident, image_id, translate
from .registry import action, page
from .wire import Ec2Error, Params, matches


def zone(ctx: Ctx) -> str:
    return ctx.svc.region + "a"


@action("DescribeRegions")
def describe_regions(ctx: Ctx, p: Params) -> dict:
    r = ctx.svc.region
    regions = [{"regionName": r, "regionEndpoint": "ec2." + r + ".openvps", "optInStatus": "opt-in-not-required"}]
    names = p.strs("RegionName")
    out = [x for x in regions if (not names or x["regionName"] in names)
           and matches(p.filters(), {"region-name": x["regionName"], "endpoint": x["regionEndpoint"],
                                     "opt-in-status": x["optInStatus"]})]
    for n in names:
        if n != r:
            raise Ec2Error("InvalidParameterValue", f"Invalid region: {n} (this endpoint serves {r})")
    return {"regionInfo": out}


@action("DescribeAvailabilityZones")
def describe_zones(ctx: Ctx, p: Params) -> dict:
    r = ctx.svc.region
    z = {"zoneName": zone(ctx), "zoneId": r + "-az1", "zoneState": "available", "regionName": r,
         "groupName": r, "networkBorderGroup": r, "zoneType": "availability-zone",
         "optInStatus": "opt-in-not-required", "messageSet": []}
    names, ids = p.strs("ZoneName"), p.strs("ZoneId")
    for n in names:
        if n != z["zoneName"]:
            raise Ec2Error("InvalidParameterValue", f"Invalid availability zone: [{n}]")
    for n in ids:
        if n != z["zoneId"]:
            raise Ec2Error("InvalidParameterValue", f"Invalid availability zone id: [{n}]")
    fields = {"zone-name": z["zoneName"], "zone-id": z["zoneId"], "state": "available", "region-name": r,
              "zone-type": z["zoneType"], "group-name": r, "opt-in-status": z["optInStatus"]}
    return {"availabilityZoneInfo": [z] if matches(p.filters(), fields) else []}


def type_view(t: T.InstanceType) -> dict:
    return {"instanceType": t.name, "currentGeneration": True, "freeTierEligible": False,
            "supportedUsageClasses": ["on-demand"], "supportedRootDeviceTypes": ["instance-store"],
            "supportedVirtualizationTypes": ["hvm"], "bareMetal": False, "hypervisor": "nitro",
            "processorInfo": {"supportedArchitectures": ["x86_64"]},
            "vCpuInfo": {"defaultVCpus": t.vcpus, "defaultCores": t.vcpus, "defaultThreadsPerCore": 1},
            "memoryInfo": {"sizeInMiB": t.ram >> 20},
            "instanceStorageSupported": bool(t.disk),
            "instanceStorageInfo": {"totalSizeInGB": t.disk >> 30} if t.disk else None,
            "networkInfo": {"networkPerformance": "Up to 10 Gigabit", "maximumNetworkInterfaces": 1,
                            "ipv4AddressesPerInterface": 16, "ipv6Supported": False},
            "hibernationSupported": False, "burstablePerformanceSupported": False,
            "dedicatedHostsSupported": False, "autoRecoverySupported": False, "supportedBootModes": ["legacy-bios"]}


@action("DescribeInstanceTypes")
def describe_instance_types(ctx: Ctx, p: Params) -> dict:
    names = p.strs("InstanceType")
    for n in names:
        if n not in T.TYPES:
            raise Ec2Error("InvalidInstanceType", f"The following supplied instance types do not exist: [{n}] "
                           f"(openvps offers {', '.join(T.TYPES)})")
    out = []
    for t in T.TYPES.values():
        if names and t.name not in names:
            continue
        fields = {"instance-type": t.name, "vcpu-info.default-vcpus": t.vcpus, "memory-info.size-in-mib": t.ram >> 20,
                  "current-generation": True, "instance-storage-info.total-size-in-gb": t.disk >> 30,
                  "processor-info.supported-architecture": "x86_64"}
        if matches(p.filters(), fields):
            out.append(type_view(t))
    items, nxt = page(out, p, lambda x: x["instanceType"], minimum=5)
    return {"instanceTypeSet": items, "nextToken": nxt}


# ---------------------------------------------------------------- images = templates
def image_view(ctx: Ctx, m, owner: str) -> dict:
    return {"imageId": image_id(m.name), "imageLocation": f"openvps/{m.name}", "imageState": "available",
            "imageOwnerId": owner, "creationDate": m.created_at, "isPublic": True, "architecture": "x86_64",
            "imageType": "machine", "name": m.name, "description": f"{m.os} {m.release} ({m.init})",
            "platformDetails": "Linux/UNIX", "usageOperation": "RunInstances", "rootDeviceType": "instance-store",
            "virtualizationType": "hvm", "hypervisor": "xen", "tagSet": [], "blockDeviceMapping": []}


def _owners(ctx: Ctx) -> dict[str, str]:
    """Templates published by users via CreateImage are theirs; the rest are the node's ("openvps")."""
    return {r["name"]: r["owner"] for r in ctx.svc.ec2.find("image")}


def find_template(ctx: Ctx, ami: str) -> str:
    check_id(ami, "ami-", "InvalidAMIID")
    for m in ctx.svc.node.templates.list():
        if image_id(m.name) == ami:
            return m.name
    raise Ec2Error("InvalidAMIID.NotFound", f"The image id '[{ami}]' does not exist")


def _pending_images(ctx: Ctx, built: set[str]) -> list[dict]:
    """Images being published (CreateImage): 'pending' while the operation runs, 'failed' if it failed."""
    out = []
    for rec in ctx.svc.ec2.find("image"):
        if rec["name"] in built:
            continue
        try:
            status = ctx.svc.node.store.get_operation(rec["data"].get("op", ""))["status"]
        except OpenVPSError:
            status = "success"
        if status == "success":       # published, then removed: the record has nothing left to say
            ctx.svc.ec2.delete(rec["id"])
            continue
        out.append({"imageId": rec["id"], "imageLocation": f"openvps/{rec['name']}",
                    "imageState": "pending" if status in ("pending", "running") else "failed",
                    "imageOwnerId": rec["owner"], "creationDate": rec["created_at"], "isPublic": True,
                    "architecture": "x86_64", "imageType": "machine", "name": rec["name"],
                    "description": rec["data"].get("description", ""), "platformDetails": "Linux/UNIX",
                    "rootDeviceType": "instance-store", "virtualizationType": "hvm", "hypervisor": "xen",
                    "tagSet": [], "blockDeviceMapping": []})
    return out


@action("DescribeImages")
def describe_images(ctx: Ctx, p: Params) -> dict:
    ids = p.strs("ImageId")
    for i in ids:
        check_id(i, "ami-", "InvalidAMIID")
    owners_wanted = p.strs("Owner")
    owners = _owners(ctx)
    templates = ctx.svc.node.templates.list()
    images = [image_view(ctx, m, owners.get(m.name, "openvps")) for m in templates]
    images += _pending_images(ctx, {m.name for m in templates})
    known = {i["imageId"] for i in images}
    for i in ids:
        if i not in known:
            raise Ec2Error("InvalidAMIID.NotFound", f"The image id '[{i}]' does not exist")
    out = []
    for img in images:
        owner = img["imageOwnerId"]
        if ids and img["imageId"] not in ids:
            continue
        if owners_wanted and not any((w == "self" and owner == ctx.owner) or w == owner for w in owners_wanted):
            continue
        fields = {"image-id": img["imageId"], "name": img["name"], "state": img["imageState"], "owner-id": owner,
                  "architecture": "x86_64", "image-type": "machine", "is-public": True,
                  "description": img["description"], "root-device-type": "instance-store",
                  "virtualization-type": "hvm", "platform-details": "Linux/UNIX"}
        if matches(p.filters(), fields):
            out.append(img)
    return {"imagesSet": out}


@action("CreateImage")
def create_image(ctx: Ctx, p: Params) -> dict:
    from .act_instances import find_instance, live_row
    rec = find_instance(ctx, p.str("InstanceId", required=True))
    name = p.str("Name", required=True)
    description = p.str("Description", "") or ""
    if live_row(ctx, rec) is None:
        raise Ec2Error("IncorrectInstanceState", f"The instance '{rec['id']}' is terminated")
    try:
        from ...service.images import ImageService
    except ImportError:
        raise Ec2Error("InvalidAction", "CreateImage needs image publishing (openvps.service.images), "
                       "which this node does not have yet") from None
    try:
        op = ImageService(ctx.svc.node).publish(ident(rec), name, description=description, actor=ctx.actor)
    except Conflict as e:
        raise Ec2Error("InvalidAMIName.Duplicate", e.message) from None
    except InvalidArgument as e:
        raise Ec2Error("InvalidAMIName.Malformed" if e.details.get("field") == "name" else "InvalidParameterValue",
                       e.message) from None
    except OpenVPSError as e:
        raise translate(e, "InvalidInstanceID.NotFound") from None
    aid = image_id(name)
    data = {"op": op.get("id"), "instance": rec["id"], "description": description}
    if ctx.svc.ec2.get(aid):
        ctx.svc.ec2.update(aid, owner=ctx.owner, data=data)
    else:
        ctx.svc.ec2.add("image", aid, ctx.owner, name=name, ref=ident(rec), data=data)
    return {"imageId": aid}
