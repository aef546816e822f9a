"""Token buckets per key. The TCP API limits each user (rate_limit per second, rate_burst at once; over
the limit a request answers 429 too_many_requests with Retry-After; the Unix socket, root and the
node's own tools, is never limited). The dashboard's login spends one only per failed attempt."""
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
        self._spend(key, 1.0, f"too many requests from {key}: at most {self.rate:g} per second "
                               f"(bursts of {self.burst})")

    def check(self, key: str, what: str) -> None:
        """Raise RateLimited if key's bucket is empty, without spending (see spend)."""
        self._spend(key, 0.0, what)

    def spend(self, key: str) -> None:
        """Spend one token even from an empty bucket (e.g. a failed login: the next attempt waits)."""
        if self.rate > 0:
            with self._lock:
                tokens, now = self._refill(key)
                self._buckets[key] = (tokens - 1.0, now)
                if len(self._buckets) > 10_000:      # forget full buckets: no growth from many keys
                    self._buckets = {k: v for k, v in self._buckets.items() if v[0] < self.burst - 1}

    def _refill(self, key: str) -> tuple[float, float]:
        now = self.clock()
        tokens, at = self._buckets.get(key, (float(self.burst), now))
        return min(float(self.burst), tokens + (now - at) * self.rate), now

    def _spend(self, key: str, cost: float, what: str) -> None:
        if self.rate <= 0:
            return
        with self._lock:
            tokens, now = self._refill(key)
            if tokens < 1.0:
                self._buckets[key] = (tokens, now)
                wait = math.ceil((1.0 - tokens) / self.rate)
                raise RateLimited(f"{what}; retry in {wait} s", retry_after=wait)
            self._buckets[key] = (tokens - cost, now)
