"""Failed tokens and logins counted per address."""

from __future__ import annotations

import threading
import time
from collections import deque

from fastapi import HTTPException


class Doorman:
    """Failures of one kind (`what`: failed tokens, or failed console logins: each has its
    own), per address: after `limit` within `window` seconds, `check` answers that address
    429 (with Retry-After) until the window has passed."""

    def __init__(self, limit: int = 10, window: float = 60.0, what: str = "tokens") -> None:
        self.limit, self.window, self.what = limit, window, what
        self._failed: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def _recent(self, who: str, now: float) -> deque[float]:
        seen = self._failed.setdefault(who, deque())
        while seen and seen[0] <= now - self.window:
            seen.popleft()
        return seen

    def check(self, who: str) -> None:
        now = time.monotonic()
        with self._lock:
            seen = self._recent(who, now)
            if len(seen) >= self.limit:
                wait = max(1, int(seen[0] + self.window - now + 1))
                raise HTTPException(429, f"too many failed {self.what} from this address",
                                    headers={"Retry-After": str(wait)})  # fmt: skip

    def failed(self, who: str) -> None:
        now = time.monotonic()
        with self._lock:
            self._recent(who, now).append(now)
            if len(self._failed) > 10_000:  # addresses that stopped trying: let them go
                for gone in [k for k, v in self._failed.items() if not v][:5000]:
                    del self._failed[gone]

