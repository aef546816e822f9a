"""Networking tables (migration 0002): networks, instance interfaces and their addresses, DNS
settings, port forwards, public (elastic) addresses and firewall rules. Rows that belong to an
instance go with it (ON DELETE CASCADE), so a destroyed or rolled-back instance leaves no lease."""
from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, Boolean, DateTime, ForeignKey, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from .models import Base, utcnow

_CT = "instances.ctid"


class NetworkRow(Base):
    __tablename__ = "networks"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(15), unique=True, nullable=False)
    subnet: Mapped[str] = mapped_column(String(18), unique=True, nullable=False)
    gateway: Mapped[str] = mapped_column(String(15), nullable=False)
    nat: Mapped[bool] = mapped_column(Boolean, nullable=False, default=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class NicRow(Base):
    __tablename__ = "nics"
    ctid: Mapped[int] = mapped_column(ForeignKey(_CT, ondelete="CASCADE"), primary_key=True)
    idx: Mapped[int] = mapped_column(Integer, primary_key=True)           # eth<idx>
    network_id: Mapped[int] = mapped_column(ForeignKey("networks.id"), nullable=False)
    mac: Mapped[str] = mapped_column(String(17), nullable=False)


class AddressRow(Base):
    __tablename__ = "addresses"
    __table_args__ = (UniqueConstraint("network_id", "address", name="uq_addresses_network_address"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    network_id: Mapped[int] = mapped_column(ForeignKey("networks.id"), nullable=False)
    address: Mapped[str] = mapped_column(String(15), nullable=False)
    ctid: Mapped[int] = mapped_column(ForeignKey(_CT, ondelete="CASCADE"), nullable=False)
    nic: Mapped[int] = mapped_column(Integer, nullable=False)


class InstanceDnsRow(Base):
    __tablename__ = "instance_dns"
    ctid: Mapped[int] = mapped_column(ForeignKey(_CT, ondelete="CASCADE"), primary_key=True)
    nameservers: Mapped[list] = mapped_column(JSON, nullable=False, default=list)
    searchdomain: Mapped[str | None] = mapped_column(String(253), nullable=True)


class ForwardRow(Base):
    __tablename__ = "forwards"
    __table_args__ = (UniqueConstraint("proto", "port", name="uq_forwards_proto_port"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    ctid: Mapped[int] = mapped_column(ForeignKey(_CT, ondelete="CASCADE"), nullable=False)
    proto: Mapped[str] = mapped_column(String(3), nullable=False)
    port: Mapped[int] = mapped_column(Integer, nullable=False)            # on the node
    target_port: Mapped[int] = mapped_column(Integer, nullable=False)     # in the instance
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class PublicAddressRow(Base):
    __tablename__ = "public_addresses"
    address: Mapped[str] = mapped_column(String(15), primary_key=True)
    ctid: Mapped[int | None] = mapped_column(ForeignKey(_CT, ondelete="SET NULL"), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    owner: Mapped[str] = mapped_column(String(63), nullable=False, default="admin", index=True)  # migration 0006


class FirewallRuleRow(Base):
    __tablename__ = "firewall_rules"
    __table_args__ = (UniqueConstraint("ctid", "proto", "port", "source", name="uq_firewall_rule"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    ctid: Mapped[int] = mapped_column(ForeignKey(_CT, ondelete="CASCADE"), nullable=False)
    proto: Mapped[str] = mapped_column(String(3), nullable=False)
    port: Mapped[int] = mapped_column(Integer, nullable=False)
    source: Mapped[str] = mapped_column(String(18), nullable=False)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
