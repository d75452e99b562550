"""A tiny per-process cache whose entries expire after a few seconds.

Used on hot paths (the webhook receiver) for lookups that change rarely: a token's role
and a source's declaration. A change made in another process is seen within the TTL; a
change made in this process clears the cache at once.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Hashable
from typing import Any


class TTLCache:
    """Values by key, each kept for ``ttl`` seconds after it was computed."""

    def __init__(self, ttl: float = 1.0, max_entries: int = 10_000):
        self.ttl = ttl
        self.max_entries = max_entries
        self._data: dict[Hashable, tuple[float, Any]] = {}
        self._lock = threading.Lock()

    def get(self, key: Hashable, compute: Callable[[], Any]) -> Any:
        """The cached value of ``key``, computing (and caching) it when missing or expired.

        Exceptions from ``compute`` are not cached: a refused token is checked every time.
        """
        now = time.monotonic()
        hit = self._data.get(key)
        if hit is not None and hit[0] > now:
            return hit[1]
        value = compute()
        with self._lock:
            if len(self._data) >= self.max_entries:
                self._data.clear()
            self._data[key] = (now + self.ttl, value)
        return value

    def clear(self) -> None:
        """Forget every entry."""
        with self._lock:
            self._data.clear()
