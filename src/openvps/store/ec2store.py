"""Store access for the EC2 layer: access keys and the id mapping table (plain dicts out)."""
from __future__ import annotations

import secrets
import string

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError

from ..domain.errors import Conflict, NotFound
from .db import Store, _row_dict
from .ec2models import AccessKeyRow, Ec2ObjectRow
from .models import UserRow

_UPPER = string.ascii_uppercase + string.digits
_SECRET = string.ascii_letters + string.digits + "+/"


class Ec2Store:
    def __init__(self, store: Store):
        self.store = store

    # ---- access keys (the id looks like AWS's: 20 upper-case characters; the secret 40)
    def add_access_key(self, user: str) -> tuple[dict, str]:
        key_id = "OVPS" + "".join(secrets.choice(_UPPER) for _ in range(16))
        secret = "".join(secrets.choice(_SECRET) for _ in range(40))
        with self.store._tx() as s:
            if s.get(UserRow, user) is None:
                raise NotFound(f"no user {user!r}; create it with `openvps user create {user}`", user=user)
            row = AccessKeyRow(id=key_id, secret=secret, user=user)
            s.add(row)
            s.flush()
            return _row_dict(row), secret

    def access_key(self, key_id: str) -> dict | None:
        with self.store._sessions() as s:
            row = s.get(AccessKeyRow, key_id)
            return _row_dict(row) if row else None

    def list_access_keys(self, user: str) -> list[dict]:
        with self.store._sessions() as s:
            q = select(AccessKeyRow).where(AccessKeyRow.user == user).order_by(AccessKeyRow.created_at)
            return [_row_dict(r) for r in s.scalars(q)]

    def delete_access_key(self, user: str, key_id: str) -> None:
        with self.store._tx() as s:
            row = s.get(AccessKeyRow, key_id)
            if row is None or row.user != user:
                raise NotFound(f"user {user} has no access key {key_id!r}; `openvps user keys list {user}` "
                               "shows them", key=key_id)
            s.delete(row)

    # ---- EC2 objects
    def add(self, kind: str, id: str, owner: str, *, name: str | None = None, ref: str | None = None,
            data: dict | None = None) -> dict:
        try:
            with self.store._tx() as s:
                row = Ec2ObjectRow(id=id, kind=kind, owner=owner, name=name, ref=ref, data=data or {})
                s.add(row)
                s.flush()
                return _row_dict(row)
        except IntegrityError:
            raise Conflict(f"{kind} {name or id!r} exists already", kind=kind, name=name) from None

    def get(self, id: str) -> dict | None:
        with self.store._sessions() as s:
            row = s.get(Ec2ObjectRow, id)
            return _row_dict(row) if row else None

    def find(self, kind: str, *, owner: str | None = None, ref: str | None = None,
             name: str | None = None) -> list[dict]:
        q = select(Ec2ObjectRow).where(Ec2ObjectRow.kind == kind).order_by(Ec2ObjectRow.created_at, Ec2ObjectRow.id)
        if owner is not None:
            q = q.where(Ec2ObjectRow.owner == owner)
        if ref is not None:
            q = q.where(Ec2ObjectRow.ref == ref)
        if name is not None:
            q = q.where(Ec2ObjectRow.name == name)
        with self.store._sessions() as s:
            return [_row_dict(r) for r in s.scalars(q)]

    def update(self, id: str, **values) -> dict:
        with self.store._tx() as s:
            row = s.get(Ec2ObjectRow, id)
            if row is None:
                raise NotFound(f"no {id}")
            for k, v in values.items():
                setattr(row, k, v)
            s.flush()
            return _row_dict(row)

    def delete(self, id: str) -> None:
        with self.store._tx() as s:
            s.execute(delete(Ec2ObjectRow).where(Ec2ObjectRow.id == id))
