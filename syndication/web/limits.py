"""In-process rate limits: at most N events per key (a client address, an email address) in a sliding window.

Memory is bounded: keys whose window has passed are dropped as new ones come, and past ``max_keys`` the least
recently seen key goes first. Per process and forgotten on restart, which suits a burst limit; the cap that must
hold across restarts (emails to one address per day) is kept in the store (``reserve_form_email``).
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable


class RateLimit:
    """``limit`` events per key within ``window_seconds``."""

    def __init__(
        self,
        limit: int,
        window_seconds: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        max_keys: int = 100_000,
    ) -> None:
        self.limit = limit
        self.window = window_seconds
        self.max_keys = max_keys
        self._clock = clock
        self._hits: OrderedDict[str, deque[float]] = OrderedDict()
        self._lock = threading.Lock()

    def allow(self, key: str) -> bool:
        """Count an event for ``key`` and say whether it is within the limit (a refused event is not counted)."""
        now = self._clock()
        with self._lock:
            hits = self._hits.get(key)
            if hits is None:
                hits = self._hits[key] = deque()
            self._hits.move_to_end(key)
            while hits and hits[0] <= now - self.window:
                hits.popleft()
            if len(hits) >= self.limit:
                return False
            hits.append(now)
            self._forget(now)
            return True

    def retry_after(self, key: str) -> int:
        """Seconds until ``key`` may have another event (0 when it may now)."""
        now = self._clock()
        with self._lock:
            hits = self._hits.get(key)
            if not hits or len(hits) < self.limit:
                return 0
            return max(1, int(hits[0] + self.window - now + 0.999))

    def __len__(self) -> int:
        return len(self._hits)

    def _forget(self, now: float) -> None:
        # Oldest-seen keys first: stop at the first one still inside its window, unless over max_keys.
        while self._hits:
            key, hits = next(iter(self._hits.items()))
            expired = not hits or hits[-1] <= now - self.window
            if not expired and len(self._hits) <= self.max_keys:
                break
            del self._hits[key]
