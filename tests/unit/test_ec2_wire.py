"""The EC2 wire layer against botocore itself: SigV4 as botocore's signer makes it, the query
serializer's flattened parameters, and XML that botocore's own EC2 parser reads back."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone
from urllib.parse import urlsplit

import botocore.session
import pytest
from botocore.auth import SigV4Auth, SigV4QueryAuth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from botocore.parsers import EC2QueryParser
from botocore.serialize import EC2Serializer

from openvps.api.ec2.wire import Ec2Error, Params, matches, parse_params, render, render_error, verify_sigv4

KEY, SECRET = "OVPSAAAAAAAAAAAAAAAA", "s3cr3t/with+chars" + "x" * 23
MODEL = botocore.session.get_session().get_service_model("ec2")


def signed(body: str, secret: str = SECRET, query: bool = False, url="http://127.0.0.1:8773/"):
    req = AWSRequest(method="POST" if not query else "GET", url=url, data=body if not query else None,
                     headers={"Content-Type": "application/x-www-form-urlencoded; charset=utf-8"} if not query else {})
    creds = Credentials(KEY, secret)
    (SigV4QueryAuth(creds, "ec2", "openvps-1", expires=300) if query else SigV4Auth(creds, "ec2", "openvps-1")).add_auth(req)
    prepared = req.prepare()
    parts = urlsplit(prepared.url)
    headers: dict[str, list[str]] = {}
    for k, v in prepared.headers.items():
        headers.setdefault(k.lower(), []).append(v)
    headers.setdefault("host", [parts.netloc])
    body = prepared.body or b""
    return prepared.method, parts.path or "/", parts.query, headers, body.encode() if isinstance(body, str) else body


def check(method, path, query, headers, body, now=None):
    body = body.encode() if isinstance(body, str) else body
    return verify_sigv4(method, path, query, headers, body, {KEY: SECRET}.get, now=now)


def test_sigv4_header_signed_by_botocore_verifies():
    assert check(*signed("Action=DescribeRegions&Version=2016-11-15&Filter.1.Name=x%20y&Filter.1.Value.1=a*")) == KEY


def test_sigv4_presigned_query_verifies():
    assert check(*signed("", query=True, url="http://127.0.0.1:8773/?Action=DescribeRegions&Version=2016-11-15")) == KEY


def test_sigv4_wrong_secret_tampered_body_unknown_key_and_skew_fail():
    with pytest.raises(Ec2Error, match="signature does not match") as e:
        check(*signed("Action=DescribeRegions&Version=2016-11-15", secret="wrong" * 8))
    assert e.value.code == "AuthFailure" and e.value.status == 401
    m, p, q, h, b = signed("Action=DescribeRegions&Version=2016-11-15")
    with pytest.raises(Ec2Error, match="signature does not match"):
        check(m, p, q, h, b.replace(b"Regions", b"Instances"))
    with pytest.raises(Ec2Error, match="unknown access key"):
        verify_sigv4(m, p, q, h, b, {}.get)
    with pytest.raises(Ec2Error, match="more than 5 minutes"):
        check(m, p, q, h, b, now=datetime.now(timezone.utc) + timedelta(minutes=6))
    assert check(m, p, q, h, b, now=datetime.now(timezone.utc) + timedelta(minutes=4)) == KEY
    with pytest.raises(Ec2Error, match="not signed"):
        verify_sigv4("POST", "/", "", {}, b"", {KEY: SECRET}.get)


def serialize(op: str, params: dict) -> Params:
    body = EC2Serializer().serialize_to_request(params, MODEL.operation_model(op))["body"]
    from urllib.parse import urlencode
    return Params(parse_params("", urlencode(body).encode(), "application/x-www-form-urlencoded"))


def test_flattened_lists_and_filters_as_botocore_sends_them():
    p = serialize("DescribeInstances", {"InstanceIds": ["i-1", "i-2"], "MaxResults": 5, "Filters": [
        {"Name": "tag:env", "Values": ["prod", "dev*"]}, {"Name": "instance-state-name", "Values": ["running"]}]})
    assert p.list("InstanceId") == ["i-1", "i-2"] and p.int("MaxResults") == 5
    assert p.filters() == [("tag:env", ["prod", "dev*"]), ("instance-state-name", ["running"])]
    p = serialize("AuthorizeSecurityGroupIngress", {"GroupId": "sg-1", "IpPermissions": [
        {"IpProtocol": "tcp", "FromPort": 22, "ToPort": 22, "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}]})
    assert p.list("IpPermissions") == [{"IpProtocol": "tcp", "FromPort": "22", "ToPort": "22",
                                        "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}]
    p = serialize("RunInstances", {"ImageId": "ami-1", "MinCount": 1, "MaxCount": 2, "ClientToken": "t",
                                   "TagSpecifications": [{"ResourceType": "instance",
                                                          "Tags": [{"Key": "Name", "Value": "web"}]}]})
    assert p.str("ClientToken") == "t" and p.int("MaxCount") == 2
    assert p.list("TagSpecification") == [{"ResourceType": "instance", "Tag": [{"Key": "Name", "Value": "web"}]}]
    p = serialize("ImportKeyPair", {"KeyName": "k", "PublicKeyMaterial": b"ssh-ed25519 AAAA"})
    assert p.str("PublicKeyMaterial") == "c3NoLWVkMjU1MTkgQUFBQQ=="


def test_filter_matching_wildcards_tags_and_or_and():
    fields = {"instance-state-name": "running", "group-id": ["sg-1", "sg-2"], "instance-type": "ovps.nano"}
    tags = {"env": "prod-eu", "Name": "web1"}
    assert matches([("tag:env", ["prod-*"])], fields, tags)
    assert matches([("tag:env", ["dev", "prod-e?"])], fields, tags)              # values OR'd
    assert not matches([("tag:env", ["prod-*"]), ("instance-state-name", ["stopped"])], fields, tags)  # AND'd
    assert matches([("group-id", ["sg-2"])], fields, tags)                      # any value of a list field
    assert matches([("tag-key", ["Na*"])], fields, tags) and matches([("tag-value", ["web?"])], fields, tags)
    assert not matches([("tag:missing", ["*"])], fields, tags)
    assert not matches([("tag:env", ["prod"])], fields, tags)                   # whole value, not a prefix
    assert matches([("instance-type", ["ovps.nan?"])], fields, tags)
    assert not matches([("instance-type", ["ovpsxnano"])], fields, tags)        # '.' is literal
    with pytest.raises(Ec2Error, match="The filter 'bogus' is invalid"):
        matches([("bogus", ["x"])], fields, tags)


def parse(op: str, xml: bytes, status: int = 200) -> dict:
    return EC2QueryParser().parse({"body": xml, "headers": {}, "status_code": status},
                                  MODEL.operation_model(op).output_shape)


def test_xml_read_back_by_botocore_parser():
    t = datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
    body = {"reservationSet": [{"reservationId": "r-1", "ownerId": "alice", "groupSet": [], "instancesSet": [
        {"instanceId": "i-1", "instanceState": {"code": 16, "name": "running"}, "launchTime": t,
         "tagSet": [{"key": "a&b", "value": "<x>"}], "ipAddress": None,
         "groupSet": [{"groupId": "sg-1", "groupName": "web"}]}]}], "nextToken": "abc"}
    out = parse("DescribeInstances", render("DescribeInstances", body, "req-1"))
    inst = out["Reservations"][0]["Instances"][0]
    assert out["NextToken"] == "abc" and out["ResponseMetadata"]["RequestId"] == "req-1"
    assert inst["State"] == {"Code": 16, "Name": "running"} and inst["LaunchTime"] == t
    assert inst["Tags"] == [{"Key": "a&b", "Value": "<x>"}] and "PublicIpAddress" not in inst
    assert inst["SecurityGroups"] == [{"GroupId": "sg-1", "GroupName": "web"}]
    assert parse("DeleteKeyPair", render("DeleteKeyPair", {"return": True, "keyPairId": "key-1"}, "r"))["Return"] is True


def test_error_xml_read_back_by_botocore():
    out = parse("DescribeInstances", render_error("InvalidInstanceID.NotFound", "The instance ID 'i-1' <x>", "r9"), 400)
    assert out["Error"] == {"Code": "InvalidInstanceID.NotFound", "Message": "The instance ID 'i-1' <x>"}
    assert out["ResponseMetadata"]["RequestId"] == "r9"
