"""Store methods for API v1: users, tokens, events and the paged instance list (mixed into Store)."""
from __future__ import annotations

import hashlib
import secrets
from typing import Any

from sqlalchemy import delete, func, or_, select

from ..domain.errors import Conflict, NotFound
from .models import EventRow, InstanceRow, TokenRow, UserRow, utcnow

EVENTS_KEPT = 10_000          # bounded history
TOKEN_PREFIX = "ovps_"


def token_hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _d(row) -> dict[str, Any]:
    return {c.key: getattr(row, c.key) for c in row.__table__.columns}


class AccountsMixin:
    # ---- users
    def ensure_user(self, name: str, admin: bool = False) -> dict:
        with self._tx() as s:
            row = s.get(UserRow, name)
            if row is None:
                row = UserRow(name=name, admin=admin)
                s.add(row)
                s.flush()
            return _d(row)

    def add_user(self, name: str, **values) -> dict:
        with self._tx() as s:
            if s.get(UserRow, name) is not None:
                raise Conflict(f"a user named {name!r} exists already; pick another name", user=name)
            row = UserRow(name=name, **values)
            s.add(row)
            s.flush()
            return _d(row)

    def find_user(self, name: str) -> dict | None:
        with self._sessions() as s:
            row = s.get(UserRow, name)
            return _d(row) if row else None

    def get_user(self, name: str) -> dict:
        row = self.find_user(name)
        if row is None:
            raise NotFound(f"no user {name!r}; `openvps user list` shows the users", user=name)
        return row

    def list_users(self) -> list[dict]:
        with self._sessions() as s:
            return [_d(r) for r in s.scalars(select(UserRow).order_by(UserRow.name))]

    def update_user(self, name: str, **values) -> dict:
        with self._tx() as s:
            row = s.get(UserRow, name)
            if row is None:
                raise NotFound(f"no user {name!r}", user=name)
            for k, v in values.items():
                setattr(row, k, v)
            row.updated_at = utcnow()
            s.flush()
            return _d(row)

    def delete_user(self, name: str) -> None:
        with self._tx() as s:
            row = s.get(UserRow, name)
            if row is None:
                raise NotFound(f"no user {name!r}", user=name)
            owned = s.scalar(select(func.count()).select_from(InstanceRow).where(InstanceRow.owner == name))
            if owned:
                raise Conflict(f"user {name!r} owns {owned} instance(s); destroy them first", user=name, instances=owned)
            s.execute(delete(TokenRow).where(TokenRow.user == name))
            s.delete(row)

    def owner_usage(self, owner: str) -> tuple[int, int]:
        """(instances, total saved RAM in bytes) of one owner."""
        with self._sessions() as s:
            limits = list(s.scalars(select(InstanceRow.limits).where(InstanceRow.owner == owner)))
        return len(limits), sum(int((lim or {}).get("ram") or 0) for lim in limits)

    # ---- tokens (only the sha256 of the secret is stored; the secret is shown once)
    def add_token(self, user: str, description: str = "") -> tuple[dict, str]:
        secret = TOKEN_PREFIX + secrets.token_urlsafe(32)
        with self._tx() as s:
            if s.get(UserRow, user) is None:
                raise NotFound(f"no user {user!r}; create it with `openvps user create {user}`", user=user)
            row = TokenRow(id=secrets.token_hex(6), user=user, prefix=secret[:len(TOKEN_PREFIX) + 6],
                           hash=token_hash(secret), description=description)
            s.add(row)
            s.flush()
            return _d(row), secret

    def token_user(self, secret: str) -> dict | None:
        """The user a token belongs to, or None (unknown or revoked)."""
        with self._sessions() as s:
            row = s.scalar(select(TokenRow).where(TokenRow.hash == token_hash(secret)))
            if row is None:
                return None
            user = s.get(UserRow, row.user)
            return _d(user) if user else None

    def list_tokens(self, user: str | None = None) -> list[dict]:
        with self._sessions() as s:
            q = select(TokenRow).order_by(TokenRow.created_at)
            if user is not None:
                q = q.where(TokenRow.user == user)
            return [_d(r) for r in s.scalars(q)]

    def delete_token(self, token_id: str, user: str | None = None) -> None:
        with self._tx() as s:
            row = s.get(TokenRow, token_id)
            if row is None or (user is not None and row.user != user):
                raise NotFound(f"no token {token_id!r}; `openvps token list` shows them", token=token_id)
            s.delete(row)

    # ---- instances, a page at a time (core rows: no ORM objects on the list path)
    def list_instances_page(self, *, after: int | None = None, limit: int = 500, state: str | None = None,
                            template: str | None = None, name_prefix: str | None = None,
                            owner: str | None = None, tags=None) -> list[dict]:
        t = InstanceRow.__table__
        q = select(t).order_by(t.c.ctid).limit(limit)
        if after is not None:
            q = q.where(t.c.ctid > after)
        if state:
            q = q.where(t.c.state == state)
        if template:
            q = q.where(t.c.template == template)
        if name_prefix:
            esc = name_prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            q = q.where(t.c.name.like(esc + "%", escape="\\"))
        if owner:
            q = q.where(t.c.owner == owner)
        for k, v in (tags.items() if isinstance(tags, dict) else tags or []):
            q = q.where(t.c.tags[k].as_string() == v)
        with self.engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(q)]

    # ---- events
    def add_event(self, type: str, instance: str | None = None, data: dict | None = None) -> dict:
        with self._tx() as s:
            return self._add_event(s, type, instance, data)

    @staticmethod
    def _add_event(s, type: str, instance: str | None = None, data: dict | None = None) -> dict:
        """Insert an event in the caller's transaction (a write and the event that reports it: one commit)."""
        row = EventRow(time=utcnow(), type=type, instance=instance, data=data or {})
        s.add(row)
        s.flush()
        if row.id % 500 == 0:      # keep a bounded history, pruned now and then
            s.execute(delete(EventRow).where(EventRow.id <= row.id - EVENTS_KEPT))
        return _d(row)

    def events_after(self, after: int = 0, types: list[str] | None = None, instance: str | None = None,
                     limit: int = 1000, owner: str | None = None) -> list[dict]:
        q = select(EventRow).where(EventRow.id > after).order_by(EventRow.id).limit(limit)
        if types:
            q = q.where(or_(*[EventRow.type == t if not t.endswith(".*") else EventRow.type.like(t[:-1] + "%")
                              for t in types]))
        if instance:
            q = q.where(or_(EventRow.instance == instance, EventRow.data["name"].as_string() == instance))
        if owner:
            q = q.where(EventRow.data["owner"].as_string() == owner)
        with self._sessions() as s:
            return [_d(r) for r in s.scalars(q)]

    def last_event_id(self) -> int:
        with self._sessions() as s:
            return s.scalar(select(func.max(EventRow.id))) or 0
