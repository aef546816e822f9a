"""Operations as data, run in fixed phases (the Ganeti habit):

  check_args -> prereq (store only, under the target's lock) -> execute (OS calls, with undo steps).

The faces submit an Operation; the runner stores it, answers at once with its id (202), runs it on
a worker thread and records progress and outcome in the store, so a restart does not lose them."""
from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable

from ..domain.errors import OpenVPSError
from ..store.db import Store

log = logging.getLogger("openvps.ops")

DONE = ("success", "failure", "cancelled")


class Reverter:
    """Undo steps registered as work proceeds; run in reverse on failure (Incus's revert.Reverter)."""

    def __init__(self):
        self._steps: list[tuple[str, Callable[[], Any]]] = []

    def add(self, what: str, fn: Callable[[], Any]) -> None:
        self._steps.append((what, fn))

    def revert(self) -> None:
        for what, fn in reversed(self._steps):
            try:
                fn()
            except Exception:   # keep undoing: one failed step must not strand the others
                log.exception("undo step %r failed", what)
        self._steps.clear()

    def success(self) -> None:
        self._steps.clear()

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is not None:
            self.revert()
        return False


@dataclass
class Operation:
    kind: str                                   # "instance.create", "instance.start", ...
    target: str = ""                            # instance ident or template name
    args: dict = field(default_factory=dict)
    lock: str = ""                              # lock key, e.g. "instance:101"
    owner: str = "admin"                        # the user who asked for it (sees it in the API)
    on_cancel: Callable[[], Any] | None = None  # undo the reservation made before submit, if cancelled


class Progress:
    """What a handler uses to report progress; throttled so a chatty build does not flood the store."""

    def __init__(self, store: Store, op_id: str):
        # the clock starts with the operation: one that ends within 0.2 s writes no progress at all
        self.store, self.op_id, self._last = store, op_id, time.monotonic()

    def __call__(self, fraction: float, message: str = "") -> None:
        now = time.monotonic()
        if now - self._last < 0.2 and fraction < 1.0:
            return
        self._last = now
        self.store.update_operation(self.op_id, progress=round(max(0.0, min(1.0, fraction)), 3), message=message)


Handler = Callable[[Operation, Progress], dict | None]


class _Done(threading.Event):
    """Set when an operation ended; carries its final row for the waiters."""
    row: dict | None = None


class Runner:
    def __init__(self, store: Store, workers: int = 8):
        self.store = store
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="op")
        self._locks: dict[str, threading.Lock] = {}
        self._locks_guard = threading.Lock()
        self._done: dict[str, threading.Event] = {}
        self._ops: dict[str, Operation] = {}

    def lock(self, key: str) -> threading.Lock:
        with self._locks_guard:
            return self._locks.setdefault(key, threading.Lock())

    def submit(self, op: Operation, handler: Handler) -> dict:
        row = self.store.add_operation(op.kind, op.target, op.args, owner=op.owner,
                                       event=operation_event("operation.created"))
        event = self._done[row["id"]] = _Done()
        self._ops[row["id"]] = op
        self.pool.submit(self._run, row["id"], op, handler, event)
        return row

    def _event(self, type: str, row: dict) -> None:
        try:
            self.store.add_event(*operation_event(type)(row))
        except Exception:   # events are best effort: never fail an operation for one
            log.exception("could not record event %s", type)

    def cancel(self, op_id: str) -> dict | None:
        """Cancel a pending operation (not yet running): the row, or None if it is past pending."""
        row = self.store.transition_operation(op_id, ("pending",), "cancelled", message="cancelled",
                                              error={"code": "cancelled", "message": "cancelled by request",
                                                     "details": {}})
        if row is None:
            return None
        op = self._ops.get(op_id)
        if op is not None and op.on_cancel:
            try:
                op.on_cancel()
            except Exception:
                log.exception("undo after cancelling %s failed", op_id)
        self._event("operation.finished", row)
        return row

    def _run(self, op_id: str, op: Operation, handler: Handler, event: _Done) -> None:
        try:
            lock = self.lock(op.lock) if op.lock else None
            if lock:
                lock.acquire()   # pending (cancellable) until the target is free
            try:
                if self.store.transition_operation(op_id, ("pending",), "running") is None:
                    return       # cancelled while it waited
                result = handler(op, Progress(self.store, op_id))
            finally:
                if lock:
                    lock.release()
            event.row = self._finish(op_id, status="success", progress=1.0, result=result or {})
        except OpenVPSError as e:
            event.row = self._finish(op_id, status="failure", error=e.to_dict(), message=e.message)
        except Exception as e:   # a bug or an unwrapped OS error: record it, never lose the outcome
            log.exception("operation %s (%s) crashed", op_id, op.kind)
            err = {"code": "internal", "message": f"{type(e).__name__}: {e}", "details": {}}
            event.row = self._finish(op_id, status="failure", error=err, message=err["message"])
        finally:
            event.set()
            self._done.pop(op_id, None)
            self._ops.pop(op_id, None)

    def _finish(self, op_id: str, **values) -> dict:
        """The outcome and its operation.finished event: one commit."""
        return self.store.update_operation(op_id, event=operation_event("operation.finished"), **values)

    def wait(self, op_id: str, timeout: float) -> dict:
        event = self._done.get(op_id)
        if event is not None and event.wait(timeout) and event.row is not None:
            return dict(event.row)      # the final row, as written: no read back
        return self.store.get_operation(op_id)

    def shutdown(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=False)


def operation_event(type: str):
    """The event reporting an operation row (for Store.add_operation/update_operation's event=)."""
    def make(row: dict) -> tuple[str, str | None, dict]:
        ctid = row["args"].get("ctid") if isinstance(row.get("args"), dict) else None
        return (type, str(ctid) if ctid is not None else None,
                {"operation": row["id"], "kind": row["kind"], "status": row["status"],
                 "name": row["target"], "owner": row.get("owner", "admin")})
    return make
