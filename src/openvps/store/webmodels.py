"""Dashboard tables (migration 0008): browser sessions, per-instance bookmarks and the round-robin
samples behind the graphs. Bookmarks and samples go with their instance (ON DELETE CASCADE)."""
from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, DateTime, Float, ForeignKey, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from .models import Base, utcnow


class WebSessionRow(Base):
    """A logged-in browser. Only the sha256 of the cookie's secret is stored."""
    __tablename__ = "web_sessions"
    hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    user: Mapped[str] = mapped_column(String(63), ForeignKey("users.name", ondelete="CASCADE"), nullable=False,
                                      index=True)
    csrf: Mapped[str] = mapped_column(String(64), nullable=False)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)


class BookmarkRow(Base):
    __tablename__ = "bookmarks"
    ctid: Mapped[int] = mapped_column(ForeignKey("instances.ctid", ondelete="CASCADE"), primary_key=True)
    pos: Mapped[int] = mapped_column(Integer, primary_key=True)
    label: Mapped[str] = mapped_column(String(100), nullable=False)
    url: Mapped[str] = mapped_column(Text, nullable=False)


class SampleRow(Base):
    """One slot of an instance's ring at one resolution (seconds): slot = time // res % slots."""
    __tablename__ = "samples"
    ctid: Mapped[int] = mapped_column(ForeignKey("instances.ctid", ondelete="CASCADE"), primary_key=True)
    res: Mapped[int] = mapped_column(Integer, primary_key=True)
    slot: Mapped[int] = mapped_column(Integer, primary_key=True)
    time: Mapped[float] = mapped_column(Float, nullable=False)
    cpu_ns: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    memory: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    swap: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    rx: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    tx: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
