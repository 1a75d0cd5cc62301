"""The service's in-memory registry of opened datasets and loaded models: bounded, LRU.

A dataset merely picked on the Model page is read and registered; without a bound, every
file a user clicks through would stay in memory until the server stops. Entries that can be
read again (they have a path) are evicted least recently used first; entries that exist only
in memory (a query mapping's combined data and model) are evicted only when they alone
exceed the bound, so an active mapping survives a user browsing other files.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class BoundedRegistry(Generic[K, V]):
    """At most ``limit`` values, evicted least recently used (``get`` counts as a use).

    Parameters
    ----------
    limit
        Most values kept; a new one evicts the least recently used reloadable value, or the
        least recently used of all when none is reloadable.
    """

    def __init__(self, limit: int) -> None:
        if limit < 1:
            msg = f"the registry limit must be at least 1, got {limit}"
            raise ValueError(msg)
        self.limit = int(limit)
        self._items: OrderedDict[K, tuple[V, bool]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: K) -> V | None:
        """The value of ``key`` (now the most recently used), or ``None``."""
        with self._lock:
            item = self._items.get(key)
            if item is None:
                return None
            self._items.move_to_end(key)
            return item[0]

    def put(self, key: K, value: V, *, reloadable: bool) -> None:
        """Keep ``value`` under ``key``, evicting beyond the limit (never ``key`` itself)."""
        with self._lock:
            self._items[key] = (value, reloadable)
            self._items.move_to_end(key)
            while len(self._items) > self.limit:
                victims = [k for k, (_, r) in self._items.items() if r and k != key]
                if not victims:
                    victims = [k for k in self._items if k != key]
                del self._items[victims[0]]

    def pop(self, key: K, default: object = None) -> None:
        """Forget ``key`` (no error when absent)."""
        with self._lock:
            self._items.pop(key, None)

    def __contains__(self, key: object) -> bool:
        with self._lock:
            return key in self._items

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)
