"""Results cache: diskcache on disk, a small LRU in memory, one computation per missing key.

Values are pickled by this module and stored as bytes together with a tag
``"<schema>:<sha256>:<nbytes>"`` in the same diskcache row, so a truncated, modified or
half-written entry fails its checksum and is recomputed instead of being served.

A missing key is computed once even when many threads or processes ask at the same time:
:meth:`ResultCache.get_or_compute` takes a per-key lock (a thread lock plus an ``flock`` on a
file under ``locks/``, which the OS releases if the holder dies), checks the cache again and
only then computes. Waiters find the stored result when the lock is released.

``size_limit`` bounds what diskcache stores; other stores that keep files for the cache's
entries (the denoised RNA blocks) count against the same limit through a write hook
(:meth:`ResultCache.add_write_hook`): after each :meth:`~ResultCache.set` they evict what
they hold, or the least recently used entries (:meth:`ResultCache.oldest`), to fit.

The cache folder is trusted like the code itself (values are unpickled); checksums protect
against corruption, not against someone who can write to the folder.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import pickle
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from dashboard.backend.errors import CacheError
from dashboard.backend.fingerprint import SCHEMA_VERSION

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: fall back to diskcache's lock
    fcntl = None  # type: ignore[assignment]

logger = logging.getLogger(__name__)

T = TypeVar("T")
_MISSING = object()
_TAG_PREFIX = f"s{SCHEMA_VERSION}"


@dataclass
class CacheStats:
    """Counters of one :class:`ResultCache` instance (used by tests and the benchmark)."""

    hits: int = 0
    memory_hits: int = 0
    misses: int = 0
    computed: int = 0
    corrupt: int = 0


class ResultCache:
    """diskcache-backed store of computed results with validation and per-key locking.

    Parameters
    ----------
    directory
        diskcache folder (created if needed).
    locks_dir
        Folder of per-key lock files (default: ``<directory>/../locks``).
    size_limit
        Bytes before diskcache evicts entries.
    eviction_policy
        diskcache eviction policy (``"least-recently-used"``, ``"least-recently-stored"``...).
    memory_items
        Entries also kept in process memory (0 disables the memory layer).
    lock_timeout
        Seconds to wait for another computation of the same key before giving up.
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        locks_dir: str | os.PathLike[str] | None = None,
        size_limit: int = 8 * 1024**3,
        eviction_policy: str = "least-recently-used",
        memory_items: int = 32,
        lock_timeout: float = 3600.0,
    ) -> None:
        import diskcache

        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.locks_dir = Path(locks_dir) if locks_dir else self.directory.parent / "locks"
        self.locks_dir.mkdir(parents=True, exist_ok=True)
        self.lock_timeout = float(lock_timeout)
        self.size_limit = int(size_limit)
        self._write_hooks: list[Callable[[str], None]] = []
        self._disk = diskcache.Cache(
            str(self.directory),
            size_limit=int(size_limit),
            eviction_policy=eviction_policy,
            timeout=60,
            # keep SQLite's write-ahead log small: checkpoint every 128 pages and truncate
            # it to 1 MiB after (the default lets it grow to 4 MB and stay there)
            sqlite_wal_autocheckpoint=128,
            sqlite_journal_size_limit=1024**2,
        )
        self._memory: OrderedDict[str, Any] = OrderedDict()
        self._memory_items = int(memory_items)
        self._guard = threading.Lock()
        self._thread_locks: dict[str, threading.Lock] = {}
        self.stats = CacheStats()

    # ------------------------------------------------------------------ basics
    def __contains__(self, key: str) -> bool:
        return self.get(key, _MISSING) is not _MISSING

    def __len__(self) -> int:
        return len(self._disk)

    def close(self) -> None:
        """Close the diskcache connection (the object stays usable; it reopens lazily)."""
        self._disk.close()

    def volume(self) -> int:
        """Bytes the cache uses on disk."""
        return int(self._disk.volume())

    def disk_usage(self) -> int:
        """Bytes under the cache folder that diskcache accounts for, plus its SQLite
        write-ahead log (which :meth:`volume` leaves out)."""
        extra = 0
        for name in ("cache.db-wal", "cache.db-shm"):
            with contextlib.suppress(OSError):
                extra += (self.directory / name).stat().st_size
        return self.volume() + extra

    def oldest(self, n: int) -> list[tuple[float, str]]:
        """The ``n`` entries evicted first, as ``(time, key)``: least recently used (read
        from disk; reads from the memory layer do not count), or least recently stored for
        the other eviction policies."""
        lru = self._disk.eviction_policy == "least-recently-used"
        column = "access_time" if lru else "store_time"
        rows = self._disk._sql(
            f"SELECT {column}, key FROM Cache ORDER BY {column} LIMIT ?",
            (int(n),),
        ).fetchall()
        return [(float(t), k) for t, k in rows if isinstance(k, str)]

    def add_write_hook(self, hook: Callable[[str], None]) -> None:
        """Call ``hook(key)`` after each :meth:`set` (errors are logged, not raised)."""
        self._write_hooks.append(hook)

    def clear(self) -> None:
        """Drop every entry (disk and memory)."""
        with self._guard:
            self._memory.clear()
        self._disk.clear()

    def delete(self, key: str) -> None:
        """Drop one entry (disk and memory)."""
        with self._guard:
            self._memory.pop(key, None)
        self._disk.delete(key)

    def forget(self, key: str) -> None:
        """Drop one key from the in-process layer only (the next read re-validates disk)."""
        with self._guard:
            self._memory.pop(key, None)

    def forget_memory(self) -> None:
        """Empty the in-process layer only (next reads come from disk and are re-validated)."""
        with self._guard:
            self._memory.clear()

    def entry_path(self, key: str) -> Path | None:
        """File holding a large entry's bytes (``None`` if stored inline or absent)."""
        row = self._disk._sql(
            "SELECT filename FROM Cache WHERE key = ? AND raw = 1", (key,)
        ).fetchone()
        if not row or not row[0]:
            return None
        return self.directory / row[0]

    # ---------------------------------------------------------------- get / set
    def get(self, key: str, default: Any = None) -> Any:
        """Validated value for ``key``, or ``default`` when missing or corrupt.

        A corrupt entry (bad tag, checksum mismatch, unreadable file, unpicklable bytes) is
        deleted so the next :meth:`get_or_compute` recomputes it.
        """
        with self._guard:
            if key in self._memory:
                self._memory.move_to_end(key)
                self.stats.hits += 1
                self.stats.memory_hits += 1
                return self._memory[key]
        value = self._read_disk(key)
        if value is _MISSING:
            self.stats.misses += 1
            return default
        self.stats.hits += 1
        self._remember(key, value)
        return value

    def set(self, key: str, value: Any) -> None:
        """Store ``value`` (pickled, checksummed) on disk and in memory."""
        payload = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
        tag = f"{_TAG_PREFIX}:{hashlib.sha256(payload).hexdigest()}:{len(payload)}"
        self._disk.set(key, payload, tag=tag, retry=True)
        self._remember(key, value)
        for hook in self._write_hooks:
            try:
                hook(key)
            except Exception:
                logger.exception("after storing %s: a cache write hook failed", key)

    def get_or_compute(
        self,
        key: str,
        compute: Callable[[], T],
        *,
        on_wait: Callable[[], None] | None = None,
    ) -> T:
        """Cached value for ``key``; computes and stores it once if missing.

        Concurrent callers (threads or processes) of the same missing key wait for the one
        that computes. ``on_wait`` is called once if this caller has to wait. If ``compute``
        raises, nothing is stored and earlier entries stay as they were.
        """
        value = self.get(key, _MISSING)
        if value is not _MISSING:
            return value
        with self.lock(key, on_wait=on_wait):
            value = self.get(key, _MISSING)
            if value is not _MISSING:
                return value
            t0 = time.perf_counter()
            value = compute()
            self.stats.computed += 1
            self.set(key, value)
            logger.info("computed %s in %.2fs", key.split("/", 1)[0], time.perf_counter() - t0)
            return value

    # -------------------------------------------------------------------- locks
    @contextlib.contextmanager
    def lock(self, key: str, *, on_wait: Callable[[], None] | None = None) -> Iterator[None]:
        """Exclusive per-key lock across threads of this process and across processes."""
        with self._guard:
            tlock = self._thread_locks.setdefault(key, threading.Lock())
        waited = False
        deadline = time.monotonic() + self.lock_timeout
        if not tlock.acquire(blocking=False):
            waited = True
            if on_wait is not None:
                on_wait()
            if not tlock.acquire(timeout=max(self.lock_timeout, 0.001)):
                msg = (
                    f"waited {self.lock_timeout:.0f}s for another computation of {key!r}; "
                    "raise lock_timeout or retry later"
                )
                raise CacheError(msg)
        try:
            with self._process_lock(key, deadline, None if waited else on_wait):
                yield
        finally:
            tlock.release()

    @contextlib.contextmanager
    def try_lock(self, key: str) -> Iterator[bool]:
        """:meth:`lock` without waiting: yields whether it was taken (False while another
        thread or process, this thread included, holds ``key``)."""
        with self._guard:
            tlock = self._thread_locks.setdefault(key, threading.Lock())
        if not tlock.acquire(blocking=False):
            yield False
            return
        try:
            if fcntl is None:  # pragma: no cover - non-POSIX
                yield True
                return
            fd = os.open(self._lock_path(key), os.O_RDWR | os.O_CREAT, 0o644)
            try:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    yield False
                    return
                try:
                    yield True
                finally:
                    fcntl.flock(fd, fcntl.LOCK_UN)
            finally:
                os.close(fd)
        finally:
            tlock.release()

    def _lock_path(self, key: str) -> Path:
        return self.locks_dir / (hashlib.sha256(key.encode()).hexdigest()[:32] + ".lock")

    @contextlib.contextmanager
    def _process_lock(
        self, key: str, deadline: float, on_wait: Callable[[], None] | None
    ) -> Iterator[None]:
        if fcntl is None:  # pragma: no cover - non-POSIX
            import diskcache

            with diskcache.Lock(self._disk, f"__lock__/{key}", expire=self.lock_timeout):
                yield
            return
        fd = os.open(self._lock_path(key), os.O_RDWR | os.O_CREAT, 0o644)
        try:
            notified = False
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if not notified and on_wait is not None:
                        on_wait()
                    notified = True
                    if time.monotonic() > deadline:
                        msg = (
                            f"waited {self.lock_timeout:.0f}s for another process computing "
                            f"{key!r}; raise lock_timeout or retry later"
                        )
                        raise CacheError(msg) from None
                    time.sleep(0.02)
            try:
                yield
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    # ----------------------------------------------------------------- internals
    def _read_disk(self, key: str) -> Any:
        try:
            payload, tag = self._disk.get(key, default=None, tag=True, retry=True)
        except Exception as err:
            return self._drop_corrupt(key, f"unreadable ({err})")
        if payload is None:
            return _MISSING
        if not isinstance(payload, bytes) or not isinstance(tag, str):
            return self._drop_corrupt(key, "not written by ResultCache")
        parts = tag.split(":")
        if len(parts) != 3 or parts[0] != _TAG_PREFIX:
            return self._drop_corrupt(key, f"unknown tag {tag!r}")
        if len(payload) != int(parts[2]) or hashlib.sha256(payload).hexdigest() != parts[1]:
            return self._drop_corrupt(key, "checksum mismatch")
        try:
            return pickle.loads(payload)
        except Exception as err:
            return self._drop_corrupt(key, f"cannot unpickle ({err})")

    def _drop_corrupt(self, key: str, why: str) -> Any:
        logger.warning("cache entry %s is corrupt (%s); it will be recomputed", key, why)
        self.stats.corrupt += 1
        with contextlib.suppress(Exception):
            self._disk.delete(key, retry=True)
        return _MISSING

    def _remember(self, key: str, value: Any) -> None:
        if self._memory_items <= 0:
            return
        _freeze(value)
        with self._guard:
            self._memory[key] = value
            self._memory.move_to_end(key)
            while len(self._memory) > self._memory_items:
                self._memory.popitem(last=False)


def _freeze(value: Any) -> None:
    """Make numpy arrays read-only, so a caller cannot alter a shared cached value."""
    if isinstance(value, np.ndarray):
        value.flags.writeable = False
    elif isinstance(value, (dict, list, tuple)):
        for v in value.values() if isinstance(value, dict) else value:
            _freeze(v)
