"""The EC2 app on the fake drivers, signed by botocore's own SigV4 signer: access keys over REST
(own vs. others'), and no client mistake ever answers 5xx (botocore would retry it)."""
from __future__ import annotations

import random
import time
from urllib.parse import urlencode

import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from fastapi.testclient import TestClient

from openvps.api.app import create_app
from openvps.api.auth import tcp_app
from openvps.api.ec2 import actions
from openvps.api.ec2.app import create_ec2_app
from openvps.domain.errors import DriverError


@pytest.fixture
def rest(node):
    with TestClient(create_app(node)) as c:
        yield c


@pytest.fixture
def ec2(node):
    with TestClient(create_ec2_app(node)) as c:
        yield c


def call(ec2, key: dict, params: dict):
    body = urlencode({"Version": "2016-11-15", **params})
    req = AWSRequest(method="POST", url="http://testserver/", data=body,
                     headers={"Content-Type": "application/x-www-form-urlencoded; charset=utf-8"})
    SigV4Auth(Credentials(key["access_key_id"], key["secret_access_key"]), "ec2", "openvps-1").add_auth(req)
    p = req.prepare()
    return ec2.post("/", content=p.body, headers=dict(p.headers))


def test_access_keys_rest_own_and_others(rest, node, ec2):
    assert rest.post("/1.0/users", json={"name": "alice"}).status_code == 201
    assert rest.post("/1.0/users", json={"name": "bob"}).status_code == 201
    k = rest.post("/1.0/users/alice/keys").json()
    assert set(k) == {"access_key_id", "user", "created_at", "secret_access_key"} and len(k["secret_access_key"]) == 40
    listed = rest.get("/1.0/users/alice/keys").json()
    assert listed == [{"access_key_id": k["access_key_id"], "user": "alice", "created_at": k["created_at"]}]
    r = call(ec2, k, {"Action": "DescribeRegions"})
    assert r.status_code == 200 and b"<regionName>openvps-1</regionName>" in r.content
    # bob (over TCP with his token) cannot see or delete alice's keys, but manages his own
    tok = rest.post("/1.0/tokens", json={"user": "bob"}).json()["token"]
    with TestClient(tcp_app(create_app(node)), headers={"Authorization": f"Bearer {tok}"}) as bob:
        assert bob.get("/1.0/users/alice/keys").status_code == 404
        assert bob.delete(f"/1.0/users/alice/keys/{k['access_key_id']}").status_code == 404
        assert bob.post("/1.0/users/bob/keys").status_code == 201
    assert rest.delete(f"/1.0/users/alice/keys/{k['access_key_id']}").status_code == 200
    r = call(ec2, k, {"Action": "DescribeRegions"})
    assert r.status_code == 401 and b"<Code>AuthFailure</Code>" in r.content
    assert rest.post("/1.0/users/nobody/keys").status_code == 404


JUNK = ["", "x", "-1", "0", "99999999999999999999", "i-zz", "i-0123456789abcdef0", "sg-0123456789abcdef0",
        "ami-0123456789abcdef0", "eipalloc-0123456789abcdef0", "true", "tcp", "*", "\u00e9", "a" * 300]
KEYS = ["InstanceId.1", "InstanceId", "Filter.1.Name", "Filter.1.Value.1", "Filter.1.Value.x", "MaxResults",
        "NextToken", "ImageId", "InstanceType", "MinCount", "MaxCount", "KeyName", "PublicKeyMaterial", "GroupId",
        "GroupName", "GroupDescription", "IpPermissions.1.IpProtocol", "IpPermissions.1.FromPort",
        "IpPermissions.1.ToPort", "IpPermissions.1.IpRanges.1.CidrIp", "IpPermissions.1.IpRanges", "ResourceId.1",
        "Tag.1.Key", "Tag.1.Value", "Tag.1.Key.1", "AllocationId", "AssociationId", "PublicIp", "KeyPairId",
        "TagSpecification.1.ResourceType", "TagSpecification.1.Tag.1.Key", "SecurityGroupId.1", "Name",
        "ClientToken", "Force", "IpProtocol", "FromPort", "ToPort", "CidrIp", "Owner.1", "KeyType", "Domain"]


def test_random_requests_never_answer_5xx(rest, ec2):
    rest.post("/1.0/users", json={"name": "fuzz"})
    k = rest.post("/1.0/users/fuzz/keys").json()
    rnd = random.Random(9)
    names = sorted(actions.ACTIONS) + ["DescribeVpcs", ""]
    for _ in range(600):
        params = {"Action": rnd.choice(names)}
        for key in rnd.sample(KEYS, rnd.randint(0, 6)):
            params[key] = rnd.choice(JUNK)
        r = call(ec2, k, params)
        assert r.status_code < 500, (params, r.text)
        assert r.content.startswith(b"<?xml"), r.text


def test_run_instances_honours_the_users_quota(rest, ec2, node):
    from openvps.api.ec2.context import image_id
    rest.post("/1.0/users", json={"name": "carol", "quotas": {"max_instances": 2}})
    k = rest.post("/1.0/users/carol/keys").json()
    base = {"Action": "RunInstances", "ImageId": image_id("minimal"), "InstanceType": "ovps.nano"}
    r = call(ec2, k, {**base, "MinCount": "3", "MaxCount": "3"})
    assert r.status_code == 400 and b"<Code>InstanceLimitExceeded</Code>" in r.content
    assert node.store.list_instances() == []
    # MinCount 1, MaxCount 3: as many as the quota allows
    r = call(ec2, k, {**base, "MinCount": "1", "MaxCount": "3"})
    assert r.status_code == 200, r.text
    assert r.content.count(b"<instanceId>i-") == 2
    assert sorted(row["owner"] for row in node.store.list_instances()) == ["carol", "carol"]
    r = call(ec2, k, {**base, "MinCount": "1", "MaxCount": "1", "InstanceType": "m5.large"})
    assert r.status_code == 400 and b"Invalid value 'm5.large' for InstanceType" in r.content


def test_run_instances_short_of_min_count_launches_none(rest, ec2, node, runtime):
    """The node can promise 8G (the fakes' RAM, overcommit 1): four ovps.large (2G each) fit, a fifth
    does not. MinCount 5 must then leave nothing behind (EC2 launches all of MinCount or none)."""
    from openvps.api.ec2.context import image_id
    rest.post("/1.0/users", json={"name": "dora"})
    k = rest.post("/1.0/users/dora/keys").json()
    base = {"Action": "RunInstances", "ImageId": image_id("minimal"), "InstanceType": "ovps.large"}
    r = call(ec2, k, {**base, "MinCount": "5", "MaxCount": "5"})
    assert r.status_code == 400 and b"<Code>InsufficientInstanceCapacity</Code>" in r.content, r.text
    deadline = time.monotonic() + 10                      # the undo's destroys are operations
    while node.store.list_instances() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert node.store.list_instances() == [] and runtime.containers == {}
    r = call(ec2, k, {"Action": "DescribeInstances"})
    assert r.status_code == 200 and b"<instanceId>" not in r.content     # no records, not even terminated
    r = call(ec2, k, {**base, "MinCount": "2", "MaxCount": "5"})         # as many as fit
    assert r.status_code == 200 and r.content.count(b"<instanceId>i-") == 4


def test_a_failed_revoke_leaves_the_group_and_the_firewall_as_they_were(rest, ec2, node, network):
    """Realising a revoke on the member instances fails half-way: the rule stays in the group and in
    the instance's firewall (the same undo as a failed authorize)."""
    from openvps.api.ec2.context import image_id
    rest.post("/1.0/users", json={"name": "erin"})
    k = rest.post("/1.0/users/erin/keys").json()
    gid = call(ec2, k, {"Action": "CreateSecurityGroup", "GroupName": "web", "GroupDescription": "web"}).text
    gid = gid.split("<groupId>")[1].split("<")[0]
    perm = {"IpPermissions.1.IpProtocol": "tcp", "IpPermissions.1.FromPort": "80", "IpPermissions.1.ToPort": "80",
            "IpPermissions.1.IpRanges.1.CidrIp": "0.0.0.0/0"}
    assert call(ec2, k, {"Action": "AuthorizeSecurityGroupIngress", "GroupId": gid, **perm}).status_code == 200
    r = call(ec2, k, {"Action": "RunInstances", "ImageId": image_id("minimal"), "MinCount": "1", "MaxCount": "1",
                      "SecurityGroupId.1": gid})
    assert r.status_code == 200, r.text
    ctid = node.store.list_instances()[0]["ctid"]
    assert [(f["proto"], f["port"]) for f in node.netstore.list_rules(ctid)] == [("tcp", 80)]
    real, calls = network.apply_rules, []

    def fail_once(text):
        calls.append(text)
        if len(calls) == 1:
            raise DriverError("nft -f failed (fake, once)")
        real(text)
    network.apply_rules = fail_once
    r = call(ec2, k, {"Action": "RevokeSecurityGroupIngress", "GroupId": gid, **perm})
    assert r.status_code >= 400 and b"nft -f failed" in r.content
    network.apply_rules = real
    d = call(ec2, k, {"Action": "DescribeSecurityGroups", "GroupId.1": gid}).text
    assert "<fromPort>80</fromPort>" in d                                   # still in the group
    assert [(f["proto"], f["port"]) for f in node.netstore.list_rules(ctid)] == [("tcp", 80)]   # and realised


def test_get_with_a_presigned_url(rest, ec2):
    from botocore.auth import SigV4QueryAuth
    rest.post("/1.0/users", json={"name": "dave"})
    k = rest.post("/1.0/users/dave/keys").json()
    req = AWSRequest(method="GET", url="http://testserver/?Action=DescribeAvailabilityZones&Version=2016-11-15")
    SigV4QueryAuth(Credentials(k["access_key_id"], k["secret_access_key"]), "ec2", "openvps-1",
                   expires=60).add_auth(req)
    r = ec2.get(req.prepare().url.replace("http://testserver", ""))
    assert r.status_code == 200, r.text
    assert b"<zoneName>openvps-1a</zoneName>" in r.content
    r = ec2.get("/?Action=DescribeAvailabilityZones&Version=2016-11-15")       # unsigned
    assert r.status_code == 401 and b"<Code>AuthFailure</Code>" in r.content


def test_allocate_address_counts_against_max_public_ips_with_rest(rest, ec2, node):
    """One quota for both faces: an address allocated over REST counts for EC2, and the other way."""
    node.networks.pool = ["192.0.2.10", "192.0.2.11", "192.0.2.12"]
    assert rest.post("/1.0/users", json={"name": "alice", "quotas": {"max_public_ips": 2}}).status_code == 201
    k = rest.post("/1.0/users/alice/keys").json()
    tok = rest.post("/1.0/tokens", json={"user": "alice"}).json()["token"]
    r = call(ec2, k, {"Action": "AllocateAddress", "Domain": "vpc"})
    assert r.status_code == 200 and b"<allocationId>eipalloc-" in r.content, r.text
    with TestClient(tcp_app(create_app(node)), headers={"Authorization": f"Bearer {tok}"}) as alice:
        op = alice.post("/1.0/addresses", json={})
        assert op.status_code == 202
        assert alice.get(f"/1.0/operations/{op.json()['id']}/wait").json()["status"] == "success"
        assert sorted(a["owner"] for a in alice.get("/1.0/addresses").json()) == ["alice", "alice"]
    r = call(ec2, k, {"Action": "AllocateAddress", "Domain": "vpc"})
    assert r.status_code == 400 and b"<Code>AddressLimitExceeded</Code>" in r.content, r.text
    assert len(rest.get("/1.0/addresses").json()) == 2          # nothing half-allocated


def _ids(r) -> list[str]:
    import re
    return re.findall(r"<instanceId>(i-[0-9a-f]+)</instanceId>", r.text)


def _rest_create(c, name: str, **body) -> dict:
    op = c.post("/1.0/instances", json={"name": name, "template": "minimal", "start": True, **body})
    assert op.status_code == 202, op.text
    assert c.get(f"/1.0/operations/{op.json()['id']}/wait").json()["status"] == "success"
    return c.get(f"/1.0/instances/{name}").json()


def test_instances_made_over_rest_are_adopted_once_and_not_followed_to_a_new_namesake(rest, ec2, node):
    from openvps.api.ec2.context import image_id
    for u in ("alice", "bob"):
        assert rest.post("/1.0/users", json={"name": u}).status_code == 201
    k, kb = rest.post("/1.0/users/alice/keys").json(), rest.post("/1.0/users/bob/keys").json()
    tok = rest.post("/1.0/tokens", json={"user": "alice"}).json()["token"]
    with TestClient(tcp_app(create_app(node)), headers={"Authorization": f"Bearer {tok}"}) as alice:
        _rest_create(alice, "web1", limits={"ram": "128M", "swap": "128M", "cpus": 1, "diskspace": "1G"},
                     tags={"env": "prod"})
        r = call(ec2, k, {"Action": "DescribeInstances"})
        assert r.status_code == 200, r.text
        [iid] = _ids(r)
        assert "<instanceType>ovps.nano</instanceType>" in r.text          # its limits are exactly nano's
        assert f"<imageId>{image_id('minimal')}</imageId>" in r.text and "<key>env</key>" in r.text
        assert "<name>running</name>" in r.text
        assert _ids(call(ec2, k, {"Action": "DescribeInstances"})) == [iid]      # idempotent
        assert _ids(call(ec2, kb, {"Action": "DescribeInstances"})) == []        # not bob's
        r = call(ec2, kb, {"Action": "StopInstances", "InstanceId.1": iid})
        assert b"<Code>InvalidInstanceID.NotFound</Code>" in r.content

        # destroyed over REST and re-made under the same name: the old id is terminated, the new one new
        op = alice.delete("/1.0/instances/web1", params={"force": "true"})
        assert alice.get(f"/1.0/operations/{op.json()['id']}/wait").json()["status"] == "success"
        _rest_create(alice, "web1")
        r = call(ec2, k, {"Action": "DescribeInstances"})
        ids = _ids(r)
        assert len(ids) == 2 and ids[0] == iid and ids[1] != iid
        old = call(ec2, k, {"Action": "DescribeInstances", "InstanceId.1": iid}).text
        assert "<name>terminated</name>" in old
        new = call(ec2, k, {"Action": "DescribeInstances", "InstanceId.1": ids[1]}).text
        assert "<name>running</name>" in new and "<instanceType>ovps.small</instanceType>" in new   # the default
        r = call(ec2, k, {"Action": "StartInstances", "InstanceId.1": iid})          # the old id acts on nothing
        assert b"<Code>IncorrectInstanceState</Code>" in r.content
        assert alice.get("/1.0/instances/web1").json()["state"] == "running"


def test_concurrent_listings_adopt_an_instance_once(rest, node):
    """Eight listings at once: the store's unique (kind, owner, name) key lets one adoption through."""
    import threading

    from openvps.api.ec2.act_instances import records
    from openvps.api.ec2.context import Ctx, Services
    from openvps.service.instances import InstanceService
    from openvps.service.users import Actor
    from openvps.store.ec2store import Ec2Store
    _rest_create(rest, "box1")
    _rest_create(rest, "box2", start=False)
    svc = Services(node=node, instances=InstanceService(node), templates=None, users=None, operations=None,
                   ec2=Ec2Store(node.store), region="openvps-1")
    gate, seen, errors = threading.Barrier(8), [], []

    def listing():
        try:
            gate.wait()
            seen.append(sorted(rec["id"] for rec, _row in records(Ctx(svc=svc, actor=Actor("admin", True)))))
        except Exception as e:       # pragma: no cover - reported below
            errors.append(e)
    threads = [threading.Thread(target=listing) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    made = svc.ec2.find("instance")
    assert sorted(r["ref"] for r in made) == ["box1", "box2"]
    assert all(s == sorted(r["id"] for r in made) for s in seen)
    assert all(r["data"]["adopted"] and r["owner"] == "admin" for r in made)


def test_closest_instance_type():
    from openvps.domain import instance_types as T
    M = 1 << 20
    assert T.closest({"ram": 128 * M, "swap": 128 * M, "cpus": 1, "diskspace": 1 << 30}, 2).name == "ovps.nano"
    assert T.closest({}, 2).name == "ovps.small"                        # the defaults: 512M RAM
    assert T.closest({"ram": 384 * M}, 2).name == "ovps.small"          # nearer 512M than 256M by ratio
    assert T.closest({"ram": 32 * M}, 2).name == "ovps.nano"
    assert T.closest({"ram": 64 << 30}, 2).name == "ovps.xlarge"
    assert T.closest({"ram": 2 << 30, "swap": 2 << 30, "cpus": 0, "diskspace": 20 << 30}, 2).name == "ovps.large"
