"""The networking CLI against a stub client (argument handling, bodies, output)."""
from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

import openvps.cli.main as cli
from openvps.domain.errors import Conflict

from test_cli import Stub


class NetStub(Stub):
    def request(self, method, path, body=None, query=None):
        self.calls.append(("request", (method, path), body or {}))
        if self.fail:
            raise self.fail
        results = {
            ("POST", "/1.0/networks"): {"network": {"name": "lan0", "subnet": "10.89.0.0/24", "gateway": "10.89.0.1",
                                                    "nat": True}},
            ("POST", "/1.0/forwards"): {"forward": {"instance": "web1", "proto": "tcp", "port": 2222,
                                                    "target_port": 22}},
            ("POST", "/1.0/addresses"): {"address": {"address": "192.0.2.100", "instance": None}},
            ("POST", "/1.0/firewall"): {"rule": {"id": 3, "instance": "web1", "proto": "tcp", "port": 22,
                                                 "source": "0.0.0.0/0"}},
        }
        if method == "GET" and path == "/1.0/networks":
            return [{"name": "default", "subnet": "10.88.0.0/24", "gateway": "10.88.0.1", "nat": True,
                     "bridge": "ovbr1", "addresses_used": 2, "addresses_total": 253, "instances": ["a", "b"]}]
        if method == "GET":
            return []
        return {"id": "op-1", "status": "pending", "result": results.get((method, path), {})}


@pytest.fixture
def stub(monkeypatch) -> NetStub:
    s = NetStub()
    monkeypatch.setattr(cli, "client", lambda: s)
    return s


def run(*args):
    return CliRunner().invoke(cli.app, list(args))


def test_create_with_networks_and_dns(stub):
    res = run("create", "--name", "web1", "--net", "lan0", "--net", "db0", "--ipadd", "10.89.0.50",
              "--nameserver", "1.1.1.1", "--searchdomain", "example.com")
    assert res.exit_code == 0, res.output
    body = stub.calls[0][2]
    assert body["nets"] == ["lan0", "db0"] and body["ipadd"] == ["10.89.0.50"]
    assert body["nameservers"] == ["1.1.1.1"] and body["searchdomain"] == "example.com"


def test_set_ipadd_ipdel(stub):
    res = run("set", "web1", "--ipadd", "10.88.0.9", "--ipdel", "10.88.0.2")
    assert res.exit_code == 0, res.output
    assert stub.calls[0][2]["ipadd"] == ["10.88.0.9"] and stub.calls[0][2]["ipdel"] == ["10.88.0.2"]


def test_network_commands(stub):
    res = run("network", "create", "lan0", "--subnet", "10.89.0.0/24")
    assert res.exit_code == 0 and "network lan0 created: 10.89.0.0/24, gateway 10.89.0.1, NAT" in res.stdout
    assert stub.calls[0][2] == {"name": "lan0", "subnet": "10.89.0.0/24", "nat": True}
    res = run("network", "create", "lan1", "--subnet", "10.90.0.0/24", "--no-nat")
    assert stub.calls[-2][2]["nat"] is False
    res = run("network", "list")
    assert "default" in res.stdout and "2/253" in res.stdout and "a, b" in res.stdout
    res = run("network", "delete", "lan0")
    assert res.exit_code == 0 and stub.calls[-2][1] == ("DELETE", "/1.0/networks/lan0")


def test_forward_address_firewall(stub):
    res = run("forward", "add", "web1", "tcp", "2222:22")
    assert res.stdout == "forwarding tcp port 2222 -> web1:22\n"
    assert stub.calls[0][2] == {"instance": "web1", "proto": "tcp", "ports": "2222:22"}
    run("forward", "remove", "tcp", "2222")
    assert ("DELETE", "/1.0/forwards/tcp/2222") in [c[1] for c in stub.calls]
    res = run("address", "allocate", "--json")
    assert json.loads(res.stdout) == {"address": "192.0.2.100", "instance": None}
    run("address", "associate", "192.0.2.100", "web1")
    assert stub.calls[-2][1] == ("POST", "/1.0/addresses/192.0.2.100/associate") and stub.calls[-2][2] == {"instance": "web1"}
    res = run("firewall", "allow", "web1", "tcp", "22", "--from", "0.0.0.0/0")
    assert res.stdout.startswith("rule 3: allow tcp 22 to web1")


def test_errors_go_to_stderr(stub):
    stub.fail = Conflict("tcp port 2222 is already forwarded to web1:22")
    res = CliRunner().invoke(cli.app, ["forward", "add", "web1", "tcp", "2222:80"])
    assert res.exit_code == 1 and "error: tcp port 2222 is already forwarded" in res.output
