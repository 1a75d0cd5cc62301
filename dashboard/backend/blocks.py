"""Large cells x features tables (denoised RNA) stored as column blocks, one file per block.

A table is computed once, streamed in chunks of cells, and written as ``.npy`` files of
``block`` features each, laid out *feature-major* (``features x cells``, float32), so that
reading one feature reads one contiguous row of one file. Memory while writing is one chunk;
memory while reading is what was asked for.

The files of one computation live in a fresh *generation* folder under
``<root>/<sha256(key)[:32]>/``: written as ``.tmp-<generation>`` and renamed when complete.
The :class:`BlockManifest` (folder, shape, feature names, a CRC-32 per feature row) is stored
last, under the result's key in the :class:`~dashboard.backend.cache.ResultCache`, whose
per-key lock makes one thread or process compute a missing table. So a partial set of blocks
is never served: without a manifest nothing is read, a missing or short block file makes the
manifest a cache miss that recomputes, and a row whose CRC does not match is recomputed
before anything is returned.

Block files count against the cache's ``size_limit`` together with the results
(:meth:`BlockStore.enforce_limit`, run when the store opens and after every write to the
cache). When the total is over the limit, in this order: leftovers go (unfinished
``.tmp-`` folders nobody writes, generations no manifest names), then a block set larger
than the whole limit, then block sets and results, least recently used first (a block
set's use is its last :meth:`~BlockStore.manifest` call), until the total fits. A set being
written (its key is locked) is never evicted; when it alone exceeds the limit it is kept
and served (results are not evicted for it) and goes first at the next write or start. An
evicted set read at that moment reads as a missing block, and readers recompute it
(:func:`read_with_retry`). A recomputation removes the older generations of its key,
:meth:`BlockStore.clear` removes all.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import time
import uuid
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from hashlib import sha256
from pathlib import Path

import numpy as np

from dashboard.backend.cache import ResultCache
from dashboard.backend.errors import CacheError

logger = logging.getLogger(__name__)

DTYPE = np.dtype("<f4")
_MISSING = object()
#: In each generation folder: the cache key of its manifest; its mtime is the last use.
KEY_FILE = "key.txt"
#: Unfinished folders without a key file are removed after this many seconds.
_STALE_TMP = 3600.0

#: The cache lock key eviction runs under (the cache's per-key thread + file lock).
_BUDGET_KEY = "__blocks-budget__"

#: ``open_writer(n_cells, columns, block)`` handed to a table's compute function.
OpenWriter = Callable[[int, Sequence[str], int], "BlockWriter"]


class BlockCorrupt(CacheError):
    """A block file is missing, short or fails its row checksum (it is recomputed)."""


@dataclass(frozen=True)
class BlockManifest:
    """Where the blocks of one table are and how to check them (the cached value).

    Attributes
    ----------
    folder
        Generation folder, relative to the store's root.
    n_cells
        Rows of the table (cells).
    columns
        Feature names, in table order; block ``b`` holds ``columns[b*block : (b+1)*block]``.
    block
        Features per block file (the last one may hold fewer).
    offsets
        Byte offset of the data in each block file (after its ``.npy`` header).
    checksums
        CRC-32 of each feature's row (``uint32``, one per column).
    """

    folder: str
    n_cells: int
    columns: tuple[str, ...]
    block: int
    offsets: tuple[int, ...]
    checksums: np.ndarray = field(repr=False)

    @property
    def n_blocks(self) -> int:
        """Number of block files."""
        return len(self.offsets)

    def block_columns(self, b: int) -> tuple[int, int]:
        """``(first, stop)`` column positions of block ``b``."""
        first = b * self.block
        return first, min(first + self.block, len(self.columns))

    def file_name(self, b: int) -> str:
        """File name of block ``b`` inside the generation folder."""
        return f"block-{b:05d}.npy"

    def file_size(self, b: int) -> int:
        """Exact size in bytes of block ``b``'s file."""
        first, stop = self.block_columns(b)
        return self.offsets[b] + (stop - first) * self.n_cells * DTYPE.itemsize


@dataclass
class BlockStats:
    """Counters of one :class:`BlockStore` (tests and the benchmark read them)."""

    blocks_read: int = 0  # block files opened for reading
    rows_read: int = 0  # feature rows read and checked
    corrupt: int = 0  # manifests dropped because a block was missing or bad


class BlockWriter:
    """Writes one table, chunk of cells by chunk of cells, into block files.

    Parameters
    ----------
    folder
        Empty folder for the block files (the store renames it when complete).
    n_cells
        Rows of the table.
    columns
        Feature names (one column each).
    block
        Features per block file.
    """

    def __init__(self, folder: Path, n_cells: int, columns: Sequence[str], block: int) -> None:
        if block <= 0:
            msg = f"block must be positive, got {block}"
            raise ValueError(msg)
        self.folder = folder
        self.n_cells = int(n_cells)
        self.columns = tuple(str(c) for c in columns)
        self.block = int(block)
        self.filled = 0
        self._crc = [0] * len(self.columns)
        n_blocks = -(-len(self.columns) // self.block)
        offsets = []
        for b in range(n_blocks):
            first, stop = b * self.block, min((b + 1) * self.block, len(self.columns))
            header = {"descr": DTYPE.str, "fortran_order": False, "shape": (stop - first, n_cells)}
            with open(folder / f"block-{b:05d}.npy", "wb") as fh:
                np.lib.format.write_array_header_1_0(fh, header)
                offsets.append(fh.tell())
        self._offsets = tuple(offsets)

    def write(self, values: np.ndarray) -> None:
        """Append the next ``len(values)`` cells (``cells x columns``, any float dtype)."""
        values = np.asarray(values)
        if values.ndim != 2 or values.shape[1] != len(self.columns):
            msg = f"chunk of shape {values.shape}, expected (cells, {len(self.columns)})"
            raise ValueError(msg)
        n = values.shape[0]
        if self.filled + n > self.n_cells:
            msg = f"{self.filled + n} cells written, the table has {self.n_cells}"
            raise ValueError(msg)
        row_bytes = self.n_cells * DTYPE.itemsize
        start_byte = self.filled * DTYPE.itemsize
        for b, offset in enumerate(self._offsets):
            first, stop = b * self.block, min((b + 1) * self.block, len(self.columns))
            seg = np.ascontiguousarray(values[:, first:stop].T, dtype=DTYPE)  # block x chunk
            fd = os.open(self.folder / f"block-{b:05d}.npy", os.O_WRONLY)
            try:
                for i in range(stop - first):
                    row = seg[i].data
                    _pwrite_all(fd, row, offset + i * row_bytes + start_byte)
                    self._crc[first + i] = zlib.crc32(row, self._crc[first + i])
            finally:
                os.close(fd)
        self.filled += n

    def finish(self, folder: str) -> BlockManifest:
        """Flush the files to disk; the manifest of the complete table (``folder``: where
        the store will have renamed the files, relative to its root)."""
        if self.filled != self.n_cells:
            msg = f"only {self.filled} of {self.n_cells} cells were written"
            raise ValueError(msg)
        for b in range(len(self._offsets)):
            fd = os.open(self.folder / f"block-{b:05d}.npy", os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        return BlockManifest(
            folder=folder,
            n_cells=self.n_cells,
            columns=self.columns,
            block=self.block,
            offsets=self._offsets,
            checksums=np.asarray(self._crc, dtype=np.uint32),
        )


class BlockStore:
    """Block files under ``root``, their manifests in ``cache`` (see the module docstring).

    Parameters
    ----------
    cache
        Results cache holding the manifests (and lending its per-key locks).
    root
        Folder of the block files (created if needed).
    """

    def __init__(self, cache: ResultCache, root: str | os.PathLike[str]) -> None:
        self.cache = cache
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.stats = BlockStats()
        cache.add_write_hook(self._after_write)
        self.enforce_limit()

    # ------------------------------------------------------------------ writing
    def manifest(
        self,
        key: str,
        compute: Callable[[OpenWriter], None],
        *,
        on_wait: Callable[[], None] | None = None,
    ) -> BlockManifest:
        """The manifest of ``key``, computing the table once if it is missing or incomplete.

        ``compute(open_writer)`` calls ``open_writer(n_cells, columns, block)`` once and
        writes every chunk of cells, in order, to the :class:`BlockWriter` it returns. The
        store then flushes the files, renames their folder into place and stores the
        manifest (last), under the cache's per-key lock.
        """
        value = self.cache.get(key, _MISSING)
        if isinstance(value, BlockManifest) and self._complete(value):
            self._touch(value)
            return value
        with self.cache.lock(key, on_wait=on_wait):
            # from disk: this process's copy may name a generation another one replaced
            self.cache.forget(key)
            value = self.cache.get(key, _MISSING)
            if isinstance(value, BlockManifest) and self._complete(value):
                self._touch(value)
                return value
            if value is not _MISSING:
                self._drop(key, value)
            manifest = self._compute(key, compute)
            self.cache.stats.computed += 1
            self._remove_old_generations(key, keep=manifest.folder)
            self.cache.set(key, manifest)  # its write hook makes room (this key is locked)
            return manifest

    def _compute(self, key: str, compute: Callable[[OpenWriter], None]) -> BlockManifest:
        home = self.root / _key_folder(key)
        home.mkdir(parents=True, exist_ok=True)
        generation = uuid.uuid4().hex
        tmp = home / f".tmp-{generation}"
        tmp.mkdir()
        (tmp / KEY_FILE).write_text(key)
        writers: list[BlockWriter] = []

        def open_writer(n_cells: int, columns: Sequence[str], block: int) -> BlockWriter:
            if writers:
                msg = "compute must open exactly one writer"
                raise RuntimeError(msg)
            writers.append(BlockWriter(tmp, n_cells, columns, block))
            return writers[0]

        try:
            compute(open_writer)
            if not writers:
                msg = "compute opened no writer"
                raise RuntimeError(msg)
            manifest = writers[0].finish(f"{_key_folder(key)}/{generation}")
            tmp.replace(home / generation)
            _fsync_dir(home)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return manifest

    # ------------------------------------------------------------------ reading
    def read(self, manifest: BlockManifest, columns: Sequence[str] | None = None) -> np.ndarray:
        """``cells x len(columns)`` float32 (all columns when ``None``), reading only the
        rows of the blocks that hold them. Raises :class:`BlockCorrupt` on a bad block."""
        if columns is None:
            out = np.empty((manifest.n_cells, len(manifest.columns)), dtype=DTYPE)
            for b in range(manifest.n_blocks):
                first, stop = manifest.block_columns(b)
                out[:, first:stop] = self.read_block(manifest, b).T
            return out
        pos = _positions(manifest, columns)
        out = np.empty((manifest.n_cells, len(pos)), dtype=DTYPE)
        by_block: dict[int, list[int]] = {}
        for j, p in enumerate(pos):
            by_block.setdefault(p // manifest.block, []).append(j)
        for b, js in by_block.items():
            rows = self._read_rows(manifest, b, [pos[j] for j in js])
            for j, row in zip(js, rows, strict=True):
                out[:, j] = row
        return out

    def read_block(self, manifest: BlockManifest, b: int) -> np.ndarray:
        """Block ``b`` as ``features x cells`` float32 (every row checked)."""
        first, stop = manifest.block_columns(b)
        return np.stack(self._read_rows(manifest, b, list(range(first, stop))))

    def iter_cells(
        self, manifest: BlockManifest, chunk_cells: int
    ) -> Iterator[tuple[int, np.ndarray]]:
        """The whole table by chunks of cells: ``(first cell, chunk x columns float32)``.

        For writers that want rows (an HDF5 layer). Each feature's checksum is accumulated
        over the chunks and checked after the last one: :class:`BlockCorrupt` is raised
        then, so a consumer must treat what it wrote as void if the iteration raises.
        """
        chunk_cells = max(1, int(chunk_cells))
        crc = [0] * len(manifest.columns)
        fds = []
        try:
            for b in range(manifest.n_blocks):
                path = self.root / manifest.folder / manifest.file_name(b)
                try:
                    fds.append(os.open(path, os.O_RDONLY))
                except OSError as err:
                    msg = f"block {path} is missing ({err.strerror})"
                    raise BlockCorrupt(msg) from None
                self.stats.blocks_read += 1
            row_bytes = manifest.n_cells * DTYPE.itemsize
            for start in range(0, manifest.n_cells, chunk_cells):
                n = min(chunk_cells, manifest.n_cells - start)
                out = np.empty((n, len(manifest.columns)), dtype=DTYPE)
                for b, fd in enumerate(fds):
                    first, stop = manifest.block_columns(b)
                    for c in range(first, stop):
                        at = manifest.offsets[b] + (c - first) * row_bytes + start * DTYPE.itemsize
                        raw = os.pread(fd, n * DTYPE.itemsize, at)
                        if len(raw) != n * DTYPE.itemsize:
                            msg = f"block {manifest.file_name(b)} of {manifest.folder} is short"
                            raise BlockCorrupt(msg)
                        crc[c] = zlib.crc32(raw, crc[c])
                        out[:, c] = np.frombuffer(raw, dtype=DTYPE)
                yield start, out
        finally:
            for fd in fds:
                os.close(fd)
        self.stats.rows_read += len(manifest.columns)
        bad = [manifest.columns[c] for c in range(len(crc)) if crc[c] != manifest.checksums[c]]
        if bad:
            msg = f"rows of {bad[:3]} in {manifest.folder} are corrupt"
            raise BlockCorrupt(msg)

    def _read_rows(self, manifest: BlockManifest, b: int, cols: list[int]) -> list[np.ndarray]:
        path = self.root / manifest.folder / manifest.file_name(b)
        row_bytes = manifest.n_cells * DTYPE.itemsize
        first, _ = manifest.block_columns(b)
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError as err:
            msg = f"block {path} is missing ({err.strerror})"
            raise BlockCorrupt(msg) from None
        self.stats.blocks_read += 1
        out = []
        try:
            for c in cols:
                raw = os.pread(fd, row_bytes, manifest.offsets[b] + (c - first) * row_bytes)
                self.stats.rows_read += 1
                if len(raw) != row_bytes or zlib.crc32(raw) != int(manifest.checksums[c]):
                    msg = f"block {path}: row of {manifest.columns[c]!r} is short or corrupt"
                    raise BlockCorrupt(msg)
                out.append(np.frombuffer(raw, dtype=DTYPE))
        finally:
            os.close(fd)
        return out

    # ------------------------------------------------------------ invalidation
    def invalidate(self, key: str, manifest: BlockManifest) -> None:
        """Drop ``key``'s manifest if it still is ``manifest`` (a bad block was found), so
        the next :meth:`manifest` recomputes; a newer one (another reader's fix) is kept."""
        with self.cache.lock(key):
            self.cache.forget(key)
            current = self.cache.get(key, _MISSING)
            if isinstance(current, BlockManifest) and current.folder != manifest.folder:
                return
            self._drop(key, manifest)

    def clear(self) -> None:
        """Remove every block file (their manifests then read as incomplete)."""
        for child in self.root.iterdir():
            shutil.rmtree(child, ignore_errors=True)

    def volume(self) -> int:
        """Bytes the block files use."""
        return sum(p.stat().st_size for p in self.root.rglob("*.npy"))

    # ------------------------------------------------------------- size limit
    def usage(self) -> int:
        """Bytes of the block store (every file) plus the results cache on disk: what
        :meth:`enforce_limit` keeps within the cache's ``size_limit``."""
        return sum(g.size for g in self._generations()) + self.cache.disk_usage()

    def enforce_limit(self) -> int:
        """Evict until block files + results fit the cache's ``size_limit`` (order: see the
        module docstring); returns the bytes freed. Sets whose key is locked (being written
        or evicted elsewhere) stay."""
        limit = self.cache.size_limit
        with self.cache.lock(_BUDGET_KEY):  # one eviction at a time, across processes
            gens = self._generations()
            blocks = sum(g.size for g in gens)
            results = self.cache.disk_usage()
            if blocks + results <= limit:
                return 0
            before = blocks + results
            kept: list[_Generation] = []
            for g in gens:  # leftovers first
                if not self._evict(g, only_garbage=True):
                    kept.append(g)
            big = [g for g in kept if g.size > limit and not g.tmp]
            for g in big:
                if self._evict(g):
                    kept.remove(g)
                    logger.warning(
                        "denoised blocks of %.1f MB exceed the cache size limit (%.1f MB): "
                        "evicted; they are recomputed when needed (raise cache_size_limit)",
                        g.size / 1e6,
                        limit / 1e6,
                    )
            blocks = sum(g.size for g in kept)
            set_keys = {g.key for g in kept if g.key is not None}
            sets = sorted((g for g in kept if not g.tmp and not self._busy(g)), key=_used)
            fixed = blocks - sum(g.size for g in sets)  # being written or read-locked
            evict_results = fixed <= limit  # else an oversize set is being written: keep it
            while blocks + results > limit:
                row = self._oldest_result(set_keys) if evict_results else None
                g = sets[0] if sets else None
                if g is None and row is None:
                    break
                if g is not None and (row is None or g.used <= row[0]):
                    sets.pop(0)
                    if self._evict(g):
                        blocks -= g.size
                else:
                    assert row is not None
                    self.cache.delete(row[1])
                    set_keys.add(row[1])  # tried: do not pick it again
                results = self.cache.disk_usage()
            if blocks + results > limit:
                logger.info(
                    "the cache uses %.1f MB, over its limit of %.1f MB, while a larger "
                    "computation is in progress or in use; it is evicted at the next write",
                    (blocks + results) / 1e6,
                    limit / 1e6,
                )
            return max(0, before - blocks - results)

    def _after_write(self, key: str) -> None:
        self.enforce_limit()

    def _busy(self, g: _Generation) -> bool:
        """True while ``g``'s key is locked (being written here or in another process)."""
        if g.key is None:
            return False
        with self.cache.try_lock(g.key) as free:
            return not free

    def _oldest_result(self, skip: set[str]) -> tuple[float, str] | None:
        """The least recently used results entry not in ``skip`` (manifests are evicted
        with their blocks)."""
        for row in self.cache.oldest(len(skip) + 16):
            if row[1] not in skip:
                return row
        return None

    def _generations(self) -> list[_Generation]:
        out = []
        for home in _subdirs(self.root):
            for gen in _subdirs(home):
                size, key, used = 0, None, None
                with contextlib.suppress(OSError), os.scandir(gen) as it:
                    for entry in it:
                        with contextlib.suppress(OSError):
                            st = entry.stat(follow_symlinks=False)
                            size += st.st_size
                            if entry.name == KEY_FILE:
                                used = st.st_mtime
                                key = Path(entry.path).read_text()
                if used is None:
                    with contextlib.suppress(OSError):
                        used = gen.stat().st_mtime
                out.append(_Generation(gen, key, used or 0.0, size, gen.name.startswith(".tmp-")))
        return out

    def _evict(self, g: _Generation, *, only_garbage: bool = False) -> bool:
        """Remove generation ``g`` (and its manifest if it names ``g``); with
        ``only_garbage``, only if no manifest names it or it is an abandoned ``.tmp-``.
        False when it stays (its key is locked, or it is not garbage)."""
        if g.key is None:  # written before key files, or just created
            stale = time.time() - g.used > _STALE_TMP
            if only_garbage and not (g.tmp and stale):
                return False
            shutil.rmtree(g.path, ignore_errors=True)
            return True
        with self.cache.try_lock(g.key) as free:
            if not free:
                return False
            if not g.tmp:
                self.cache.forget(g.key)
                current = self.cache.get(g.key, _MISSING)
                named = isinstance(current, BlockManifest) and (
                    self.root / current.folder == g.path
                )
                if only_garbage and named:
                    return False
                if named:
                    self.cache.delete(g.key)
            shutil.rmtree(g.path, ignore_errors=True)
        with contextlib.suppress(OSError):
            g.path.parent.rmdir()  # the key's folder, once empty
        return True

    def _touch(self, manifest: BlockManifest) -> None:
        """Mark ``manifest``'s blocks as just used (the LRU order of evictions)."""
        with contextlib.suppress(OSError):
            os.utime(self.root / manifest.folder / KEY_FILE)

    def _complete(self, manifest: BlockManifest) -> bool:
        folder = self.root / manifest.folder
        for b in range(manifest.n_blocks):
            try:
                size = (folder / manifest.file_name(b)).stat().st_size
            except OSError:
                return False
            if size != manifest.file_size(b):
                return False
        return True

    def _drop(self, key: str, value: object) -> None:
        logger.warning("blocks of %s are missing or corrupt; they will be recomputed", key)
        self.stats.corrupt += 1
        self.cache.delete(key)
        if isinstance(value, BlockManifest):
            shutil.rmtree(self.root / value.folder, ignore_errors=True)

    def _remove_old_generations(self, key: str, *, keep: str) -> None:
        """Older generations and unfinished ``.tmp-`` folders of ``key`` (we hold its lock,
        so nobody else is writing there)."""
        home = self.root / _key_folder(key)
        for child in home.iterdir():
            if f"{_key_folder(key)}/{child.name}" != keep:
                shutil.rmtree(child, ignore_errors=True)


@dataclass(frozen=True)
class _Generation:
    """One generation folder as :meth:`BlockStore.enforce_limit` sees it."""

    path: Path
    key: str | None  # from its key file
    used: float  # last use (key file's mtime)
    size: int  # bytes of every file in it
    tmp: bool  # unfinished (``.tmp-`` folder)


def _used(g: _Generation) -> float:
    return g.used


def _subdirs(folder: Path) -> list[Path]:
    try:
        return [Path(e.path) for e in os.scandir(folder) if e.is_dir(follow_symlinks=False)]
    except OSError:
        return []


def read_with_retry(
    store: BlockStore,
    key: str,
    manifest: BlockManifest,
    get_manifest: Callable[[], BlockManifest],
    read: Callable[[BlockManifest], np.ndarray],
) -> np.ndarray:
    """``read(manifest)``; if a block is bad, drop the manifest, recompute it once
    (``get_manifest``) and read again (a second failure raises :class:`BlockCorrupt`)."""
    try:
        return read(manifest)
    except BlockCorrupt:
        store.invalidate(key, manifest)
    return read(get_manifest())


def _positions(manifest: BlockManifest, columns: Sequence[str]) -> list[int]:
    index = {c: i for i, c in enumerate(manifest.columns)}
    missing = [c for c in columns if c not in index]
    if missing:
        raise KeyError(missing)
    return [index[c] for c in columns]


def _key_folder(key: str) -> str:
    return sha256(key.encode()).hexdigest()[:32]


def _pwrite_all(fd: int, data: memoryview, offset: int) -> None:
    view = memoryview(data).cast("B")
    while len(view):
        n = os.pwrite(fd, view, offset)
        view, offset = view[n:], offset + n


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)
