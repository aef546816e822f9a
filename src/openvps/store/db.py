"""The store: one SQLAlchemy engine, migrated by Alembic at open, and small repository methods.

Rows leave this module as plain dicts so no session or lazy load escapes into other layers."""
from __future__ import annotations

import threading
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

from sqlalchemy import create_engine, event, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from ..domain.errors import Conflict, InsufficientResources, NotFound
from .accounts import AccountsMixin
from .models import InstanceRow, LimitEventRow, OperationRow, utcnow

_MIGRATIONS = Path(__file__).parent / "migrations"
# the event that reports a write, made from the written row: (type, instance, data)
EventFor = Callable[[dict], tuple[str, str | None, dict]]


def instance_event(type: str) -> EventFor:
    """A lifecycle event of the instance just written (as Node.event records it)."""
    return lambda row: (type, str(row["ctid"]), {"name": row["name"], "owner": row.get("owner") or "admin"})


def _row_dict(row) -> dict[str, Any]:
    return {c.key: getattr(row, c.key) for c in row.__table__.columns}


class Store(AccountsMixin):
    def __init__(self, url: str):
        self.url = url
        kwargs: dict[str, Any] = {}
        if url.startswith("sqlite"):
            Path(url.split("///", 1)[1]).parent.mkdir(parents=True, exist_ok=True)
            kwargs["connect_args"] = {"check_same_thread": False, "timeout": 30}
        self.engine = create_engine(url, **kwargs)
        if url.startswith("sqlite"):
            event.listen(self.engine, "connect", _sqlite_pragmas)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        self._write_lock = threading.Lock()   # SQLite has one writer; serialise ours to avoid busy errors
        self.migrate()

    def migrate(self) -> None:
        from alembic import command
        from alembic.config import Config as AlembicConfig

        cfg = AlembicConfig()
        cfg.set_main_option("script_location", str(_MIGRATIONS))
        with self.engine.begin() as conn:
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "head")

    def close(self) -> None:
        self.engine.dispose()

    @contextmanager
    def _tx(self) -> Iterator[Session]:
        with self._write_lock, self._sessions.begin() as s:
            yield s

    # ---- instances
    def add_instance(self, **values) -> dict:
        try:
            with self._tx() as s:
                if s.get(InstanceRow, values["ctid"]) is not None:
                    raise Conflict(f"CTID {values['ctid']} is taken; pick another or omit it", ctid=values["ctid"])
                if s.scalar(select(InstanceRow).where(InstanceRow.name == values["name"])) is not None:
                    raise Conflict(f"an instance named {values['name']!r} exists already; pick another name",
                                   name=values["name"])
                check = values.pop("quota_check", None)
                if check is not None:   # re-checked inside the insert: concurrent creates cannot overshoot
                    limits = list(s.scalars(select(InstanceRow.limits).where(InstanceRow.owner == values["owner"])))
                    check(len(limits), sum(int((lim or {}).get("ram") or 0) for lim in limits))
                if values.get("uid_base") == "auto":
                    values = dict(values)
                    values["uid_base"] = self._free_uid_base(s, *values.pop("idmap_range"))
                row = InstanceRow(**values)
                s.add(row)
                s.flush()
                return _row_dict(row)
        except IntegrityError as e:
            raise Conflict(f"instance {values['name']!r} or CTID {values['ctid']} exists already") from e

    @staticmethod
    def _free_uid_base(s: Session, base: int, size: int, limit: int) -> int:
        """The lowest free uid range, chosen inside the insert's transaction (no two instances share one)."""
        used = set(s.scalars(select(InstanceRow.uid_base).where(InstanceRow.uid_base.is_not(None))))
        for slot in range(limit):
            if base + slot * size not in used:
                return base + slot * size
        raise InsufficientResources("no free uid range left for another unprivileged instance")

    def next_ctid(self, start: int = 100) -> int:
        with self._sessions() as s:
            used = set(s.scalars(select(InstanceRow.ctid).where(InstanceRow.ctid >= start)))
        n = start
        while n in used:
            n += 1
        return n

    def find_instance(self, ident: int | str) -> dict | None:
        with self._sessions() as s:
            if isinstance(ident, int):
                row = s.get(InstanceRow, ident)
            else:
                row = s.scalar(select(InstanceRow).where(InstanceRow.name == ident))
            return _row_dict(row) if row else None

    def get_instance(self, ident: int | str) -> dict:
        row = self.find_instance(ident)
        if row is None:
            raise NotFound(f"no instance {ident!r}; `openvps list` shows the instances", instance=str(ident))
        return row

    def list_instances(self) -> list[dict]:
        with self._sessions() as s:
            return [_row_dict(r) for r in s.scalars(select(InstanceRow).order_by(InstanceRow.ctid))]

    def instance_limits(self) -> list[dict]:
        """Every instance's limits, and nothing else (admission control sums them on each create)."""
        with self.engine.connect() as conn:
            return [lim or {} for lim in conn.scalars(select(InstanceRow.limits))]

    def _update(self, model, key, what: str, values: dict, event: EventFor | None = None) -> dict:
        with self._tx() as s:
            row = s.get(model, key)
            if row is None:
                raise NotFound(f"no {what} {key}")
            for k, v in values.items():
                setattr(row, k, v)
            row.updated_at = utcnow()
            s.flush()
            out = _row_dict(row)
            if event is not None:
                self._add_event(s, *event(out))
            return out

    def update_instance(self, ctid: int, *, event: str | None = None, **values) -> dict:
        """event: also record this lifecycle event of the instance, in the same transaction."""
        return self._update(InstanceRow, ctid, "instance", values, instance_event(event) if event else None)

    def delete_instance(self, ctid: int) -> None:
        with self._tx() as s:
            row = s.get(InstanceRow, ctid)
            if row is not None:
                s.delete(row)

    def instances_using_template(self, template: str, owner: str | None = None) -> list[str]:
        with self._sessions() as s:
            q = select(InstanceRow.name).where(InstanceRow.template == template)
            if owner is not None:
                q = q.where(InstanceRow.owner == owner)
            return list(s.scalars(q))

    def count_instances(self) -> int:
        from sqlalchemy import func
        with self._sessions() as s:
            return s.scalar(select(func.count()).select_from(InstanceRow)) or 0

    # ---- operations
    def add_operation(self, kind: str, target: str = "", args: dict | None = None, owner: str = "admin",
                      event: EventFor | None = None) -> dict:
        with self._tx() as s:
            row = OperationRow(id=str(uuid.uuid4()), kind=kind, status="pending", target=target,
                               progress=0.0, message="", args=args or {}, owner=owner)
            s.add(row)
            s.flush()
            out = _row_dict(row)
            if event is not None:
                self._add_event(s, *event(out))
            return out

    def update_operation(self, op_id: str, *, event: EventFor | None = None, **values) -> dict:
        return self._update(OperationRow, op_id, "operation", values, event)

    def transition_operation(self, op_id: str, frm: tuple[str, ...], to: str, **values) -> dict | None:
        """Compare-and-set the status: the row if it was in `frm` (now `to`), else None."""
        with self._tx() as s:
            row = s.get(OperationRow, op_id)
            if row is None or row.status not in frm:
                return None
            row.status = to
            for k, v in values.items():
                setattr(row, k, v)
            row.updated_at = utcnow()
            s.flush()
            return _row_dict(row)

    def get_operation(self, op_id: str) -> dict:
        with self._sessions() as s:
            row = s.get(OperationRow, op_id)
            if row is None:
                raise NotFound(f"no operation {op_id}", operation=op_id)
            return _row_dict(row)

    def list_operations(self, status: str | None = None, limit: int = 100, owner: str | None = None) -> list[dict]:
        with self._sessions() as s:
            q = select(OperationRow).order_by(OperationRow.created_at.desc()).limit(limit)
            if status:
                q = q.where(OperationRow.status == status)
            if owner:
                q = q.where(OperationRow.owner == owner)
            return [_row_dict(r) for r in s.scalars(q)]

    # ---- limit events (limit hits, OOM kills); lifecycle events are in accounts.py
    def add_limit_event(self, **values) -> dict:
        with self._tx() as s:
            row = LimitEventRow(**values)
            s.add(row)
            s.flush()
            return _row_dict(row)

    def list_limit_events(self, ctid: int | None = None, limit: int = 100) -> list[dict]:
        """Newest first."""
        with self._sessions() as s:
            q = select(LimitEventRow).order_by(LimitEventRow.id.desc()).limit(limit)
            if ctid is not None:
                q = q.where(LimitEventRow.ctid == ctid)
            return [_row_dict(r) for r in s.scalars(q)]


def _sqlite_pragmas(dbapi_conn, _record):
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()
