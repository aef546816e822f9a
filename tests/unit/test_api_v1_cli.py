"""The CLI's v1 commands (users, tokens, tags, list filters) against a stub client."""
from __future__ import annotations

import pytest

from test_cli import Stub, inst, run

import openvps.cli.main as cli


class StubV1(Stub):
    def instances(self, **filters):
        self._call("instances", **filters)
        return self.items

    def create_user(self, name, admin=False, quotas=None):
        self._call("create_user", name, admin=admin, quotas=quotas)
        return {"name": name, "admin": admin, "quotas": {"max_instances": None, "max_ram": None,
                                                         "max_public_ips": None, **(quotas or {})}}

    def users(self):
        self._call("users")
        return [{"name": "admin", "admin": True, "quotas": {"max_instances": None, "max_ram": None,
                                                            "max_public_ips": None}},
                {"name": "alice", "admin": False, "quotas": {"max_instances": 2, "max_ram": 1 << 30,
                                                             "max_public_ips": 1}}]

    def update_user(self, name, **body):
        self._call("update_user", name, **body)
        return {"name": name}

    def delete_user(self, name):
        return self._call("delete_user", name)

    def create_token(self, user=None, description=""):
        self._call("create_token", user, description=description)
        return {"id": "abc123", "user": user or "admin", "prefix": "ovps_xyz", "token": "ovps_SECRET"}

    def tokens(self, user=None):
        self._call("tokens", user)
        return [{"id": "abc123", "user": "alice", "prefix": "ovps_xyz", "description": "", "created_at": None}]

    def revoke_token(self, token_id):
        return self._call("revoke_token", token_id)


@pytest.fixture
def stub(monkeypatch) -> StubV1:
    s = StubV1()
    monkeypatch.setattr(cli, "client", lambda: s)
    return s


def test_user_and_token_commands(stub):
    res = run("user", "create", "alice", "--max-instances", "2", "--max-ram", "1G")
    assert res.exit_code == 0 and "user alice created" in res.stdout
    assert stub.calls[-1] == ("create_user", ("alice",), {"admin": False, "quotas": {"max_instances": 2,
                                                                                       "max_ram": "1G"}})
    res = run("user", "list")
    assert res.exit_code == 0 and "alice" in res.stdout and "1G" in res.stdout
    assert run("user", "set", "alice", "--max-ram", "none").exit_code == 0
    assert stub.calls[-1] == ("update_user", ("alice",), {"quotas": {"max_ram": None}})
    res = run("token", "create", "alice", "--description", "ci")
    assert res.exit_code == 0 and res.stdout.strip() == "ovps_SECRET"     # the secret alone on stdout
    assert "shown once" in res.stderr
    res = run("token", "list")
    assert "ovps_SECRET" not in res.stdout and "abc123" in res.stdout
    assert run("token", "revoke", "abc123").exit_code == 0 and stub.calls[-1][0] == "revoke_token"
    assert run("user", "delete", "alice").exit_code == 0 and stub.calls[-1][0] == "delete_user"


def test_tags_description_and_list_filters(stub):
    res = run("create", "--name", "web1", "--tag", "env=prod", "--tag", "team=a", "--description", "front")
    assert res.exit_code == 0
    body = stub.calls[0][2]
    assert body["tags"] == {"env": "prod", "team": "a"} and body["description"] == "front"
    assert run("create", "--name", "web2", "--tag", "novalue").exit_code == 1
    res = run("set", "web1", "--tag", "env=dev", "--untag", "team")
    assert res.exit_code == 0 and "updated" in res.stdout and "--save" not in res.stdout
    assert [c for c in stub.calls if c[0] == "set"][-1][2] == {"limits": {}, "hostname": None, "save": False,
                                                               "tags": {"env": "dev"}, "untag": ["team"]}
    stub.items = [inst("b", 101, "running", owner="alice", tags={"env": "prod"}, description="x")]
    res = run("list", "--state", "running", "--tag", "env=prod", "-o", "ctid,name,owner,tags")
    assert res.exit_code == 0 and "alice" in res.stdout and "env=prod" in res.stdout
    assert stub.calls[-1] == ("instances", (), {"state": "running", "tag": ["env=prod"]})
