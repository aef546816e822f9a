"""SQLAlchemy tables. Changes go through Alembic migrations in store/migrations."""
from __future__ import annotations

from datetime import datetime, timezone

from sqlalchemy import JSON, BigInteger, Boolean, DateTime, Float, ForeignKey, Integer, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class Base(DeclarativeBase):
    pass


class InstanceRow(Base):
    __tablename__ = "instances"
    ctid: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    name: Mapped[str] = mapped_column(String(63), unique=True, nullable=False)
    template: Mapped[str] = mapped_column(String(64), nullable=False)
    state: Mapped[str] = mapped_column(String(16), nullable=False)
    hostname: Mapped[str] = mapped_column(String(253), nullable=False)
    init: Mapped[str] = mapped_column(String(16), nullable=False, default="busybox")
    stop_signal: Mapped[str] = mapped_column(String(16), nullable=False, default="SIGTERM")
    limits: Mapped[dict] = mapped_column(JSON, nullable=False)       # saved config
    live: Mapped[dict] = mapped_column(JSON, nullable=False, default=dict)  # in effect while running
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, onupdate=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    privileged: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    uid_base: Mapped[int | None] = mapped_column(Integer, nullable=True, unique=True)  # its host uid range
    owner: Mapped[str] = mapped_column(String(63), nullable=False, default="admin", index=True)
    description: Mapped[str] = mapped_column(String(1024), nullable=False, default="")
    tags: Mapped[dict] = mapped_column(JSON, nullable=False, default=dict)


class OperationRow(Base):
    __tablename__ = "operations"
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    kind: Mapped[str] = mapped_column(String(32), nullable=False)
    status: Mapped[str] = mapped_column(String(16), nullable=False)
    target: Mapped[str] = mapped_column(String(64), nullable=False, default="")
    progress: Mapped[float] = mapped_column(Float, nullable=False, default=0.0)
    message: Mapped[str] = mapped_column(Text, nullable=False, default="")
    args: Mapped[dict] = mapped_column(JSON, nullable=False, default=dict)
    result: Mapped[dict | None] = mapped_column(JSON, nullable=True)
    error: Mapped[dict | None] = mapped_column(JSON, nullable=True)
    owner: Mapped[str] = mapped_column(String(63), nullable=False, default="admin")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, onupdate=utcnow)


class UserRow(Base):
    __tablename__ = "users"
    name: Mapped[str] = mapped_column(String(63), primary_key=True)
    admin: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    max_instances: Mapped[int | None] = mapped_column(Integer, nullable=True)
    max_ram: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    max_public_ips: Mapped[int | None] = mapped_column(Integer, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, onupdate=utcnow)


class TokenRow(Base):
    __tablename__ = "tokens"
    id: Mapped[str] = mapped_column(String(16), primary_key=True)
    user: Mapped[str] = mapped_column(String(63), ForeignKey("users.name", ondelete="CASCADE"), nullable=False)
    prefix: Mapped[str] = mapped_column(String(16), nullable=False)
    hash: Mapped[str] = mapped_column(String(64), nullable=False, unique=True)
    description: Mapped[str] = mapped_column(String(200), nullable=False, default="")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    last_used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class EventRow(Base):
    """Lifecycle and operation events, a bounded history with a monotonic id (SSE Last-Event-ID)."""
    __tablename__ = "events"
    __table_args__ = {"sqlite_autoincrement": True}
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    time: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, nullable=False)
    type: Mapped[str] = mapped_column(String(64), nullable=False)
    instance: Mapped[str | None] = mapped_column(String(64), nullable=True)
    data: Mapped[dict] = mapped_column(JSON, nullable=False, default=dict)


class LimitEventRow(Base):
    """A limit hit or an OOM kill seen in an instance's counters (kept when the instance is destroyed)."""
    __tablename__ = "limit_events"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    time: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, index=True)
    ctid: Mapped[int] = mapped_column(Integer, nullable=False, index=True)
    instance: Mapped[str] = mapped_column(String(63), nullable=False)
    resource: Mapped[str] = mapped_column(String(32), nullable=False)
    kind: Mapped[str] = mapped_column(String(16), nullable=False)
    count: Mapped[int] = mapped_column(Integer, nullable=False, default=1)
    process: Mapped[str] = mapped_column(Text, nullable=False, default="")
    message: Mapped[str] = mapped_column(Text, nullable=False, default="")
    advice: Mapped[str] = mapped_column(Text, nullable=False, default="")


# the web dashboard (migration 0008): a password for browser logins
UserRow.password_hash = mapped_column(String(200), nullable=True)
