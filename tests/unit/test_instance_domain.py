"""Instances in the domain: the state machine, names, CTIDs, hostnames, idents; the error hierarchy."""
from __future__ import annotations

import pytest

from openvps.domain import errors as E
from openvps.domain.instance import (ALLOWED, CTID_MAX, CTID_MIN, State, check_transition, parse_ident,
                                     validate_ctid, validate_hostname, validate_name)

ACTIONS = sorted(ALLOWED)
EXPECTED = {
    "start": {"stopped"},
    "stop": {"running", "suspended"},
    "restart": {"running"},
    "suspend": {"running"},
    "resume": {"suspended"},
    "destroy": {"stopped", "broken"},
    "set": {"stopped", "running", "suspended"},
    "exec": {"running"},
}


def test_allowed_table():
    assert {a: {s.value for s in states} for a, states in ALLOWED.items()} == EXPECTED


@pytest.mark.parametrize("action,state", [(a, s) for a in ACTIONS for s in State])
def test_every_transition(action, state):
    if state.value in EXPECTED[action]:
        assert check_transition(action, state, "web1") is None
        assert check_transition(action, state.value, "web1") is None      # plain strings from the store too
        return
    with pytest.raises(E.InvalidState) as e:
        check_transition(action, state, "web1")
    err = e.value
    assert err.status == 409 and err.code == "invalid_state"
    assert err.details == {"action": action, "state": state.value}
    assert err.message.startswith(f"cannot {action} instance web1: it is {state.value}; ")


@pytest.mark.parametrize("action,state,hint", [
    ("start", "running", "it is already running"),
    ("start", "suspended", "use `resume`"),
    ("destroy", "running", "stop it first, or pass --force"),
    ("destroy", "suspended", "stop it first, or pass --force"),
    ("exec", "stopped", "start it first"),
    ("exec", "suspended", "resume it first"),
    ("stop", "stopped", "it is already stopped"),
    ("suspend", "suspended", "it is already suspended"),
    ("resume", "running", "it is not suspended"),
    # no specific hint: say which states would do
    ("restart", "stopped", "restart needs state running"),
    ("destroy", "creating", "destroy needs state broken or stopped"),
    ("stop", "creating", "stop needs state running or suspended"),
    ("set", "destroying", "set needs state running or stopped or suspended"),
])
def test_hints(action, state, hint):
    with pytest.raises(E.InvalidState) as e:
        check_transition(action, state, "101")
    assert e.value.message.endswith(hint)


def test_unknown_state_is_an_error():
    with pytest.raises(ValueError):
        check_transition("start", "exploded", "web1")


@pytest.mark.parametrize("name", ["web1", "a", "a-b", "1web", "web-1-2", "a" * 63, "0a"])
def test_good_names(name):
    assert validate_name(name) == name


@pytest.mark.parametrize("name", ["", "Web1", "-web", "web-", "a_b", "a.b", "web 1", "a" * 64, "123", "100",
                                  "wéb", None, 101])
def test_bad_names(name):
    with pytest.raises(E.InvalidArgument) as e:
        validate_name(name)
    assert e.value.details == {"field": "name"}
    assert "DNS label" in e.value.message


@pytest.mark.parametrize("ctid", [CTID_MIN, 101, 5000, CTID_MAX])
def test_good_ctids(ctid):
    assert validate_ctid(ctid) == ctid


@pytest.mark.parametrize("ctid", [CTID_MIN - 1, 0, -5, CTID_MAX + 1, True, "101", 101.0, None])
def test_bad_ctids(ctid):
    with pytest.raises(E.InvalidArgument) as e:
        validate_ctid(ctid)
    assert e.value.details == {"field": "ctid"}
    assert f"{CTID_MIN} to {CTID_MAX}" in e.value.message


@pytest.mark.parametrize("hostname", ["web1", "web1.example", "Web1.Example.COM", "a.b.c.d", "x" * 63])
def test_good_hostnames(hostname):
    assert validate_hostname(hostname) == hostname


@pytest.mark.parametrize("hostname", ["", ".", "web1.", ".web1", "a..b", "-a.b", "a-.b", "a_b.c", "x" * 64,
                                      ".".join(["a" * 60] * 5), None, 5])
def test_bad_hostnames(hostname):
    with pytest.raises(E.InvalidArgument) as e:
        validate_hostname(hostname)
    assert e.value.details == {"field": "hostname"}


def test_hostname_longer_than_the_kernel_allows_is_refused():
    with pytest.raises(E.InvalidArgument):
        validate_hostname(".".join(["a" * 30] * 3))     # 92 characters


@pytest.mark.parametrize("ident,expected", [("101", 101), (101, 101), ("web1", "web1"), ("1web", "1web"),
                                            ("", "")])
def test_parse_ident(ident, expected):
    got = parse_ident(ident)
    assert got == expected and type(got) is type(expected)


def test_parse_ident_unicode_digits_are_names():
    assert parse_ident("²") == "²"


def test_error_hierarchy_statuses_and_wire_form():
    cases = [(E.InvalidArgument, 400), (E.NotFound, 404), (E.Conflict, 409), (E.InvalidState, 409),
             (E.InsufficientResources, 409), (E.DriverError, 500), (E.Cancelled, 409), (E.OpenVPSError, 500)]
    for cls, status in cases:
        err = cls("boom", key="ram")
        assert err.status == status
        assert err.to_dict() == {"code": cls.code, "message": "boom", "details": {"key": "ram"}}
        back = E.from_dict(err.to_dict())
        assert type(back) is cls and back.message == "boom" and back.details == {"key": "ram"}


def test_from_dict_unknown_code_keeps_the_code():
    err = E.from_dict({"code": "interrupted", "message": "the daemon stopped"})
    assert type(err) is E.OpenVPSError
    assert err.code == "interrupted" and err.message == "the daemon stopped" and err.details == {}
