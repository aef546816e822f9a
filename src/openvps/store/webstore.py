"""Store methods for the web dashboard: passwords, browser sessions, bookmarks and the round-robin
samples. Wraps the one Store (its engine and write lock) like NetStore does."""
from __future__ import annotations

import hashlib
import secrets
from datetime import datetime, timedelta, timezone

from sqlalchemy import delete, select
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import IntegrityError

from .db import Store, _row_dict
from .models import UserRow
from .webmodels import BookmarkRow, SampleRow, WebSessionRow

SESSION_PREFIX = "ovpss_"


def secret_hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _aware(t: datetime) -> datetime:
    return t if t.tzinfo else t.replace(tzinfo=timezone.utc)


class WebStore:
    def __init__(self, store: Store):
        self.store = store

    # ---- passwords (the hash string comes from service/webauth.py)
    def set_password_hash(self, user: str, value: str | None) -> bool:
        with self.store._tx() as s:
            row = s.get(UserRow, user)
            if row is None:
                return False
            row.password_hash = value
            # a new password ends the user's browser sessions
            s.execute(delete(WebSessionRow).where(WebSessionRow.user == user))
            return True

    def password_hash(self, user: str) -> str | None:
        with self.store._sessions() as s:
            row = s.get(UserRow, user)
            return row.password_hash if row else None

    # ---- sessions: the cookie holds a random secret; we keep its sha256, the user and the CSRF token
    def add_session(self, user: str, ttl: float) -> tuple[str, str]:
        secret = SESSION_PREFIX + secrets.token_urlsafe(32)
        csrf = secrets.token_urlsafe(32)
        now = datetime.now(timezone.utc)
        with self.store._tx() as s:
            s.execute(delete(WebSessionRow).where(WebSessionRow.expires_at < now))
            s.add(WebSessionRow(hash=secret_hash(secret), user=user, csrf=csrf, created_at=now,
                                expires_at=now + timedelta(seconds=ttl)))
        return secret, csrf

    def session(self, secret: str) -> dict | None:
        """The live session for a cookie value (with its user's row), or None."""
        with self.store._sessions() as s:
            row = s.get(WebSessionRow, secret_hash(secret))
            if row is None or _aware(row.expires_at) <= datetime.now(timezone.utc):
                return None
            user = s.get(UserRow, row.user)
            if user is None:
                return None
            return {"user": user.name, "admin": bool(user.admin), "csrf": row.csrf,
                    "expires_at": _aware(row.expires_at)}

    def delete_session(self, secret: str) -> None:
        with self.store._tx() as s:
            s.execute(delete(WebSessionRow).where(WebSessionRow.hash == secret_hash(secret)))

    # ---- bookmarks
    def bookmarks(self, ctids: list[int] | None = None) -> dict[int, list[dict]]:
        q = select(BookmarkRow).order_by(BookmarkRow.ctid, BookmarkRow.pos)
        if ctids is not None:
            q = q.where(BookmarkRow.ctid.in_(ctids))
        out: dict[int, list[dict]] = {}
        with self.store._sessions() as s:
            for r in s.scalars(q):
                out.setdefault(r.ctid, []).append({"label": r.label, "url": r.url})
        return out

    def set_bookmarks(self, ctid: int, items: list[dict]) -> None:
        with self.store._tx() as s:
            s.execute(delete(BookmarkRow).where(BookmarkRow.ctid == ctid))
            for i, b in enumerate(items):
                s.add(BookmarkRow(ctid=ctid, pos=i, label=b["label"], url=b["url"]))

    # ---- samples: one ring per instance and resolution, overwritten slot by slot
    def put_samples(self, t: float, rings: list[tuple[int, int]], batch: dict[int, dict]) -> int:
        """Write one sample per instance ({ctid: values}) into each (res, slots) ring, in one
        transaction; returns how many instances were written (one destroyed meanwhile is skipped)."""
        if not batch:
            return 0
        rows = [{"ctid": ctid, "res": res, "slot": int(t // res) % slots, "time": t, **values}
                for ctid, values in batch.items() for res, slots in rings]
        try:
            self._upsert(rows)
            return len(batch)
        except IntegrityError:      # an instance was destroyed meanwhile (foreign key): one by one
            if len(batch) == 1:
                return 0
            return sum(self.put_samples(t, rings, {c: v}) for c, v in batch.items())

    def put_sample(self, ctid: int, t: float, rings: list[tuple[int, int]], values: dict) -> bool:
        return self.put_samples(t, rings, {ctid: values}) == 1

    def _upsert(self, rows: list[dict]) -> None:
        stmt = sqlite_insert(SampleRow.__table__)
        stmt = stmt.on_conflict_do_update(index_elements=["ctid", "res", "slot"],
                                          set_={k: stmt.excluded[k] for k in rows[0] if k not in
                                                ("ctid", "res", "slot")})
        with self.store._tx() as s:
            s.execute(stmt, rows)

    def samples(self, ctid: int, res: int, since: float) -> list[dict]:
        with self.store._sessions() as s:
            q = (select(SampleRow).where(SampleRow.ctid == ctid, SampleRow.res == res, SampleRow.time >= since)
                 .order_by(SampleRow.time))
            return [_row_dict(r) for r in s.scalars(q)]

    def latest_samples(self, res: int) -> dict[int, dict]:
        """The newest sample of every instance at one resolution (the inventory's RAM/swap columns)."""
        out: dict[int, dict] = {}
        with self.store._sessions() as s:
            for r in s.scalars(select(SampleRow).where(SampleRow.res == res)):
                if r.ctid not in out or r.time > out[r.ctid]["time"]:
                    out[r.ctid] = _row_dict(r)
        return out
