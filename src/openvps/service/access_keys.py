"""Access keys for the EC2-compatible API (SigV4): an id and a secret per key, several per user.
Users manage their own; admins anybody's. The secret is shown once at creation; it is stored (the
store is root-only) because SigV4 verification recomputes the HMAC with it."""
from __future__ import annotations

from ..domain.errors import NotFound
from ..store.ec2store import Ec2Store
from .users import Actor
from .views import iso


def key_view(row: dict) -> dict:
    return {"access_key_id": row["id"], "user": row["user"], "created_at": iso(row["created_at"])}


class AccessKeyService:
    def __init__(self, node):
        self.node = node
        self.store = Ec2Store(node.store)

    def _check(self, actor: Actor, user: str) -> None:
        if not actor.admin and user != actor.name:
            raise NotFound(f"no user {user!r}", user=user)     # another user's: 404, no existence leak
        self.node.store.get_user(user)

    def create(self, actor: Actor, user: str) -> dict:
        self._check(actor, user)
        row, secret = self.store.add_access_key(user)
        return {**key_view(row), "secret_access_key": secret}

    def list(self, actor: Actor, user: str) -> list[dict]:
        self._check(actor, user)
        return [key_view(r) for r in self.store.list_access_keys(user)]

    def delete(self, actor: Actor, user: str, key_id: str) -> None:
        self._check(actor, user)
        self.store.delete_access_key(user, key_id)
