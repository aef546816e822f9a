"""Tables and repository for volumes and instance mounts (migration 0007_images). A mount row goes
with its instance (ON DELETE CASCADE); a volume stays until deleted (refused while mounted)."""
from __future__ import annotations

from datetime import datetime

from sqlalchemy import Boolean, DateTime, ForeignKey, Integer, String, UniqueConstraint, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Mapped, mapped_column

from ..domain.errors import Conflict
from .db import Store, _row_dict
from .models import Base, InstanceRow, utcnow


class VolumeRow(Base):
    __tablename__ = "volumes"
    name: Mapped[str] = mapped_column(String(63), primary_key=True)
    owner: Mapped[str] = mapped_column(String(63), nullable=False, default="admin")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class MountRow(Base):
    __tablename__ = "instance_mounts"
    __table_args__ = (UniqueConstraint("ctid", "target", name="uq_instance_mounts_target"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    ctid: Mapped[int] = mapped_column(ForeignKey("instances.ctid", ondelete="CASCADE"), nullable=False, index=True)
    kind: Mapped[str] = mapped_column(String(8), nullable=False)          # volume | bind
    source: Mapped[str] = mapped_column(String(4096), nullable=False)    # volume name or node path
    target: Mapped[str] = mapped_column(String(4096), nullable=False)    # path inside
    readonly: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)


class ImageStore:
    def __init__(self, store: Store):
        self.store = store

    def volumes(self) -> list[dict]:
        with self.store._sessions() as s:
            return [_row_dict(r) for r in s.scalars(select(VolumeRow).order_by(VolumeRow.name))]

    def find_volume(self, name: str) -> dict | None:
        with self.store._sessions() as s:
            r = s.get(VolumeRow, name)
            return _row_dict(r) if r else None

    def add_volume(self, name: str, owner: str) -> dict:
        try:
            with self.store._tx() as s:
                if s.get(VolumeRow, name) is not None:
                    raise Conflict(f"volume {name!r} exists", volume=name)
                r = VolumeRow(name=name, owner=owner)
                s.add(r)
                s.flush()
                return _row_dict(r)
        except IntegrityError:
            raise Conflict(f"volume {name!r} exists", volume=name) from None

    def delete_volume(self, name: str) -> None:
        with self.store._tx() as s:
            users = self._users(s, name)
            if users:
                raise Conflict(f"volume {name!r} is used by {', '.join(users)}; destroy those instances first",
                               in_use_by=users)
            r = s.get(VolumeRow, name)
            if r is not None:
                s.delete(r)

    @staticmethod
    def _users(s, name: str) -> list[str]:
        q = (select(InstanceRow.name).join(MountRow, MountRow.ctid == InstanceRow.ctid)
             .where(MountRow.kind == "volume", MountRow.source == name).order_by(InstanceRow.name))
        return list(s.scalars(q))

    def volume_users(self, name: str) -> list[str]:
        with self.store._sessions() as s:
            return self._users(s, name)

    def add_mounts(self, ctid: int, mounts: list[dict]) -> None:
        try:
            with self.store._tx() as s:
                for m in mounts:
                    s.add(MountRow(ctid=ctid, **m))
        except IntegrityError:
            raise Conflict("two mounts on the same path inside") from None

    def mounts(self, ctid: int) -> list[dict]:
        with self.store._sessions() as s:
            return [_row_dict(r) for r in s.scalars(select(MountRow).where(MountRow.ctid == ctid).order_by(MountRow.id))]
