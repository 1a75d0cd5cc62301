"""The datasets and models this process holds: opened, loaded or handed in, bounded, LRU.

:class:`Registry` reads CITE-seq files and checkpoints (ours, scvi-tools', scvi-hub folders)
and hands out what a :class:`~dashboard.backend.refs.DatasetRef` or
:class:`~dashboard.backend.refs.Pair` names, reading it again from its recorded path when this
process lacks it (a background worker, or an entry evicted meanwhile) and checking its
fingerprint.

Its store is a :class:`BoundedRegistry`: a dataset merely picked on the Model page is read and
registered; without a bound, every file a user clicks through would stay in memory until the
server stops. Entries that can be read again (they have a path) are evicted least recently
used first; entries that exist only in memory (a query mapping's combined data and model) are
evicted only when they alone exceed the bound, so an active mapping survives a user browsing
other files.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Hashable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from dashboard.backend import untrusted
from dashboard.backend.card import hub_card_for
from dashboard.backend.errors import (
    BackendError,
    DatasetNotFound,
    ModelDataMismatch,
    ModelNotFound,
    ModelNotTrained,
)
from dashboard.backend.fingerprint import model_fingerprint
from dashboard.backend.refs import DatasetRef, ModelRef, Pair
from model.errors import CheckpointError, CiteSeqDataError
from model.model_folder import locate_model
from model.read_options import ReadOptions

if TYPE_CHECKING:
    from dashboard.backend.settings import Settings
    from model.data import CiteSeqData
    from model.hub_card import HubCard
    from model.totalvi import TotalVI

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


class Registry:
    """Opens, loads and registers datasets and models; hands them out by reference.

    Parameters
    ----------
    settings
        Where relative paths are looked for (``data_dir``, ``model_dir``), how many datasets
        and models stay in memory (``max_loaded_datasets``), the device models move to and
        the limits of :func:`~dashboard.backend.untrusted.validate_file`.

    Attributes
    ----------
    datasets, models
        The loaded datasets by fingerprint, the models by (dataset, model) fingerprints.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.datasets: BoundedRegistry[str, CiteSeqData] = BoundedRegistry(
            settings.max_loaded_datasets
        )
        self.models: BoundedRegistry[tuple[str, str], TotalVI] = BoundedRegistry(
            settings.max_loaded_datasets
        )
        self._lock = threading.RLock()

    # ================================================================== datasets
    def open_dataset(
        self,
        path: str | os.PathLike[str],
        *,
        options: ReadOptions | None = None,
        batch_key: str | None = None,
        labels_key: str | None = None,
        layer: str | None = None,
        name: str = "",
        untrusted: bool = False,
    ) -> DatasetRef:
        """Read a CITE-seq file (``.h5ad``, ``.h5mu``, 10x) and register it.

        ``options`` says where its counts and keys are (a checkpoint's registry, flags);
        without it, ``batch_key`` / ``labels_key`` / ``layer`` (``None``: none / ``X``).
        Relative paths are resolved against ``settings.data_dir`` when they do not exist as
        given. Raises :class:`DatasetNotFound` with the reader's message on failure.
        ``untrusted``: first read the file in a limited child process
        (:func:`~dashboard.backend.untrusted.validate_file`, once per file per process), so
        a file that crashes or balloons the reader is refused without harming the server.
        """
        if options is None:
            options = ReadOptions(batch_key=batch_key, labels_key=labels_key, layer=layer)
        elif (batch_key, labels_key, layer) != (None, None, None):
            msg = "give either options or batch_key/labels_key/layer, not both"
            raise TypeError(msg)
        p = self.resolve_path(path, self.settings.data_dir)
        if untrusted:
            _validate(p, self.settings, options.read_kwargs())
        try:
            data = options.read(p)
        except CiteSeqDataError as err:
            raise DatasetNotFound(str(err)) from None
        ref = DatasetRef(
            fingerprint=data.fingerprint(), path=str(p), options=options, name=name or p.name
        )
        with self._lock:
            self.datasets.put(ref.fingerprint, data, reloadable=True)
        return ref

    def add_dataset(
        self, data: CiteSeqData, *, name: str = "", path: str | None = None
    ) -> DatasetRef:
        """Register an in-memory dataset (not reloadable by other processes unless ``path``
        points at the same content)."""
        ref = DatasetRef(
            fingerprint=data.fingerprint(),
            path=path,
            options=ReadOptions(batch_key=data.batch_key, labels_key=data.labels_key),
            name=name or data.source or "dataset",
        )
        with self._lock:
            self.datasets.put(ref.fingerprint, data, reloadable=path is not None)
        return ref

    def dataset(self, ref: DatasetRef | Pair) -> CiteSeqData:
        """The loaded dataset of ``ref`` (reloaded from its path if this process lacks it)."""
        ref = ref.dataset if isinstance(ref, Pair) else ref
        with self._lock:
            data = self.datasets.get(ref.fingerprint)
            if data is not None:
                return data
            if ref.path is None:
                msg = f"dataset {ref.name or ref.id} is not loaded here and has no path"
                raise DatasetNotFound(msg)
            fresh = self.open_dataset(ref.path, options=ref.options)
            if fresh.fingerprint != ref.fingerprint:
                self.datasets.pop(fresh.fingerprint, None)
                msg = f"{ref.path} changed since it was opened; open it again"
                raise DatasetNotFound(msg)
            return fresh_data(self.datasets.get(ref.fingerprint), ref.name or ref.id)

    # ==================================================================== models
    def load_model(
        self,
        dataset: DatasetRef,
        path: str | os.PathLike[str],
        *,
        name: str = "",
    ) -> Pair:
        """Load a checkpoint (ours or scvi-tools') for ``dataset`` and register the pair."""
        p = self.resolve_path(path, self.settings.model_dir)
        model = _trained_checkpoint(p, data=self.dataset(dataset))
        return self.add_model(dataset, model, path=str(p), name=name or p.name)

    def open_model(
        self,
        path: str | os.PathLike[str],
        *,
        data: str | os.PathLike[str] | None = None,
        flags: Mapping[str, str | None] | None = None,
        untrusted: bool = False,
        name: str = "",
    ) -> Pair:
        """Open a model folder the way its checkpoint was set up, with its data.

        ``path``: a folder saved by scvi-tools or by us, an scvi-hub folder, or a local
        copy of a hub download (:func:`model.model_folder.locate_model`). ``data``: the
        dataset to apply it to (default: the data saved in the folder, ``adata.h5ad`` /
        ``mdata.h5mu``). Where the counts and keys are (layer, batch and labels keys,
        protein obsm key or layer, modalities) comes from the checkpoint's registry;
        ``flags`` (:meth:`model.read_options.ReadOptions.overridden` keywords) override
        parts of it. The data is checked against the model (genes, proteins, batches).
        """
        p = self.resolve_path(path, self.settings.model_dir)
        try:
            folder = locate_model(p)
        except CheckpointError as err:
            raise ModelNotFound(str(err)) from None
        model = _trained_checkpoint(folder.checkpoint, shown=p)
        registered = ReadOptions.from_setup_args(model.setup_args)
        options = registered.overridden(**dict(flags or {}))
        source = Path(data) if data is not None else folder.data
        if source is None:
            msg = (
                f"{p}: the model folder holds no data (adata.h5ad or mdata.h5mu, as scvi-tools "
                "saves with save_anndata=True); give the data it was trained on (--data)"
            )
            raise DatasetNotFound(msg)
        try:
            dataset = self.open_dataset(source, options=options, untrusted=untrusted)
        except DatasetNotFound as err:
            how = (
                f"read with the checkpoint's setup ({registered.describe()})"
                if options == registered
                else f"read with {options.describe()}"
            )
            msg = (
                f"{err} ({how}; on the command line --layer, --batch-key, --labels-key and "
                "--protein-key override it)"
            )
            raise DatasetNotFound(msg) from None
        _attach(model, self.dataset(dataset))
        where = str(folder.root or folder.folder)
        return self.add_model(dataset, model, path=where, name=name or folder.name)

    def hub_card(self, pair: Pair) -> HubCard | None:
        """The scvi-hub model card (``README.md``) of the pair's model folder, if any."""
        return hub_card_for(pair.model.path)

    def add_model(
        self, dataset: DatasetRef, model: TotalVI, *, path: str | None = None, name: str = ""
    ) -> Pair:
        """Register an in-memory model for ``dataset``; returns the pair."""
        if self.settings.device is not None:
            model.to(self.settings.device)
        ref = ModelRef(fingerprint=model_fingerprint(model), path=path, name=name or "model")
        with self._lock:
            self.models.put(
                (dataset.fingerprint, ref.fingerprint), model, reloadable=path is not None
            )
        return Pair(dataset, ref)

    def model(self, pair: Pair) -> TotalVI:
        """The loaded model of ``pair`` (reloaded from its path if this process lacks it)."""
        with self._lock:
            key = (pair.dataset.fingerprint, pair.model.fingerprint)
            model = self.models.get(key)
            if model is not None:
                return model
            if pair.model.path is None:
                name = pair.model.name or pair.model.id
                msg = f"model {name} is not loaded here and has no path"
                raise ModelNotFound(msg)
            fresh = self.load_model(pair.dataset, pair.model.path)
            if fresh.model.fingerprint != pair.model.fingerprint:
                self.models.pop((pair.dataset.fingerprint, fresh.model.fingerprint), None)
                msg = f"{pair.model.path} changed since it was loaded; load it again"
                raise ModelNotFound(msg)
            return fresh_data(self.models.get(key), pair.model.name or pair.model.id)

    # =================================================================== paths
    @staticmethod
    def resolve_path(path: str | os.PathLike[str], base: Path) -> Path:
        """``path`` as given when it exists or is absolute, else under ``base`` when there."""
        p = Path(path).expanduser()
        if not p.exists() and not p.is_absolute() and (base / p).exists():
            return base / p
        return p


def _validate(path: Path, settings: Settings, read_kwargs: dict[str, Any]) -> None:
    """Read ``path`` in a limited child process first
    (:func:`~dashboard.backend.untrusted.validate_file`; ``open_dataset``'s ``untrusted``
    flag hides the module's name there)."""
    untrusted.validate_file(path, settings=settings, read_kwargs=read_kwargs)


def _trained_checkpoint(
    path: Path, *, data: CiteSeqData | None = None, shown: Path | None = None
) -> TotalVI:
    """The trained model of checkpoint ``path`` (with ``data`` attached when given), its
    failures as the backend's one-line errors (``shown``: the path the message names)."""
    from model.totalvi import TotalVI  # torch

    try:
        model = TotalVI.load(path)
    except CheckpointError as err:
        raise ModelNotFound(str(err)) from None
    if data is not None:
        _attach(model, data)
    if not model.is_trained:
        msg = f"{shown or path}: the checkpoint is of an untrained model; train it first"
        raise ModelNotTrained(msg)
    return model


def _attach(model: TotalVI, data: CiteSeqData) -> None:
    """Attach ``data`` to ``model``; data that does not fit it is :class:`ModelDataMismatch`."""
    try:
        model.attach_data(data)
    except (CiteSeqDataError, KeyError) as err:
        raise ModelDataMismatch(str(err)) from None


def fresh_data(value: Any, name: str) -> Any:
    """``value`` just registered; ``None`` only if the registry's bound was too small for
    it, said in one line rather than as a ``KeyError``."""
    if value is None:
        msg = f"{name} could not be kept in memory (raise max_loaded_datasets)"
        raise BackendError(msg)
    return value
