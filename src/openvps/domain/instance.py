"""Instances: identity rules and the explicit state machine (enforced by the service)."""
from __future__ import annotations

import re
from enum import Enum

from .errors import InvalidArgument, InvalidState

CTID_MIN, CTID_MAX = 100, 999_999_999
_LABEL = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
_HOSTNAME_MAX = 64   # the kernel's HOST_NAME_MAX: sethostname() refuses more


class State(str, Enum):
    CREATING = "creating"      # row reserved, files being made; rolled back if the daemon dies
    STOPPED = "stopped"
    RUNNING = "running"
    SUSPENDED = "suspended"    # frozen
    DESTROYING = "destroying"  # finished on the next daemon start if interrupted
    BROKEN = "broken"          # the runtime lost track of it (reported, never deleted silently)


# action -> states it may start from
ALLOWED: dict[str, set[State]] = {
    "start": {State.STOPPED},
    "stop": {State.RUNNING, State.SUSPENDED},
    "restart": {State.RUNNING},
    "suspend": {State.RUNNING},
    "resume": {State.SUSPENDED},
    "destroy": {State.STOPPED, State.BROKEN},
    "set": {State.STOPPED, State.RUNNING, State.SUSPENDED},
    "exec": {State.RUNNING},
}

_HINT = {
    ("start", State.RUNNING): "it is already running",
    ("start", State.SUSPENDED): "it is suspended; use `resume`",
    ("destroy", State.RUNNING): "stop it first, or pass --force",
    ("destroy", State.SUSPENDED): "stop it first, or pass --force",
    ("exec", State.STOPPED): "start it first",
    ("exec", State.SUSPENDED): "resume it first",
    ("stop", State.STOPPED): "it is already stopped",
    ("suspend", State.SUSPENDED): "it is already suspended",
    ("resume", State.RUNNING): "it is not suspended",
}


def check_transition(action: str, state: State | str, ident: str) -> None:
    state = State(state)
    if state in ALLOWED[action]:
        return
    hint = _HINT.get((action, state)) or f"{action} needs state {' or '.join(sorted(s.value for s in ALLOWED[action]))}"
    raise InvalidState(f"cannot {action} instance {ident}: it is {state.value}; {hint}",
                       action=action, state=state.value)


def validate_name(name: str) -> str:
    if not isinstance(name, str) or not _LABEL.match(name) or name.isdigit():
        raise InvalidArgument(
            f"invalid name {name!r}: use a DNS label — 1 to 63 lowercase letters, digits and '-', "
            "not starting or ending with '-', and not all digits (numbers are CTIDs)", field="name")
    return name


def validate_ctid(ctid: int) -> int:
    if isinstance(ctid, bool) or not isinstance(ctid, int) or not CTID_MIN <= ctid <= CTID_MAX:
        raise InvalidArgument(f"invalid CTID {ctid!r}: use a number from {CTID_MIN} to {CTID_MAX}", field="ctid")
    return ctid


def validate_hostname(hostname: str) -> str:
    labels = hostname.split(".") if isinstance(hostname, str) else []
    if not labels or len(hostname) > _HOSTNAME_MAX or not all(_LABEL.match(x.lower()) for x in labels):
        raise InvalidArgument(f"invalid hostname {hostname!r}: use DNS labels separated by dots, "
                              "at most 64 characters in all, e.g. web1.example",
                              field="hostname")
    return hostname


def parse_ident(ident: str | int) -> int | str:
    """An instance is named by CTID or name everywhere: digits mean CTID."""
    s = str(ident)
    return int(s) if s.isascii() and s.isdigit() else s


_TAG_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:/-]{0,62}$")
MAX_TAGS = 50


def validate_tags(tags: dict) -> dict[str, str]:
    """Tags are short key=value labels (the EC2 layer and the dashboard use them too)."""
    if not isinstance(tags, dict):
        raise InvalidArgument("tags: an object of key -> value strings", field="tags")
    if len(tags) > MAX_TAGS:
        raise InvalidArgument(f"at most {MAX_TAGS} tags per instance", field="tags")
    for k, v in tags.items():
        if not isinstance(k, str) or not _TAG_KEY.match(k):
            raise InvalidArgument(f"tag key {k!r}: 1 to 63 letters, digits and _ . : / -, starting with a "
                                  "letter or digit", field="tags")
        if not isinstance(v, str) or len(v) > 255 or any(c in v for c in "\n\r\0"):
            raise InvalidArgument(f"tag {k}: the value must be a string of at most 255 characters without "
                                  "newlines", field="tags")
    return dict(tags)


def parse_tag(text: str) -> tuple[str, str]:
    """'k=v' -> (k, v), as the CLI and the list filter write tags."""
    k, sep, v = str(text).partition("=")
    if not sep:
        raise InvalidArgument(f"tag {text!r}: write it as key=value", field="tag")
    validate_tags({k: v})
    return k, v


def validate_description(text: str) -> str:
    if not isinstance(text, str) or len(text) > 1024 or "\0" in text:
        raise InvalidArgument("description: a string of at most 1024 characters", field="description")
    return text
