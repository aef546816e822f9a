"""Operations as the API shows them: owner-scoped reads, long-poll, cancel of pending ones."""
from __future__ import annotations

from ..domain.errors import InvalidState, NotFound
from .users import ROOT, Actor, etag
from .views import iso


def op_view(row: dict) -> dict:
    ctid = (row.get("args") or {}).get("ctid")
    return {
        "id": row["id"], "kind": row["kind"], "status": row["status"], "target": row["target"],
        "progress": row["progress"], "message": row["message"], "result": row["result"], "error": row["error"],
        "owner": row.get("owner") or "admin", "may_cancel": row["status"] == "pending",
        "resources": {"instances": [f"/1.0/instances/{ctid}"]} if ctid is not None else {},
        "created_at": iso(row["created_at"]), "updated_at": iso(row["updated_at"]),
    }


def op_etag(row: dict) -> str:
    return etag("operation", row["id"], row["status"], row["progress"], iso(row["updated_at"]))


class OperationService:
    def __init__(self, node):
        self.node = node
        self.store = node.store

    def row(self, op_id: str, actor: Actor = ROOT) -> dict:
        try:
            row = self.store.get_operation(op_id)
        except NotFound:
            row = None
        if row is None or not actor.owns(row):
            raise NotFound(f"no operation {op_id!r}; `GET /1.0/operations` lists the recent ones", operation=op_id)
        return row

    def list(self, actor: Actor = ROOT, status: str | None = None, limit: int = 100) -> list[dict]:
        return self.store.list_operations(status=status, limit=limit, owner=actor.scope)

    def wait(self, op_id: str, timeout: float, actor: Actor = ROOT) -> dict:
        self.row(op_id, actor)
        return self.node.runner.wait(op_id, timeout)

    def cancel(self, op_id: str, actor: Actor = ROOT) -> dict:
        row = self.row(op_id, actor)
        done = self.node.runner.cancel(op_id)
        if done is not None:
            return done
        row = self.store.get_operation(op_id)
        if row["status"] == "running":
            raise InvalidState(f"operation {op_id} is running and cannot be cancelled; wait for it", operation=op_id)
        raise InvalidState(f"operation {op_id} has finished ({row['status']}); nothing to cancel", operation=op_id)
