"""/1.0/events: Server-Sent Events (resumable with Last-Event-ID) or JSON polling; /metrics."""
from __future__ import annotations

import asyncio
import json
import time
from typing import Optional

from fastapi import APIRouter, Depends, Header, Query, Request
from fastapi.responses import JSONResponse, PlainTextResponse, StreamingResponse

from ..domain.errors import InvalidArgument
from ..service import metrics
from ..service.users import Actor
from ..service.views import iso
from .auth import admin_actor, current_actor

router = APIRouter()

HEARTBEAT = 15.0


def event_view(row: dict) -> dict:
    return {"id": row["id"], "time": iso(row["time"]), "type": row["type"], "instance": row["instance"],
            "data": row["data"]}


def _after(after: Optional[int], last_event_id: Optional[str], store) -> int:
    if last_event_id is not None:
        if not last_event_id.strip().isdigit():
            raise InvalidArgument("Last-Event-ID: the id of the last event you received (a number)")
        return int(last_event_id)
    return store.last_event_id() if after is None else after


@router.get("/1.0/events", summary="Lifecycle and operation events: Server-Sent Events (default) or JSON",
            description="SSE: each event has `id:` (monotonic), `event:` (its type) and `data:` (JSON). Reconnect "
                        "with `Last-Event-ID` (or `after`) to get everything after that id that is still in the "
                        "bounded history (the last 10,000). Without either the stream starts now. "
                        "`format=json` answers one page: {items, last_id}; with `timeout` it waits for the first "
                        "event. The stream ends after `timeout` seconds (clients reconnect with Last-Event-ID).")
async def events(req: Request, actor: Actor = Depends(current_actor),
                 type: Optional[str] = Query(None, max_length=500,
                                             description="comma-separated types; `instance.*` matches a prefix"),
                 instance: Optional[str] = Query(None, max_length=64, description="CTID or name"),
                 after: Optional[int] = Query(None, ge=0, le=1 << 62, description="events after this id"),
                 format: str = Query("sse", pattern="^(sse|json)$"),
                 limit: int = Query(1000, ge=1, le=10000, description="JSON page size"),
                 timeout: Optional[float] = Query(None, ge=0, le=86400,
                                        description="seconds: SSE stream length (default 3600); JSON long-poll (0)"),
                 last_event_id: Optional[str] = Header(None, max_length=32)):
    store = req.app.state.node.store
    types = [t.strip() for t in (type or "").split(",") if t.strip()] or None
    start = _after(after, last_event_id, store)

    def fetch(after_id: int, n: int) -> list[dict]:
        return store.events_after(after_id, types=types, instance=instance, limit=n, owner=actor.scope)

    if format == "json":
        deadline = time.monotonic() + (timeout or 0)
        rows = await asyncio.to_thread(fetch, start, limit)
        while not rows and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
            rows = await asyncio.to_thread(fetch, start, limit)
        return JSONResponse({"items": [event_view(r) for r in rows],
                             "last_id": rows[-1]["id"] if rows else start})

    async def stream():
        last, beat = start, time.monotonic()
        deadline = time.monotonic() + (3600 if timeout is None else timeout)
        yield "retry: 1000\n\n"
        while time.monotonic() < deadline:
            rows = await asyncio.to_thread(fetch, last, 500)
            for r in rows:
                last = r["id"]
                yield f"id: {r['id']}\nevent: {r['type']}\ndata: {json.dumps(event_view(r))}\n\n"
            if rows:
                continue
            if await req.is_disconnected():
                return
            if time.monotonic() - beat > HEARTBEAT:
                beat = time.monotonic()
                yield ": keep-alive\n\n"
            await asyncio.sleep(0.2)

    return StreamingResponse(stream(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


@router.get("/metrics", summary="Prometheus metrics: instances, node, API requests (admins only over TCP)",
            response_class=PlainTextResponse)
def get_metrics(req: Request, _actor: Actor = Depends(admin_actor)):
    return PlainTextResponse(metrics.render(req.app.state.node, req.app.state.request_stats),
                             media_type="text/plain; version=0.0.4; charset=utf-8")
