"""Browser logins: user passwords (scrypt), sessions behind an HttpOnly cookie, and the CSRF rule.

A session is made by a token or a user's password. Its cookie authenticates the dashboard and the
browser's own calls to /1.0; every unsafe request (anything but GET/HEAD/OPTIONS) must also carry
the session's CSRF token (header X-CSRF-Token, or the form field csrf), compared in constant time."""
from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

from ..domain.errors import Forbidden, InvalidArgument, NotFound, Unauthenticated
from ..store.webstore import WebStore
from .ratelimit import RateLimiter
from .users import Actor

COOKIE = "ovps_session"
CSRF_HEADER = "x-csrf-token"
SAFE_METHODS = ("GET", "HEAD", "OPTIONS")
SESSION_TTL = 12 * 3600          # seconds
MIN_PASSWORD = 8
# scrypt cost: n=2**14, r=8, p=1 (16 MiB, ~50 ms): slows guessing, cheap for one login
_N, _R, _P = 1 << 14, 8, 1


def hash_password(password: str) -> str:
    salt = secrets.token_bytes(16)
    dk = hashlib.scrypt(password.encode(), salt=salt, n=_N, r=_R, p=_P, dklen=32)
    b64 = base64.b64encode
    return f"scrypt${_N}${_R}${_P}${b64(salt).decode()}${b64(dk).decode()}"


def verify_password(password: str, stored: str | None) -> bool:
    if not stored:
        return False
    try:
        algo, n, r, p, salt, dk = stored.split("$")
        if algo != "scrypt":
            return False
        want = base64.b64decode(dk)
        got = hashlib.scrypt(password.encode(), salt=base64.b64decode(salt), n=int(n), r=int(r), p=int(p),
                             dklen=len(want))
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(got, want)


def validate_password(password) -> str:
    if not isinstance(password, str) or len(password) < MIN_PASSWORD or len(password) > 1024:
        raise InvalidArgument(f"password: from {MIN_PASSWORD} to 1024 characters", field="password")
    if any(c in password for c in "\0\n\r"):
        raise InvalidArgument("password: no newlines or NUL characters", field="password")
    try:
        password.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidArgument("password: invalid Unicode (a lone surrogate)", field="password") from None
    return password


def csrf_ok(session: dict, method: str, presented: str | None) -> bool:
    """Safe methods pass; unsafe ones need the session's CSRF token."""
    if method.upper() in SAFE_METHODS:
        return True
    return bool(presented) and hmac.compare_digest(str(presented).encode(), session["csrf"].encode())


# failed logins: per user name and per client address, a bucket of LOGIN_FAILURES that refills one
# per LOGIN_REFILL seconds; an empty bucket refuses logins (429) until it refills (scrypt alone
# still lets a botnet guess ~20 passwords a second per core)
LOGIN_FAILURES, LOGIN_REFILL = 5, 30.0
ADDRESS_FAILURES = 20


class WebAuth:
    def __init__(self, node, users, clock=None):
        self.node = node
        self.users = users
        self.store = WebStore(node.store)
        kw = {"clock": clock} if clock else {}
        self.user_failures = RateLimiter(1 / LOGIN_REFILL, LOGIN_FAILURES, **kw)
        self.address_failures = RateLimiter(1 / LOGIN_REFILL, ADDRESS_FAILURES, **kw)

    # ---- passwords
    def set_password(self, actor: Actor, name: str, password: str | None) -> None:
        """Admins set anybody's; a user their own. None removes it (token logins only)."""
        if name != actor.name and not actor.admin:
            raise NotFound(f"no user {name!r}", user=name)
        value = hash_password(validate_password(password)) if password is not None else None
        if not self.store.set_password_hash(name, value):
            raise NotFound(f"no user {name!r}; `openvps user list` shows the users", user=name)

    # ---- sessions
    def login(self, user: str | None, password: str | None, token: str | None,
              address: str = "") -> tuple[str, str, Actor]:
        """(cookie secret, csrf token, actor) for a token or a user + password. address: the
        client's, for throttling failed attempts."""
        if not (token or (user and password)):
            raise InvalidArgument("log in with a user name and password, or with an API token")
        keys = [(self.address_failures, f"address {address}")] if address else []
        if user and not token:
            keys.append((self.user_failures, f"user {user}"))
        for limiter, key in keys:
            limiter.check(key, f"too many failed logins for {key}")
        try:
            if token:
                actor = self.users.authenticate(f"Bearer {token.strip()}")
            else:
                row = self.node.store.find_user(user)
                stored = self.store.password_hash(user) if row else None
                if not verify_password(password, stored):
                    raise Unauthenticated("wrong user name or password (or the user has none: "
                                          "`openvps user passwd USER` sets one)")
                actor = Actor(row["name"], bool(row["admin"]))
        except Unauthenticated:
            for limiter, key in keys:
                limiter.spend(key)
            raise
        secret, csrf = self.store.add_session(actor.name, SESSION_TTL)
        return secret, csrf, actor

    def session(self, secret: str | None) -> dict | None:
        return self.store.session(secret) if secret else None

    def actor(self, secret: str | None, method: str, csrf: str | None) -> Actor:
        """The actor of a cookie session; unsafe methods must present its CSRF token."""
        s = self.session(secret)
        if s is None:
            raise Unauthenticated("your session ended; log in again")
        if not csrf_ok(s, method, csrf):
            raise Forbidden("missing or wrong CSRF token (send the X-CSRF-Token header the page gives you)")
        return Actor(s["user"], s["admin"])

    def logout(self, secret: str | None) -> None:
        if secret:
            self.store.delete_session(secret)
