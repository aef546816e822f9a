"""Action name -> handler(ctx, params). Each area module registers its actions here."""
from __future__ import annotations

from typing import Callable

ACTIONS: dict[str, Callable] = {}


def action(name: str):
    def deco(fn):
        ACTIONS[name] = fn
        return fn
    return deco


def tag_list(tags: dict) -> list[dict]:
    return [{"key": k, "value": v} for k, v in sorted(tags.items())]


def page(items: list, p, id_of, default: int = 1000, minimum: int = 5) -> tuple[list, str | None]:
    """MaxResults/NextToken over a stable order: the token is the last id handed out."""
    import base64
    limit = p.int("MaxResults")
    token = p.str("NextToken")
    from .wire import Ec2Error
    if limit is not None and not minimum <= limit <= 1000:
        raise Ec2Error("InvalidParameterValue", f"MaxResults: from {minimum} to 1000")
    start = 0
    if token:
        try:
            last = base64.urlsafe_b64decode(token.encode() + b"==").decode()
        except Exception:
            raise Ec2Error("InvalidParameterValue", "NextToken: not a token this endpoint gave out") from None
        ids = [id_of(x) for x in items]
        if last not in ids:
            raise Ec2Error("InvalidParameterValue", "NextToken: not a token this endpoint gave out (or its item is gone)")
        start = ids.index(last) + 1
    limit = limit or default
    chunk = items[start:start + limit]
    more = start + limit < len(items)
    nxt = base64.urlsafe_b64encode(id_of(chunk[-1]).encode()).decode().rstrip("=") if more and chunk else None
    return chunk, nxt
