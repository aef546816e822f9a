"""The EC2-compatible API with real boto3 (client and resource), the real AWS CLI, a real daemon and
real instances of the minimal template."""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

REGION = "openvps-1"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Ec2:
    def __init__(self, d, user: str):
        d.client.create_user(user)
        k = d.client.create_access_key(user)
        self.key, self.secret = k["access_key_id"], k["secret_access_key"]
        self.url = d.ec2_url
        cfg = Config(retries={"max_attempts": 1})
        kw = dict(endpoint_url=self.url, region_name=REGION, aws_access_key_id=self.key,
                  aws_secret_access_key=self.secret, config=cfg)
        self.client = boto3.client("ec2", **kw)
        self.resource = boto3.resource("ec2", **kw)


@pytest.fixture
def ec2d(make_daemon):
    port = free_port()
    d = make_daemon(env={"OPENVPS_EC2_LISTEN": f"127.0.0.1:{port}"})
    d.start()
    d.ec2_url = f"http://127.0.0.1:{port}"
    return d


def code(e: pytest.ExceptionInfo) -> str:
    return e.value.response["Error"]["Code"]


def ami(c, name: str = "minimal") -> str:
    imgs = c.describe_images(Filters=[{"Name": "name", "Values": [name]}])["Images"]
    assert [i["Name"] for i in imgs] == [name]
    return imgs[0]["ImageId"]


def waiter(c, name: str, ids: list[str]) -> None:
    c.get_waiter(name).wait(InstanceIds=ids, WaiterConfig={"Delay": 1, "MaxAttempts": 120})


def state(c, iid: str) -> str:
    return c.describe_instances(InstanceIds=[iid])["Reservations"][0]["Instances"][0]["State"]["Name"]


def test_auth_regions_zones_types_and_unknown_action(ec2d):
    e = Ec2(ec2d, "alice")
    c = e.client
    assert [r["RegionName"] for r in c.describe_regions()["Regions"]] == [REGION]
    zones = c.describe_availability_zones()["AvailabilityZones"]
    assert [(z["ZoneName"], z["State"]) for z in zones] == [(REGION + "a", "available")]
    types = {t["InstanceType"]: t for t in c.describe_instance_types()["InstanceTypes"]}
    assert types["ovps.small"]["MemoryInfo"]["SizeInMiB"] == 512 and types["ovps.small"]["VCpuInfo"]["DefaultVCpus"] == 1
    two = c.describe_instance_types(Filters=[{"Name": "vcpu-info.default-vcpus", "Values": ["2"]}])["InstanceTypes"]
    assert sorted(t["InstanceType"] for t in two) == ["ovps.large", "ovps.medium"]
    with pytest.raises(ClientError) as ex:
        c.describe_instance_types(InstanceTypes=["m5.large"])
    assert code(ex) == "InvalidInstanceType"

    # a wrong secret, an unknown key: AuthFailure (4xx, so botocore does not retry)
    bad = boto3.client("ec2", endpoint_url=e.url, region_name=REGION, aws_access_key_id=e.key,
                       aws_secret_access_key="x" * 40, config=Config(retries={"max_attempts": 1}))
    with pytest.raises(ClientError) as ex:
        bad.describe_regions()
    assert code(ex) == "AuthFailure" and ex.value.response["ResponseMetadata"]["HTTPStatusCode"] == 401
    unknown = boto3.client("ec2", endpoint_url=e.url, region_name=REGION, aws_access_key_id="OVPSNOSUCHKEY0000000",
                           aws_secret_access_key=e.secret, config=Config(retries={"max_attempts": 1}))
    with pytest.raises(ClientError) as ex:
        unknown.describe_regions()
    assert code(ex) == "AuthFailure"
    # an action openvps does not implement
    with pytest.raises(ClientError) as ex:
        c.describe_vpcs()
    assert code(ex) == "InvalidAction" and ex.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    with pytest.raises(ClientError) as ex:
        c.describe_regions(DryRun=True)
    assert code(ex) == "DryRunOperation"

    # the key can be listed and deleted; a deleted key no longer signs
    assert [k["access_key_id"] for k in ec2d.client.access_keys("alice")] == [e.key]
    ec2d.ok("user", "keys", "delete", "alice", e.key)
    with pytest.raises(ClientError) as ex:
        c.describe_regions()
    assert code(ex) == "AuthFailure"


def test_lifecycle_with_waiters_tags_and_errors(ec2d):
    e = Ec2(ec2d, "alice")
    c = e.client
    image = ami(c)
    with pytest.raises(ClientError) as ex:
        c.describe_instances(InstanceIds=["i-0123456789abcdef0"])
    assert code(ex) == "InvalidInstanceID.NotFound"
    with pytest.raises(ClientError) as ex:
        c.run_instances(ImageId="ami-00000000000000000", InstanceType="ovps.nano", MinCount=1, MaxCount=1)
    assert code(ex) == "InvalidAMIID.NotFound"

    r = c.run_instances(ImageId=image, InstanceType="ovps.nano", MinCount=1, MaxCount=1, ClientToken="tok-1",
                        TagSpecifications=[{"ResourceType": "instance", "Tags": [{"Key": "env", "Value": "prod"},
                                                                                 {"Key": "Name", "Value": "web1"}]}])
    iid = r["Instances"][0]["InstanceId"]
    assert r["Instances"][0]["State"]["Name"] == "pending" and r["ReservationId"].startswith("r-")
    again = c.run_instances(ImageId=image, InstanceType="ovps.nano", MinCount=1, MaxCount=1, ClientToken="tok-1")
    assert again["ReservationId"] == r["ReservationId"] and again["Instances"][0]["InstanceId"] == iid
    waiter(c, "instance_running", [iid])
    inst = c.describe_instances(InstanceIds=[iid])["Reservations"][0]["Instances"][0]
    assert inst["InstanceType"] == "ovps.nano" and inst["ImageId"] == image
    assert inst["PrivateIpAddress"].startswith("10.88.0.")
    # it is a real openvps instance of alice's, with the size's limits
    st = json.loads(ec2d.ok("status", iid, "--json"))
    assert st["state"] == "running" and st["owner"] == "alice" and st["limits"]["ram"] == 128 << 20
    assert st["tags"] == {"env": "prod", "Name": "web1"}

    # tags: create, filter, describe, delete
    c.create_tags(Resources=[iid], Tags=[{"Key": "team", "Value": "blue"}])
    found = c.describe_instances(Filters=[{"Name": "tag:team", "Values": ["bl*"]},
                                          {"Name": "instance-state-name", "Values": ["running"]}])
    assert [i["InstanceId"] for res in found["Reservations"] for i in res["Instances"]] == [iid]
    assert c.describe_instances(Filters=[{"Name": "tag:team", "Values": ["red"]}])["Reservations"] == []
    tags = c.describe_tags(Filters=[{"Name": "resource-id", "Values": [iid]}])["Tags"]
    assert {(t["Key"], t["Value"], t["ResourceType"]) for t in tags} == {
        ("env", "prod", "instance"), ("Name", "web1", "instance"), ("team", "blue", "instance")}
    c.delete_tags(Resources=[iid], Tags=[{"Key": "team"}])
    assert c.describe_instances(Filters=[{"Name": "tag-key", "Values": ["team"]}])["Reservations"] == []

    c.stop_instances(InstanceIds=[iid])
    waiter(c, "instance_stopped", [iid])
    assert json.loads(ec2d.ok("status", iid, "--json"))["state"] == "stopped"
    c.start_instances(InstanceIds=[iid])
    waiter(c, "instance_running", [iid])
    started = json.loads(ec2d.ok("status", iid, "--json"))["started_at"]
    c.reboot_instances(InstanceIds=[iid])
    for _ in range(120):
        st = json.loads(ec2d.ok("status", iid, "--json"))
        if st["state"] == "running" and st["started_at"] != started:
            break
        time.sleep(0.5)
    waiter(c, "instance_running", [iid])
    assert st["started_at"] != started          # it really restarted

    # the resource interface sees the same instance
    res_inst = e.resource.Instance(iid)
    assert res_inst.state["Name"] == "running" and {t["Key"] for t in res_inst.tags} == {"env", "Name"}

    with pytest.raises(ClientError) as ex:
        c.start_instances(InstanceIds=[iid, "i-0000000000000000a"])
    assert code(ex) == "InvalidInstanceID.NotFound"
    t = c.terminate_instances(InstanceIds=[iid])["TerminatingInstances"][0]
    assert t["PreviousState"]["Name"] == "running" and t["CurrentState"]["Name"] == "shutting-down"
    waiter(c, "instance_terminated", [iid])
    assert state(c, iid) == "terminated"           # still visible, for the waiters
    assert ec2d.cli("status", iid).returncode == 1   # the openvps instance is gone
    with pytest.raises(ClientError) as ex:
        c.start_instances(InstanceIds=[iid])
    assert code(ex) == "IncorrectInstanceState"

    # another user sees none of it
    bob = Ec2(ec2d, "bob").client
    with pytest.raises(ClientError) as ex:
        bob.describe_instances(InstanceIds=[iid])
    assert code(ex) == "InvalidInstanceID.NotFound"
    assert bob.describe_instances()["Reservations"] == []


def test_paginator_over_more_instances_than_a_page_and_the_aws_cli(ec2d):
    e = Ec2(ec2d, "alice")
    c = e.client
    r = c.run_instances(ImageId=ami(c), InstanceType="ovps.nano", MinCount=7, MaxCount=7,
                        TagSpecifications=[{"ResourceType": "instance", "Tags": [{"Key": "batch", "Value": "b1"}]}])
    ids = [i["InstanceId"] for i in r["Instances"]]
    assert len(set(ids)) == 7
    waiter(c, "instance_running", ids)
    pages = list(c.get_paginator("describe_instances").paginate(PaginationConfig={"PageSize": 5}))
    per_page = [sum(len(res["Instances"]) for res in p["Reservations"]) for p in pages]
    assert per_page == [5, 2]
    assert sorted(i["InstanceId"] for p in pages for res in p["Reservations"] for i in res["Instances"]) == sorted(ids)

    env = {**os.environ, "AWS_ACCESS_KEY_ID": e.key, "AWS_SECRET_ACCESS_KEY": e.secret,
           "AWS_DEFAULT_REGION": REGION, "AWS_CONFIG_FILE": "/dev/null", "AWS_SHARED_CREDENTIALS_FILE": "/dev/null"}
    aws = str(Path(sys.executable).parent / "aws")
    p = subprocess.run([aws, "--endpoint-url", e.url, "ec2", "describe-instances", "--output", "json",
                        "--filters", "Name=tag:batch,Values=b1"], env=env, capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout)
    got = sorted(i["InstanceId"] for res in out["Reservations"] for i in res["Instances"])
    assert got == sorted(ids)
    assert {i["State"]["Name"] for res in out["Reservations"] for i in res["Instances"]} == {"running"}
    p = subprocess.run([aws, "--endpoint-url", e.url, "ec2", "describe-instances", "--instance-ids",
                        "i-0123456789abcdef0"], env=env, capture_output=True, text=True, timeout=60)
    assert p.returncode != 0 and "InvalidInstanceID.NotFound" in p.stderr
    c.terminate_instances(InstanceIds=ids)
    waiter(c, "instance_terminated", ids)


def test_key_pairs_and_security_groups(ec2d):
    c = Ec2(ec2d, "alice").client
    k = c.create_key_pair(KeyName="mykey", KeyType="ed25519")
    assert k["KeyMaterial"].startswith("-----BEGIN OPENSSH PRIVATE KEY-----") and k["KeyPairId"].startswith("key-")
    with pytest.raises(ClientError) as ex:
        c.create_key_pair(KeyName="mykey")
    assert code(ex) == "InvalidKeyPair.Duplicate"
    pub = subprocess.run(["ssh-keygen", "-y", "-f", "/dev/stdin"], input=k["KeyMaterial"] + "\n",
                         capture_output=True, text=True, check=True).stdout.strip()
    c.import_key_pair(KeyName="imported", PublicKeyMaterial=pub.encode())
    keys = c.describe_key_pairs()["KeyPairs"]
    assert sorted(x["KeyName"] for x in keys) == ["imported", "mykey"]
    with pytest.raises(ClientError) as ex:
        c.describe_key_pairs(KeyNames=["nope"])
    assert code(ex) == "InvalidKeyPair.NotFound"

    g = c.create_security_group(GroupName="web", Description="web servers")["GroupId"]
    with pytest.raises(ClientError) as ex:
        c.create_security_group(GroupName="web", Description="again")
    assert code(ex) == "InvalidGroup.Duplicate"
    rule = [{"IpProtocol": "tcp", "FromPort": 22, "ToPort": 22, "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}]
    c.authorize_security_group_ingress(GroupId=g, IpPermissions=rule)
    with pytest.raises(ClientError) as ex:
        c.authorize_security_group_ingress(GroupId=g, IpPermissions=rule)
    assert code(ex) == "InvalidPermission.Duplicate"

    # a member instance gets the group's rules in the node firewall; the key lands in authorized_keys
    r = c.run_instances(ImageId=ami(c), InstanceType="ovps.nano", MinCount=1, MaxCount=1, KeyName="mykey",
                        SecurityGroupIds=[g])
    iid = r["Instances"][0]["InstanceId"]
    assert r["Instances"][0]["SecurityGroups"] == [{"GroupId": g, "GroupName": "web"}]
    waiter(c, "instance_running", [iid])
    assert pub.split()[1] in ec2d.sh(iid, "cat /root/.ssh/authorized_keys")

    def fw():
        return sorted((x["instance"], x["proto"], x["port"], x["source"])
                      for x in json.loads(ec2d.ok("firewall", "list", "--json")))
    assert fw() == [(iid, "tcp", 22, "0.0.0.0/0")]
    c.authorize_security_group_ingress(GroupId=g, IpPermissions=[
        {"IpProtocol": "tcp", "FromPort": 80, "ToPort": 81, "IpRanges": [{"CidrIp": "203.0.113.0/24"}]}])
    assert fw() == [(iid, "tcp", 22, "0.0.0.0/0"), (iid, "tcp", 80, "203.0.113.0/24"), (iid, "tcp", 81, "203.0.113.0/24")]
    desc = c.describe_security_groups(GroupIds=[g])["SecurityGroups"][0]
    assert sorted((p["FromPort"], p["ToPort"], p["IpRanges"][0]["CidrIp"]) for p in desc["IpPermissions"]) == [
        (22, 22, "0.0.0.0/0"), (80, 81, "203.0.113.0/24")]
    c.revoke_security_group_ingress(GroupId=g, IpPermissions=rule)
    assert fw() == [(iid, "tcp", 80, "203.0.113.0/24"), (iid, "tcp", 81, "203.0.113.0/24")]
    with pytest.raises(ClientError) as ex:
        c.revoke_security_group_ingress(GroupId=g, IpPermissions=rule)
    assert code(ex) == "InvalidPermission.NotFound"
    with pytest.raises(ClientError) as ex:
        c.delete_security_group(GroupId=g)
    assert code(ex) == "DependencyViolation"
    c.terminate_instances(InstanceIds=[iid])
    waiter(c, "instance_terminated", [iid])
    assert fw() == []
    c.delete_security_group(GroupId=g)
    with pytest.raises(ClientError) as ex:
        c.describe_security_groups(GroupIds=[g])
    assert code(ex) == "InvalidGroup.NotFound"
    c.delete_key_pair(KeyName="mykey")
    assert [x["KeyName"] for x in c.describe_key_pairs()["KeyPairs"]] == ["imported"]


def test_create_image_then_launch_from_it(make_daemon, template_dir, tmp_path):
    # a private copy of the template cache: the published image never lands in the shared one
    tdir = tmp_path / "templates"
    shutil.copytree(template_dir / "minimal", tdir / "minimal", symlinks=True)
    port = free_port()
    ec2d = make_daemon(template_dir=tdir, env={"OPENVPS_EC2_LISTEN": f"127.0.0.1:{port}"})
    ec2d.start()
    ec2d.ec2_url = f"http://127.0.0.1:{port}"
    c = Ec2(ec2d, "alice").client
    iid = c.run_instances(ImageId=ami(c), InstanceType="ovps.nano", MinCount=1, MaxCount=1)["Instances"][0]["InstanceId"]
    waiter(c, "instance_running", [iid])
    ec2d.sh(iid, "echo baked > /etc/baked")
    new = c.create_image(InstanceId=iid, Name="baked-img")["ImageId"]
    c.get_waiter("image_available").wait(ImageIds=[new], WaiterConfig={"Delay": 1, "MaxAttempts": 120})
    assert [i["ImageId"] for i in c.describe_images(Owners=["self"])["Images"]] == [new]
    iid2 = c.run_instances(ImageId=new, InstanceType="ovps.nano", MinCount=1, MaxCount=1)["Instances"][0]["InstanceId"]
    waiter(c, "instance_running", [iid2])
    assert ec2d.sh(iid2, "cat /etc/baked") == "baked"
    c.terminate_instances(InstanceIds=[iid, iid2])
    waiter(c, "instance_terminated", [iid, iid2])


# ---------------------------------------------------------------- addresses and the firewall, from "the internet"
@pytest.fixture
def ec2net(template_dir, minimal, upstream):
    """A daemon with the EC2 port whose node network lives in the upstream fixture's namespaces."""
    from daemon import Daemon
    port = free_port()
    d = Daemon(template_dir, env={**upstream.env, "OPENVPS_EC2_LISTEN": f"127.0.0.1:{port}"})
    d.up, d.ec2_url = upstream, f"http://127.0.0.1:{port}"
    try:
        d.start()
        yield d
    finally:
        d.cleanup()


def test_elastic_address_and_security_group_from_upstream(ec2net):
    d, up = ec2net, ec2net.up
    c = Ec2(d, "alice").client
    alloc = c.allocate_address(Domain="vpc")
    pub, aid = alloc["PublicIp"], alloc["AllocationId"]
    assert pub.startswith("192.0.2.1") and aid.startswith("eipalloc-")
    g = c.create_security_group(GroupName="http", Description="web")["GroupId"]
    c.authorize_security_group_ingress(GroupId=g, IpPermissions=[
        {"IpProtocol": "tcp", "FromPort": 80, "ToPort": 80, "IpRanges": [{"CidrIp": "192.0.2.0/24"}]}])
    iid = c.run_instances(ImageId=ami(c), InstanceType="ovps.nano", MinCount=1, MaxCount=1,
                          SecurityGroupIds=[g])["Instances"][0]["InstanceId"]
    waiter(c, "instance_running", [iid])
    d.sh(iid, "mkdir -p /www && echo hello-ec2 > /www/index.html && busybox httpd -p 80 -h /www")
    assoc = c.associate_address(AllocationId=aid, InstanceId=iid)["AssociationId"]
    assert up.http(up.up, f"http://{pub}/") == "hello-ec2"
    inst = c.describe_instances(InstanceIds=[iid])["Reservations"][0]["Instances"][0]
    assert inst["PublicIpAddress"] == pub
    a = c.describe_addresses(AllocationIds=[aid])["Addresses"][0]
    assert (a["InstanceId"], a["AssociationId"], a["PrivateIpAddress"]) == (iid, assoc, inst["PrivateIpAddress"])
    assert c.describe_addresses(Filters=[{"Name": "instance-id", "Values": [iid]}])["Addresses"][0]["PublicIp"] == pub

    # the group's rule is the only way in: revoke it and the port closes, authorize and it opens
    c.revoke_security_group_ingress(GroupId=g, IpPermissions=[
        {"IpProtocol": "tcp", "FromPort": 80, "ToPort": 80, "IpRanges": [{"CidrIp": "192.0.2.0/24"}]}])
    assert up.http(up.up, f"http://{pub}/", timeout=2) is None
    c.authorize_security_group_ingress(GroupId=g, IpProtocol="tcp", FromPort=80, ToPort=80, CidrIp="0.0.0.0/0")
    assert up.http(up.up, f"http://{pub}/") == "hello-ec2"

    # another user cannot touch alice's address
    bob = Ec2(d, "bob").client
    with pytest.raises(ClientError) as ex:
        bob.release_address(AllocationId=aid)
    assert code(ex) == "InvalidAllocationID.NotFound"
    assert bob.describe_addresses()["Addresses"] == []

    with pytest.raises(ClientError) as ex:
        c.release_address(AllocationId=aid)
    assert code(ex) == "InvalidIPAddress.InUse"
    c.disassociate_address(AssociationId=assoc)
    assert up.http(up.up, f"http://{pub}/", timeout=2) is None
    assert "InstanceId" not in c.describe_addresses(AllocationIds=[aid])["Addresses"][0]
    c.release_address(AllocationId=aid)
    assert c.describe_addresses()["Addresses"] == []
    assert json.loads(d.ok("address", "list", "--json")) == []
    c.terminate_instances(InstanceIds=[iid])
    waiter(c, "instance_terminated", [iid])


@pytest.mark.slow
def test_debian_over_ssh_with_key_pair_elastic_address_and_group(ec2net, tmp_path):
    """The whole EC2 story on Debian 12: created key pair, tcp/22 group, elastic address, real ssh
    from upstream, then stop/start/reboot/terminate with the waiters."""
    from openvps.drivers.templates.cache import TemplateCache
    TemplateCache(ec2net.template_dir).build("debian-12")
    d, up = ec2net, ec2net.up
    c = Ec2(d, "alice").client
    key = c.create_key_pair(KeyName="deb")          # rsa PEM, as AWS makes by default
    assert key["KeyMaterial"].startswith("-----BEGIN RSA PRIVATE KEY-----")
    kf = tmp_path / "deb.pem"
    kf.write_text(key["KeyMaterial"] + "\n")
    kf.chmod(0o600)
    g = c.create_security_group(GroupName="ssh", Description="ssh in")["GroupId"]
    c.authorize_security_group_ingress(GroupId=g, IpPermissions=[
        {"IpProtocol": "tcp", "FromPort": 22, "ToPort": 22, "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}])
    iid = c.run_instances(ImageId=ami(c, "debian-12"), InstanceType="ovps.small", MinCount=1, MaxCount=1,
                          KeyName="deb", SecurityGroupIds=[g])["Instances"][0]["InstanceId"]
    waiter(c, "instance_running", [iid])
    alloc = c.allocate_address(Domain="vpc")
    c.associate_address(AllocationId=alloc["AllocationId"], InstanceId=iid)
    pub = alloc["PublicIp"]

    def ssh() -> subprocess.CompletedProcess:
        return up.run(up.up, "ssh", "-i", str(kf), "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no",
                      "-o", "UserKnownHostsFile=/dev/null", "-o", "ConnectTimeout=5", f"root@{pub}",
                      "cat /etc/os-release | grep VERSION_ID; id -u", timeout=30)
    p = None
    for _ in range(60):        # sshd comes up a moment after systemd reports the container running
        p = ssh()
        if p.returncode == 0:
            break
        time.sleep(1)
    assert p.returncode == 0, p.stderr
    assert p.stdout.split() == ['VERSION_ID="12"', "0"]

    c.stop_instances(InstanceIds=[iid])
    waiter(c, "instance_stopped", [iid])
    c.start_instances(InstanceIds=[iid])
    waiter(c, "instance_running", [iid])
    c.reboot_instances(InstanceIds=[iid])
    waiter(c, "instance_running", [iid])
    for _ in range(60):
        p = ssh()
        if p.returncode == 0:
            break
        time.sleep(1)
    assert p.returncode == 0, p.stderr          # the address and the group survive stop/start/reboot
    c.terminate_instances(InstanceIds=[iid])
    waiter(c, "instance_terminated", [iid])
    c.release_address(AllocationId=alloc["AllocationId"])


def test_a_taken_ec2_port_does_not_stop_the_daemon(make_daemon):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        d = make_daemon(env={"OPENVPS_EC2_LISTEN": f"127.0.0.1:{port}"})
        d.start()
        assert d.client.info()["api_version"] == "1.0"
        for _ in range(50):
            if "the EC2 API could not listen" in d.output():
                break
            time.sleep(0.1)
        assert f"could not listen on 127.0.0.1:{port}" in d.output()
        assert d.proc.poll() is None


def test_terminate_while_pending(ec2d):
    c = Ec2(ec2d, "alice").client
    ids = [i["InstanceId"] for i in c.run_instances(ImageId=ami(c), InstanceType="ovps.nano", MinCount=2,
                                                     MaxCount=2)["Instances"]]
    out = c.terminate_instances(InstanceIds=ids)["TerminatingInstances"]
    assert {x["PreviousState"]["Name"] for x in out} == {"pending"}
    waiter(c, "instance_terminated", ids)
    assert json.loads(ec2d.ok("list", "--json")) == []
    assert ec2d.residue() == {"runc": [], "mounts": [], "cgroups": [], "dirs": []}


# ---------------------------------------------------------------- instances made outside EC2 (adopted)
def ec2_as(d, user: str):
    """A boto3 client for an existing user (admin included)."""
    k = d.client.create_access_key(user)
    return boto3.client("ec2", endpoint_url=d.ec2_url, region_name=REGION, aws_access_key_id=k["access_key_id"],
                        aws_secret_access_key=k["secret_access_key"], config=Config(retries={"max_attempts": 1}))


def listed(c) -> dict[str, dict]:
    return {i["InstanceId"]: i for res in c.describe_instances()["Reservations"] for i in res["Instances"]}


def test_instances_made_over_rest_and_the_cli_are_ec2_instances(make_daemon):
    from openvps.client import Client
    from openvps.domain.errors import NotFound
    ec2_port, rest_port = free_port(), free_port()
    d = make_daemon(env={"OPENVPS_EC2_LISTEN": f"127.0.0.1:{ec2_port}", "OPENVPS_LISTEN": f"127.0.0.1:{rest_port}"})
    d.start()
    d.ec2_url = f"http://127.0.0.1:{ec2_port}"
    c = Ec2(d, "alice").client
    alice = Client(url=f"http://127.0.0.1:{rest_port}", token=d.client.create_token("alice", "test")["token"])
    alice.wait(alice.create(name="web1", template="minimal", start=True, tags={"env": "prod"},
                            limits={"ram": "128M", "swap": "128M"}))
    d.ok("create", "--name", "cli1", "--template", "minimal", "--start")          # the admin's, by the CLI

    # alice's REST instance is an EC2 instance of hers: i- id, running, its address, image and tags
    mine = listed(c)
    assert len(mine) == 1
    [(iid, inst)] = mine.items()
    assert iid.startswith("i-") and inst["State"]["Name"] == "running"
    assert inst["PrivateIpAddress"] == alice.instance("web1")["ip"][0] and inst["PrivateIpAddress"].startswith("10.88.")
    assert inst["ImageId"] == ami(c) and inst["InstanceType"] == "ovps.nano"          # nearest by RAM
    assert {t["Key"]: t["Value"] for t in inst["Tags"]} == {"env": "prod"}
    assert listed(c).keys() == {iid}                                   # the same id on every listing
    assert state(c, iid) == "running"
    assert Ec2(d, "bob").client.describe_instances()["Reservations"] == []
    admin = ec2_as(d, "admin")
    every = listed(admin)                                              # admins see everybody's
    assert iid in every and len(every) == 2
    [cli_id] = every.keys() - {iid}
    assert every[cli_id]["State"]["Name"] == "running" and every[cli_id]["InstanceType"] == "ovps.small"
    with pytest.raises(ClientError) as ex:
        c.describe_instances(InstanceIds=[cli_id])                     # not alice's
    assert code(ex) == "InvalidInstanceID.NotFound"

    # EC2 acts on the real instance
    c.stop_instances(InstanceIds=[iid])
    waiter(c, "instance_stopped", [iid])
    assert alice.instance("web1")["state"] == "stopped"
    c.start_instances(InstanceIds=[iid])
    waiter(c, "instance_running", [iid])
    assert alice.instance("web1")["state"] == "running"
    c.create_tags(Resources=[iid], Tags=[{"Key": "team", "Value": "blue"}])
    assert alice.instance("web1")["tags"] == {"env": "prod", "team": "blue"}
    c.delete_tags(Resources=[iid], Tags=[{"Key": "env"}])
    assert alice.instance("web1")["tags"] == {"team": "blue"}
    c.terminate_instances(InstanceIds=[iid])
    waiter(c, "instance_terminated", [iid])
    with pytest.raises(NotFound):
        alice.instance("web1")
    assert state(c, iid) == "terminated"

    # destroyed by the CLI: terminated in EC2; a new instance of that name is another EC2 instance
    d.ok("destroy", "cli1", "--force")
    assert state(admin, cli_id) == "terminated"
    d.ok("create", "--name", "cli1", "--template", "minimal", "--start")
    now = listed(admin)
    [new_id] = [i for i, v in now.items() if v["State"]["Name"] == "running"]
    assert new_id not in (iid, cli_id) and now[cli_id]["State"]["Name"] == "terminated"
    with pytest.raises(ClientError) as ex:
        admin.stop_instances(InstanceIds=[cli_id])                     # the old id never reaches the new one
    assert code(ex) == "IncorrectInstanceState"
    assert json.loads(d.ok("status", "cli1", "--json"))["state"] == "running"
    for bad, want in (("i-0123456789abcdef0", "InvalidInstanceID.NotFound"), ("i-zz", "InvalidInstanceID.Malformed")):
        with pytest.raises(ClientError) as ex:
            c.terminate_instances(InstanceIds=[bad])
        assert code(ex) == want
    admin.terminate_instances(InstanceIds=[new_id])
    waiter(admin, "instance_terminated", [new_id])
    assert json.loads(d.ok("list", "--json")) == []
    alice.close()


def test_elastic_address_on_an_adopted_instance(ec2net):
    """An instance made by the CLI gets an elastic address through EC2 (keyed by its name, not its i- id)."""
    d, up = ec2net, ec2net.up
    d.ok("create", "--name", "www", "--template", "minimal", "--start")
    d.sh("www", "mkdir -p /www && echo hello-adopted > /www/index.html && busybox httpd -p 80 -h /www")
    d.ok("firewall", "allow", "www", "tcp", "80")
    c = ec2_as(d, "admin")
    [iid] = listed(c).keys()
    alloc = c.allocate_address(Domain="vpc")
    pub = alloc["PublicIp"]
    assoc = c.associate_address(AllocationId=alloc["AllocationId"], InstanceId=iid)["AssociationId"]
    assert up.http(up.up, f"http://{pub}/") == "hello-adopted"
    assert listed(c)[iid]["PublicIpAddress"] == pub
    a = c.describe_addresses(AllocationIds=[alloc["AllocationId"]])["Addresses"][0]
    assert (a["InstanceId"], a["AssociationId"]) == (iid, assoc) and a["PrivateIpAddress"].startswith("10.88.0.")
    c.disassociate_address(AssociationId=assoc)
    assert up.http(up.up, f"http://{pub}/", timeout=2) is None
    # associated by the CLI: EC2 names the instance by its i- id, and can disassociate it by address
    d.ok("address", "associate", pub, "www")
    a = c.describe_addresses(PublicIps=[pub])["Addresses"][0]
    assert a["InstanceId"] == iid and "AssociationId" not in a
    assert up.http(up.up, f"http://{pub}/") == "hello-adopted"
    c.disassociate_address(PublicIp=pub)
    assert up.http(up.up, f"http://{pub}/", timeout=2) is None
    assert json.loads(d.ok("address", "list", "--json"))[0]["instance"] is None
    c.release_address(AllocationId=alloc["AllocationId"])
    c.terminate_instances(InstanceIds=[iid])
    waiter(c, "instance_terminated", [iid])
    assert json.loads(d.ok("list", "--json")) == []
