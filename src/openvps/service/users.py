"""Users, API tokens and quotas. The Unix socket acts as the built-in admin; TCP callers are the
user their bearer token belongs to. A non-admin sees only their own instances and operations:
anybody else's are reported as missing (404), so their existence does not leak."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass

from ..domain.errors import Conflict, Forbidden, InvalidArgument, NotFound, QuotaExceeded, Unauthenticated
from ..domain.instance import validate_name
from ..domain.sizes import format_size, parse_size
from .views import iso

ADMIN = "admin"
QUOTAS = ("max_instances", "max_ram", "max_public_ips")


@dataclass(frozen=True)
class Actor:
    name: str
    admin: bool

    def owns(self, row: dict) -> bool:
        return self.admin or row.get("owner", ADMIN) == self.name

    @property
    def scope(self) -> str | None:
        """The owner filter for lists: None (everything) for admins."""
        return None if self.admin else self.name


ROOT = Actor(ADMIN, True)      # the Unix socket and internal callers


def etag(*parts) -> str:
    return '"' + hashlib.sha1("|".join(str(p) for p in parts).encode()).hexdigest()[:20] + '"'


def user_view(row: dict) -> dict:
    return {"name": row["name"], "admin": bool(row["admin"]),
            "quotas": {k: row[k] for k in QUOTAS},
            "created_at": iso(row["created_at"]), "updated_at": iso(row["updated_at"])}


def user_etag(row: dict) -> str:
    return etag("user", row["name"], iso(row["updated_at"]), row["admin"], *[row[k] for k in QUOTAS])


def token_view(row: dict) -> dict:
    return {"id": row["id"], "user": row["user"], "prefix": row["prefix"], "description": row["description"],
            "created_at": iso(row["created_at"])}


class UserService:
    def __init__(self, node):
        self.node = node
        self.store = node.store
        self.store.ensure_user(ADMIN, admin=True)

    # ---- authentication
    def authenticate(self, authorization: str | None) -> Actor:
        if not authorization:
            raise Unauthenticated("this API needs `Authorization: Bearer <token>` over TCP; make a token with "
                                  "`openvps token create USER` on the node and set OPENVPS_TOKEN")
        scheme, _, secret = authorization.partition(" ")
        if scheme.lower() != "bearer" or not secret.strip():
            raise Unauthenticated("write the header as `Authorization: Bearer <token>`")
        user = self.store.token_user(secret.strip())
        if user is None:
            raise Unauthenticated("unknown or revoked token; make a new one with `openvps token create USER`")
        return Actor(user["name"], bool(user["admin"]))

    @staticmethod
    def require_admin(actor: Actor) -> None:
        if not actor.admin:
            raise Forbidden("only an admin may do this; ask your node's admin")

    # ---- users
    def _quotas(self, quotas: dict) -> dict:
        out = {}
        for k, v in quotas.items():
            if k not in QUOTAS:
                raise InvalidArgument(f"unknown quota {k!r}; known: {', '.join(QUOTAS)}", field=k)
            if v is None:
                out[k] = None
                continue
            if k == "max_ram":
                v = parse_size(v, k) if isinstance(v, str) else v
            if isinstance(v, bool) or not isinstance(v, int) or v < 0 or v > (1 << 62):
                raise InvalidArgument(f"{k}: a whole number >= 0 (or null for no limit)", field=k)
            out[k] = v
        return out

    def create(self, actor: Actor, name: str, admin: bool = False, quotas: dict | None = None) -> dict:
        self.require_admin(actor)
        try:
            validate_name(name)
        except InvalidArgument as e:
            raise InvalidArgument(f"user name: {e.message}", field="name") from None
        return self.store.add_user(name, admin=bool(admin), **self._quotas(quotas or {}))

    def get(self, actor: Actor, name: str) -> dict:
        if not actor.admin and name != actor.name:
            raise NotFound(f"no user {name!r}", user=name)
        return self.store.get_user(name)

    def list(self, actor: Actor) -> list[dict]:
        self.require_admin(actor)
        return self.store.list_users()

    def update(self, actor: Actor, name: str, *, admin: bool | None = None, quotas: dict | None = None,
               if_match: str | None = None) -> dict:
        self.require_admin(actor)
        row = self.store.get_user(name)
        check_if_match(if_match, user_etag(row))
        values = self._quotas(quotas or {})
        if admin is not None:
            if name == ADMIN and not admin:
                raise InvalidArgument("the built-in admin stays admin")
            values["admin"] = bool(admin)
        return self.store.update_user(name, **values)

    def delete(self, actor: Actor, name: str) -> None:
        self.require_admin(actor)
        if name == ADMIN:
            raise Conflict("the built-in admin cannot be deleted (the Unix socket acts as it)")
        self.store.delete_user(name)

    # ---- tokens
    def create_token(self, actor: Actor, user: str | None = None, description: str = "") -> tuple[dict, str]:
        user = user or actor.name
        if user != actor.name:
            self.require_admin(actor)
        if len(description) > 200:
            raise InvalidArgument("description: at most 200 characters", field="description")
        return self.store.add_token(user, description)

    def list_tokens(self, actor: Actor, user: str | None = None) -> list[dict]:
        if not actor.admin:
            user = actor.name
        return self.store.list_tokens(user)

    def revoke_token(self, actor: Actor, token_id: str) -> None:
        self.store.delete_token(token_id, user=actor.scope)

    # ---- quotas
    def has_quota(self, owner: str) -> bool:
        """Whether the user has an instance or RAM quota (else check_quota has nothing to check)."""
        user = self.store.find_user(owner)
        return user is not None and (user["max_instances"] is not None or user["max_ram"] is not None)

    def check_quota(self, owner: str, *, add_instances: int = 0, ram_delta: int = 0,
                    usage: tuple[int, int] | None = None) -> None:
        user = self.store.find_user(owner)
        if user is None or (user["max_instances"] is None and user["max_ram"] is None):
            return          # nothing to check: no usage query
        count, ram = usage if usage is not None else self.store.owner_usage(owner)
        if add_instances and user["max_instances"] is not None and count + add_instances > user["max_instances"]:
            raise QuotaExceeded(f"user {owner} may have {user['max_instances']} instance(s) and has {count}; "
                                "destroy one or ask an admin to raise max_instances",
                                quota="max_instances", limit=user["max_instances"], used=count)
        if ram_delta > 0 and user["max_ram"] is not None and ram + ram_delta > user["max_ram"]:
            raise QuotaExceeded(f"user {owner} may use {format_size(user['max_ram'])} of RAM in total, uses "
                                f"{format_size(ram)} and asks for {format_size(ram_delta)} more; lower --ram or "
                                "ask an admin to raise max_ram", quota="max_ram", limit=user["max_ram"], used=ram)


def check_if_match(if_match: str | None, current: str) -> None:
    from ..domain.errors import PreconditionFailed
    if if_match is None or if_match.strip() == "*":
        return
    tags = [t.strip().removeprefix("W/") for t in if_match.split(",")]
    if current not in tags:
        raise PreconditionFailed("the object changed since you read it (ETag mismatch); GET it again and retry",
                                 etag=current)
