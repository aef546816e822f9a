"""Per-user rate limiting of the TCP API: a token bucket per user (rate_limit per second, rate_burst
at once). Over the limit a request answers 429 too_many_requests with Retry-After. The Unix socket
(root, the node's own tools) is never limited."""
from __future__ import annotations

import math
import threading
import time

from ..domain.errors import RateLimited


class RateLimiter:
    def __init__(self, rate: float, burst: int, clock=time.monotonic):
        self.rate, self.burst, self.clock = float(rate), max(1, int(burst)), clock
        self._buckets: dict[str, tuple[float, float]] = {}    # user -> (tokens, at)
        self._lock = threading.Lock()

    def take(self, key: str) -> None:
        """Spend one request of key's bucket, or raise RateLimited saying when to retry."""
        if self.rate <= 0:
            return
        now = self.clock()
        with self._lock:
            tokens, at = self._buckets.get(key, (float(self.burst), now))
            tokens = min(float(self.burst), tokens + (now - at) * self.rate)
            if tokens < 1.0:
                self._buckets[key] = (tokens, now)
                wait = math.ceil((1.0 - tokens) / self.rate)
                raise RateLimited(f"too many requests from {key}: at most {self.rate:g} per second "
                                  f"(bursts of {self.burst}); retry in {wait} s", retry_after=wait)
            self._buckets[key] = (tokens - 1.0, now)
