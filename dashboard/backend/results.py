"""The results cache as the analysis queries use it: one key per result, one way in.

A result's key is made of its kind, the dataset's content hash, the model's weight hash,
every parameter that changes the answer and the schema version
(:func:`~dashboard.backend.fingerprint.cache_key`), so a restart recomputes nothing and a
changed input never gets a stale answer. :meth:`Results.cached` is the entry point of every
cached value; :meth:`Results.cached_blocks` that of tables stored in blocks of columns
(:class:`~dashboard.backend.blocks.BlockStore`). The parts that answer queries about pairs
build on :class:`CachedQueries`.

Each thread remembers the key of the last result it was given (:meth:`Results.last_key`): a
background job records it as its result's key, and ``precompute`` lists them.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from dashboard.backend.errors import MinifiedData
from dashboard.backend.fingerprint import cache_key

if TYPE_CHECKING:
    from dashboard.backend.blocks import BlockManifest, BlockStore, OpenWriter
    from dashboard.backend.cache import ResultCache
    from dashboard.backend.refs import Pair
    from dashboard.backend.registry import Registry
    from dashboard.backend.settings import Settings

ProgressFn = Callable[[float, str], None]


class Results:
    """Keyed access to the results cache and the block store beside it.

    Parameters
    ----------
    cache
        The results cache (values, per-key locks).
    blocks
        The store of tables kept in blocks of columns (denoised RNA).
    """

    def __init__(self, cache: ResultCache, blocks: BlockStore) -> None:
        self.cache = cache
        self.blocks = blocks
        self._tls = threading.local()

    def key(self, kind: str, pair: Pair, params: dict[str, Any] | None = None) -> str:
        """Cache key of result ``kind`` for ``pair`` and ``params``."""
        return cache_key(
            kind,
            dataset=pair.dataset.fingerprint,
            model=pair.model.fingerprint,
            params=params or {},
        )

    def cached(
        self,
        kind: str,
        pair: Pair,
        params: dict[str, Any],
        compute: Callable[[], Any],
        progress: ProgressFn | None = None,
    ) -> Any:
        """The cached result ``kind`` of ``pair`` for ``params``, ``compute()``-d once.

        Another process or thread computing the same key is waited for (``progress`` says
        so); afterwards this thread's :meth:`last_key` is this result's key.
        """
        key = self.key(kind, pair, params)
        self._tls.last_key = key
        value = self.cache.get_or_compute(key, compute, on_wait=_waiting(progress, kind))
        self._tls.last_key = key
        return value

    def peek(self, kind: str, pair: Pair, params: dict[str, Any]) -> Any:
        """The cached result ``kind`` of ``pair`` for ``params`` if it was computed, else
        ``None``; never computes (a page shows what exists without starting work)."""
        return self.cache.get(self.key(kind, pair, params))

    def has(self, kind: str, pair: Pair, params: dict[str, Any]) -> bool:
        """True if the result ``kind`` of ``pair`` for ``params`` is in the cache (a page
        offers what exists without computing it)."""
        return self.key(kind, pair, params) in self.cache

    def cached_blocks(
        self,
        kind: str,
        pair: Pair,
        params: dict[str, Any],
        compute: Callable[[OpenWriter], None],
        progress: ProgressFn | None = None,
        *,
        what: str = "",
    ) -> BlockManifest:
        """The manifest of the block-stored table ``kind`` of ``pair`` for ``params``,
        written once by ``compute(open_writer)``
        (:meth:`~dashboard.backend.blocks.BlockStore.manifest`); as :meth:`cached` otherwise
        (``what``: the table's name in the waiting message, default ``kind``)."""
        key = self.key(kind, pair, params)
        self._tls.last_key = key
        manifest = self.blocks.manifest(key, compute, on_wait=_waiting(progress, what or kind))
        self._tls.last_key = key
        return manifest

    def last_key(self) -> str | None:
        """Key of the last result this thread was given (``None`` before the first)."""
        return getattr(self._tls, "last_key", None)

    @contextmanager
    def keeping_last_key(self) -> Iterator[str | None]:
        """Yield :meth:`last_key`, and make it the last key again when the block ends
        (reads of a result's parts that may pass through other keys)."""
        key = self.last_key()
        yield key
        self._tls.last_key = key


class CachedQueries:
    """Base of the parts that answer cached queries about pairs
    (:class:`~dashboard.backend.embeddings.Embeddings`, ...).

    Parameters
    ----------
    results
        Where the answers are cached.
    registry
        The datasets and models of the pairs asked about.
    settings
        The analysis defaults (seed, posterior samples, ...).
    """

    def __init__(self, results: Results, registry: Registry, settings: Settings) -> None:
        self.results = results
        self.registry = registry
        self.settings = settings

    def require_counts(self, pair: Pair, what: str) -> None:
        """Raise :class:`MinifiedData` (one line naming ``what``) when the pair's dataset is
        minified: its counts were dropped and only the latent posterior is kept."""
        if self.registry.dataset(pair).minified is not None:
            name = pair.dataset.name or pair.dataset.id
            msg = (
                f"{name} is minified (counts were dropped, only the latent posterior is kept): "
                f"{what} need the original counts"
            )
            raise MinifiedData(msg)


def _waiting(progress: ProgressFn | None, what: str) -> Callable[[], None]:
    """What a wait for another computation of ``what`` reports."""

    def on_wait() -> None:
        if progress is not None:
            progress(0.0, f"waiting for another computation of {what}")

    return on_wait
