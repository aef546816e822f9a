"""The store: one SQLAlchemy engine, migrated by Alembic at open, and small repository methods.

Rows leave this module as plain dicts so no session or lazy load escapes into other layers."""
from __future__ import annotations

import threading
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from sqlalchemy import create_engine, event, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from ..domain.errors import Conflict, NotFound
from .models import EventRow, InstanceRow, OperationRow, utcnow

_MIGRATIONS = Path(__file__).parent / "migrations"


def _row_dict(row) -> dict[str, Any]:
    return {c.key: getattr(row, c.key) for c in row.__table__.columns}


class Store:
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
                row = InstanceRow(**values)
                s.add(row)
                s.flush()
                return _row_dict(row)
        except IntegrityError as e:
            raise Conflict(f"instance {values['name']!r} or CTID {values['ctid']} exists already") from e

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

    def update_instance(self, ctid: int, **values) -> dict:
        with self._tx() as s:
            row = s.get(InstanceRow, ctid)
            if row is None:
                raise NotFound(f"no instance {ctid}")
            for k, v in values.items():
                setattr(row, k, v)
            row.updated_at = utcnow()
            s.flush()
            return _row_dict(row)

    def delete_instance(self, ctid: int) -> None:
        with self._tx() as s:
            row = s.get(InstanceRow, ctid)
            if row is not None:
                s.delete(row)

    def instances_using_template(self, template: str) -> list[str]:
        with self._sessions() as s:
            return list(s.scalars(select(InstanceRow.name).where(InstanceRow.template == template)))

    # ---- operations
    def add_operation(self, kind: str, target: str = "", args: dict | None = None) -> dict:
        with self._tx() as s:
            row = OperationRow(id=str(uuid.uuid4()), kind=kind, status="pending", target=target,
                               progress=0.0, message="", args=args or {})
            s.add(row)
            s.flush()
            return _row_dict(row)

    def update_operation(self, op_id: str, **values) -> dict:
        with self._tx() as s:
            row = s.get(OperationRow, op_id)
            if row is None:
                raise NotFound(f"no operation {op_id}")
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

    def list_operations(self, status: str | None = None, limit: int = 100) -> list[dict]:
        with self._sessions() as s:
            q = select(OperationRow).order_by(OperationRow.created_at.desc()).limit(limit)
            if status:
                q = q.where(OperationRow.status == status)
            return [_row_dict(r) for r in s.scalars(q)]


    # ---- events (limit hits, OOM kills)
    def add_event(self, **values) -> dict:
        with self._tx() as s:
            row = EventRow(**values)
            s.add(row)
            s.flush()
            return _row_dict(row)

    def list_events(self, ctid: int | None = None, limit: int = 100) -> list[dict]:
        """Newest first."""
        with self._sessions() as s:
            q = select(EventRow).order_by(EventRow.id.desc()).limit(limit)
            if ctid is not None:
                q = q.where(EventRow.ctid == ctid)
            return [_row_dict(r) for r in s.scalars(q)]


def _sqlite_pragmas(dbapi_conn, _record):
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()
