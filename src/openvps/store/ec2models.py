"""EC2-layer tables (migration 0009_ec2): SigV4 access keys per user, and the EC2 objects that map
AWS-style ids to openvps objects (instances, reservations, key pairs, security groups, elastic
addresses). The openvps objects stay the truth; these rows hold only what EC2 adds on top."""
from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, DateTime, ForeignKey, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from .models import Base, utcnow


class AccessKeyRow(Base):
    """The secret is stored as is: SigV4 needs it to recompute the HMAC (the store is root-only)."""
    __tablename__ = "access_keys"
    id: Mapped[str] = mapped_column(String(20), primary_key=True)
    secret: Mapped[str] = mapped_column(String(40), nullable=False)
    user: Mapped[str] = mapped_column(String(63), ForeignKey("users.name", ondelete="CASCADE"), nullable=False,
                                      index=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Ec2ObjectRow(Base):
    """kind: instance | keypair | group | address | image. ref: the openvps key (instance name, public
    address). name: the user-given name (key pairs, groups, images), unique per owner and kind; for an
    adopted instance the key "<instance name>@<created_at>", so two listings cannot adopt it twice."""
    __tablename__ = "ec2_objects"
    __table_args__ = (UniqueConstraint("kind", "owner", "name", name="uq_ec2_objects_name"),)
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16), nullable=False, index=True)
    owner: Mapped[str] = mapped_column(String(63), nullable=False, index=True)
    name: Mapped[str | None] = mapped_column(String(255), nullable=True)
    ref: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)
    data: Mapped[dict] = mapped_column(JSON, nullable=False, default=dict)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
