"""The analysis service: the one object pages, the CLI and scripts ask for results.

:class:`AnalysisService` loads datasets and models, and answers typed queries about a
(dataset, model) :class:`~dashboard.backend.refs.Pair` (latent space, UMAP, clusters, cell
types, denoised values, DE, model-card metrics). Every answer is cached in the results cache
under a key made of the dataset's content hash, the model's weight hash, every parameter that
changes the answer and the schema version, so a restart recomputes nothing and a changed input
never gets a stale answer. Long computations can also run as background jobs with progress
and cancel (:meth:`AnalysisService.submit`).

The service is rebuildable from :class:`~dashboard.backend.settings.Settings` alone: a
background worker in another process opens the same cache and reloads datasets and models
from the paths recorded in the references (checking their fingerprints).
"""

from __future__ import annotations

import inspect
import logging
import os
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from dashboard.backend.blocks import BlockManifest, BlockStore
from dashboard.backend.cache import ResultCache
from dashboard.backend.celery_jobs import CeleryJobs
from dashboard.backend.errors import (
    BackendError,
    DatasetNotFound,
    InvalidSelection,
    JobNotFound,
    ModelDataMismatch,
    ModelNotFound,
    ModelNotTrained,
)
from dashboard.backend.fingerprint import cache_key, model_fingerprint
from dashboard.backend.jobs import JobContext, JobInfo, JobRegistry, JobRunner
from dashboard.backend.names import CellTypeNames
from dashboard.backend.owner import current_owner
from dashboard.backend.preparation import STEP_LISTS, prepare_pair
from dashboard.backend.refs import DatasetRef, ModelRef, Pair
from dashboard.backend.registry import BoundedRegistry
from dashboard.backend.sampling import stratified_subsample
from dashboard.backend.settings import Settings
from model.protein_scale import EFFICIENCY_FREE, MEASURED, ProteinScale, check_protein_scale
from model.read_options import OURS, ReadOptions

if TYPE_CHECKING:
    from dashboard.backend.mapping import QueryMapResult
    from dashboard.backend.metrics import MetricsResult
    from model.data import CiteSeqData
    from model.hub_card import HubCard
    from model.totalvi import TotalVI

logger = logging.getLogger(__name__)

ProgressFn = Callable[[float, str], None]


class MinifiedData(BackendError):
    """The dataset is minified (scvi-hub: counts dropped, the latent posterior kept), and
    the result asked for needs the counts."""


#: Cells of denoised RNA that name clusters of minified data, at most (a seeded sample
#: per cluster beyond it, so memory stays bounded at any size).
MINIFIED_NAMING_CELLS = 50_000

#: Queries that :meth:`AnalysisService.submit` can run as jobs.
JOB_QUERIES = (
    "latent",
    "umap",
    "clusters",
    "cell_types",
    "denoised_rna",
    "denoised_protein",
    "foreground_probability",
    "imputed_proteins",
    "de_one_vs_rest",
    "de_groups",
    "metrics",
    "precompute",
)


class AnalysisService:
    """Typed, cached analysis queries over (dataset, model) pairs, plus train/load commands.

    Parameters
    ----------
    settings
        Folders, cache limits and analysis defaults (the one loader's,
        :func:`~dashboard.backend.settings.load_settings`, or a test's).
    max_jobs
        Background jobs that run at once on this process's threads.
    remote
        Run the long jobs (preparation, queries, training) on Celery workers when
        ``settings.redis_url`` is set; a worker's own service passes ``False``.
    """

    def __init__(
        self, settings: Settings, *, max_jobs: int = 2, remote: bool = True
    ) -> None:
        self.settings = settings
        s = self.settings
        self.cache = ResultCache(
            s.results_dir,
            locks_dir=s.locks_dir,
            size_limit=s.cache_size_limit,
            eviction_policy=s.eviction_policy,
            memory_items=s.memory_items,
            lock_timeout=s.lock_timeout,
        )
        self.blocks = BlockStore(self.cache, s.blocks_dir)
        self.type_names = CellTypeNames(s.names_dir)
        registry = JobRegistry(
            s.jobs_dir, max_age=s.job_record_max_age, max_count=s.job_record_max_count
        )
        self.jobs = JobRunner(registry, max_workers=max_jobs)
        #: Celery workers for the long jobs when ``redis_url`` is set (``remote=False``: a
        #: worker's own service, which runs what it is given)
        self.remote = CeleryJobs(s, registry) if remote and s.redis_url else None
        self._datasets: BoundedRegistry[str, CiteSeqData] = BoundedRegistry(s.max_loaded_datasets)
        self._models: BoundedRegistry[tuple[str, str], TotalVI] = BoundedRegistry(
            s.max_loaded_datasets
        )
        self._load_lock = threading.RLock()
        self._tls = threading.local()

    def close(self) -> None:
        """Cancel running jobs and close the cache."""
        self.jobs.shutdown(cancel=True)
        if self.remote is not None:
            self.remote.close()
        self.cache.close()

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
        from model.data import CiteSeqDataError

        if options is None:
            options = ReadOptions(batch_key=batch_key, labels_key=labels_key, layer=layer)
        elif (batch_key, labels_key, layer) != (None, None, None):
            msg = "give either options or batch_key/labels_key/layer, not both"
            raise TypeError(msg)
        p = self._resolve(path, self.settings.data_dir)
        if untrusted:
            from dashboard.backend.untrusted import validate_file

            validate_file(p, settings=self.settings, read_kwargs=options.read_kwargs())
        try:
            data = options.read(p)
        except CiteSeqDataError as err:
            raise DatasetNotFound(str(err)) from None
        ref = DatasetRef(
            fingerprint=data.fingerprint(), path=str(p), options=options, name=name or p.name
        )
        with self._load_lock:
            self._datasets.put(ref.fingerprint, data, reloadable=True)
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
        with self._load_lock:
            self._datasets.put(ref.fingerprint, data, reloadable=path is not None)
        return ref

    def dataset(self, ref: DatasetRef | Pair) -> CiteSeqData:
        """The loaded dataset of ``ref`` (reloaded from its path if this process lacks it)."""
        ref = ref.dataset if isinstance(ref, Pair) else ref
        with self._load_lock:
            data = self._datasets.get(ref.fingerprint)
            if data is not None:
                return data
            if ref.path is None:
                msg = f"dataset {ref.name or ref.id} is not loaded here and has no path"
                raise DatasetNotFound(msg)
            fresh = self.open_dataset(ref.path, options=ref.options)
            if fresh.fingerprint != ref.fingerprint:
                self._datasets.pop(fresh.fingerprint, None)
                msg = f"{ref.path} changed since it was opened; open it again"
                raise DatasetNotFound(msg)
            return fresh_data(self._datasets.get(ref.fingerprint), ref.name or ref.id)

    # ==================================================================== models
    def load_model(
        self,
        dataset: DatasetRef,
        path: str | os.PathLike[str],
        *,
        name: str = "",
    ) -> Pair:
        """Load a checkpoint (ours or scvi-tools') for ``dataset`` and register the pair."""
        p = self._resolve(path, self.settings.model_dir)
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
        from model.model_folder import locate_model
        from model.totalvi import CheckpointError

        p = self._resolve(path, self.settings.model_dir)
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
        from dashboard.backend.card import hub_card_for

        return hub_card_for(pair.model.path)

    def add_model(
        self,
        dataset: DatasetRef,
        model: TotalVI,
        *,
        path: str | None = None,
        name: str = "",
    ) -> Pair:
        """Register an in-memory model for ``dataset``; returns the pair."""
        if self.settings.device is not None:
            model.to(self.settings.device)
        ref = ModelRef(fingerprint=model_fingerprint(model), path=path, name=name or "model")
        with self._load_lock:
            self._models.put(
                (dataset.fingerprint, ref.fingerprint), model, reloadable=path is not None
            )
        return Pair(dataset, ref)

    def model(self, pair: Pair) -> TotalVI:
        """The loaded model of ``pair`` (reloaded from its path if this process lacks it)."""
        with self._load_lock:
            key = (pair.dataset.fingerprint, pair.model.fingerprint)
            model = self._models.get(key)
            if model is not None:
                return model
            if pair.model.path is None:
                name = pair.model.name or pair.model.id
                msg = f"model {name} is not loaded here and has no path"
                raise ModelNotFound(msg)
            fresh = self.load_model(pair.dataset, pair.model.path)
            if fresh.model.fingerprint != pair.model.fingerprint:
                self._models.pop((pair.dataset.fingerprint, fresh.model.fingerprint), None)
                msg = f"{pair.model.path} changed since it was loaded; load it again"
                raise ModelNotFound(msg)
            return fresh_data(self._models.get(key), pair.model.name or pair.model.id)

    def train(
        self,
        dataset: DatasetRef,
        *,
        out_dir: str | os.PathLike[str],
        max_epochs: int | None = None,
        n_latent: int = 20,
        seed: int | None = None,
        module_kwargs: dict[str, Any] | None = None,
        progress: ProgressFn | None = None,
        should_stop: Callable[[], bool] | None = None,
        **train_overrides: Any,
    ) -> Pair:
        """Train a TotalVI on ``dataset``, save it to ``out_dir``, register the pair.

        The checkpoint is written only after training succeeds (atomically), so a failed or
        cancelled run leaves an earlier checkpoint in ``out_dir`` untouched; a new
        ``out_dir`` is written as a hidden sibling folder and renamed into place, so it never
        exists half-written. Cancellation (``should_stop``) raises
        ``model.train.TrainingCancelled``.
        """
        from model.totalvi import TotalVI

        data = self.dataset(dataset)
        seed = self.settings.seed if seed is None else seed
        model = TotalVI(data, n_latent=n_latent, seed=seed, **(module_kwargs or {}))
        model.setup_args[OURS] = dataset.options.to_dict()  # how to read its data again
        overrides = dict(train_overrides)
        overrides["seed"] = seed
        if max_epochs is not None:
            overrides["max_epochs"] = max_epochs
        if self.settings.device is not None:
            overrides.setdefault("device", self.settings.device)

        def on_epoch(p: Any) -> None:
            if progress is not None:
                progress(
                    p.fraction,
                    f"epoch {p.epoch}/{p.max_epochs}  ELBO train {p.elbo_train:.1f}  "
                    f"validation {p.elbo_validation:.1f}",
                )

        model.train(progress=on_epoch, should_stop=should_stop, **overrides)
        out = Path(out_dir)
        if out.exists():
            model.save(out, overwrite=True)
        else:
            staging = _staging_folder(out)
            _discard_partial_checkpoint(out)  # a staging folder left by an earlier crash
            model.save(staging)
            try:
                staging.rename(out)
            except OSError:  # ``out`` appeared meanwhile: replace its checkpoint instead
                model.save(out, overwrite=True)
                _discard_partial_checkpoint(out)
        return self.add_model(dataset, model, path=str(out), name=out.name)

    # =================================================================== caching
    def key(self, kind: str, pair: Pair, params: dict[str, Any] | None = None) -> str:
        """Cache key of result ``kind`` for ``pair`` and ``params``."""
        return cache_key(
            kind,
            dataset=pair.dataset.fingerprint,
            model=pair.model.fingerprint,
            params=params or {},
        )

    def _cached(
        self,
        kind: str,
        pair: Pair,
        params: dict[str, Any],
        compute: Callable[[], Any],
        progress: ProgressFn | None = None,
    ) -> Any:
        key = self.key(kind, pair, params)
        self._tls.last_key = key

        def on_wait() -> None:
            if progress is not None:
                progress(0.0, f"waiting for another computation of {kind}")

        value = self.cache.get_or_compute(key, compute, on_wait=on_wait)
        self._tls.last_key = key
        return value

    def _obs_names(self, pair: Pair) -> pd.Index:
        return self.dataset(pair).obs_names

    # =================================================================== queries
    def latent(self, pair: Pair, *, progress: ProgressFn | None = None) -> np.ndarray:
        """Posterior mean of z per cell: ``(n_cells, n_latent)`` float32."""
        seed = self.settings.seed

        def compute() -> np.ndarray:
            model, data = self.model(pair), self.dataset(pair)
            return np.asarray(model.get_latent_representation(data, seed=seed), dtype=np.float32)

        return self._cached("latent", pair, {"seed": seed}, compute, progress)

    def umap(
        self,
        pair: Pair,
        *,
        n_neighbors: int | None = None,
        min_dist: float | None = None,
        seed: int | None = None,
        progress: ProgressFn | None = None,
    ) -> pd.DataFrame:
        """UMAP of the latent space: columns ``UMAP1``, ``UMAP2``, index = cell names."""
        from dashboard.backend.embedding import compute_umap

        s = self.settings
        params = {
            "n_neighbors": int(n_neighbors or s.umap_n_neighbors),
            "min_dist": float(s.umap_min_dist if min_dist is None else min_dist),
            "seed": int(s.seed if seed is None else seed),
        }

        def compute() -> pd.DataFrame:
            if progress is not None:
                progress(0.1, "latent space")
            latent = self.latent(pair)
            if progress is not None:
                progress(0.3, "UMAP")
            xy = compute_umap(latent, **params)
            return pd.DataFrame(xy, index=self._obs_names(pair), columns=["UMAP1", "UMAP2"])

        return self._cached("umap", pair, params, compute, progress)

    def clusters(
        self,
        pair: Pair,
        resolution: float | None = None,
        *,
        n_neighbors: int | None = None,
        progress: ProgressFn | None = None,
    ) -> pd.Series:
        """Leiden cluster per cell (categorical of ``"0"``, ``"1"``..., largest first)."""
        from dashboard.backend.clustering import leiden_clusters

        s = self.settings
        params = {
            "resolution": float(s.leiden_resolution if resolution is None else resolution),
            "n_neighbors": int(n_neighbors or s.n_neighbors),
            "seed": s.seed,
        }
        if params["resolution"] <= 0:
            msg = f"resolution must be positive, got {params['resolution']}"
            raise InvalidSelection(msg)

        def compute() -> pd.Series:
            codes = leiden_clusters(self.latent(pair), **params)
            cats = sorted(set(codes), key=int)
            return pd.Series(
                pd.Categorical(codes, categories=cats),
                index=self._obs_names(pair),
                name="leiden",
            )

        return self._cached("clusters", pair, params, compute, progress)

    def cluster_names(self, pair: Pair, resolution: float | None = None) -> dict[str, str]:
        """Short, distinct name per Leiden cluster from the proteins really up in it and its
        most specific gene (:func:`~dashboard.backend.clustering.name_clusters`); the key
        holds the naming rules' version, so changed rules rename."""
        from dashboard.backend.clustering import NAMING_VERSION, name_clusters

        clusters = self.clusters(pair, resolution)
        params = {
            "clusters": np.asarray(clusters.astype(str)),
            "seed": self.settings.seed,
            "naming": NAMING_VERSION,
        }

        def compute() -> dict[str, str]:
            data = self.dataset(pair)
            # efficiency-free, as DE: names stay those of any scale setting
            protein = self.denoised_protein(pair, protein_scale=EFFICIENCY_FREE)
            foreground = self.foreground_probability(pair).loc[:, protein.columns]
            labels = clusters.astype(str).to_numpy()
            rna, var_names = data.rna, data.var_names
            cells = np.arange(data.n_cells)
            if data.minified is not None:  # no counts: name by the denoised RNA instead
                cells = stratified_subsample(
                    labels, MINIFIED_NAMING_CELLS, seed=self.settings.seed
                )
                rna, var_names = self._denoised_rna_rows(pair, cells)
            return name_clusters(
                labels[cells],
                rna=rna,
                protein=protein.to_numpy()[cells],
                foreground=foreground.to_numpy()[cells],
                var_names=var_names,
                protein_names=protein.columns,
            )

        return self._cached("cluster_names", pair, params, compute)

    def _denoised_rna_rows(self, pair: Pair, cells: np.ndarray) -> tuple[np.ndarray, pd.Index]:
        """Denoised RNA (per 10k) of the ``cells`` positions (sorted), read by chunks of
        cells from the stored blocks, and its genes."""
        manifest = self.denoised_rna_manifest(pair)
        key = self._tls.last_key
        rows = []
        for first, chunk in self.blocks.iter_cells(manifest, 4096):
            inside = cells[(cells >= first) & (cells < first + len(chunk))]
            rows.append(chunk[inside - first])
        self._tls.last_key = key
        values = np.concatenate(rows) if rows else np.zeros((0, len(manifest.columns)))
        return values.astype(np.float32), pd.Index(list(manifest.columns))

    def label_columns(self, pair: Pair | DatasetRef) -> list[str]:
        """obs columns that can serve as cell-type labels (categorical or string)."""
        obs = self.dataset(pair).obs
        out = []
        for c in obs.columns:
            col = obs[c]
            if isinstance(col.dtype, pd.CategoricalDtype) or col.dtype == object:
                n = col.nunique(dropna=True)
                if 1 < n < max(2, len(col) // 2):
                    out.append(str(c))
        return out

    def cell_types(
        self,
        pair: Pair,
        *,
        labels_key: str | None = None,
        resolution: float | None = None,
    ) -> pd.Series:
        """Cell type per cell: the chosen obs column, the dataset's labels, or named clusters.

        With ``labels_key`` the obs column is used; else the labels the dataset was opened
        with; else Leiden clusters named by their markers (:meth:`cluster_names`).
        """
        data = self.dataset(pair)
        key = labels_key or data.labels_key
        if key is not None:
            if key not in data.obs.columns:
                msg = f"no obs column {key!r}; choose one of {self.label_columns(pair)}"
                raise InvalidSelection(msg)
            col = data.obs[key].astype(str)
            return pd.Series(pd.Categorical(col), index=data.obs_names, name="cell_type")
        clusters = self.clusters(pair, resolution)
        names = self.cluster_names(pair, resolution)
        named = clusters.astype(str).map(names)
        cats = [names[c] for c in clusters.cat.categories]
        return pd.Series(
            pd.Categorical(named, categories=cats), index=data.obs_names, name="cell_type"
        )

    # ------------------------------------------------------------ cell-type names
    def shown_cell_types(
        self,
        pair: Pair,
        *,
        labels_key: str | None = None,
        resolution: float | None = None,
    ) -> pd.Series:
        """:meth:`cell_types` under the names the user gave them (the one place renames
        are applied): what pages, hover texts and exports show. Results stay keyed by the
        automatic names (the categories of :meth:`cell_types`)."""
        types = self.cell_types(pair, labels_key=labels_key, resolution=resolution)
        names = self._shown_names(pair, [str(c) for c in types.cat.categories])
        return types.cat.rename_categories([names[str(c)] for c in types.cat.categories])

    def cell_type_names(
        self,
        pair: Pair,
        *,
        labels_key: str | None = None,
        resolution: float | None = None,
    ) -> dict[str, str]:
        """``{type id: shown name}`` of every cell type (id = automatic name; shown = the
        user's name, else the id), in the types' order."""
        types = self.cell_types(pair, labels_key=labels_key, resolution=resolution)
        return self._shown_names(pair, [str(c) for c in types.cat.categories])

    def rename_cell_type(self, pair: Pair, type_id: str, name: str) -> dict[str, str]:
        """Show cell type ``type_id`` as ``name`` from now on, for every page, export and
        process using this cache folder; returns :meth:`cell_type_names`.

        Refused with :class:`InvalidSelection` (one line) when the name is empty, longer
        than 60 characters, not printable or shown by another type.
        """
        ids = [str(c) for c in self.cell_types(pair).cat.categories]
        self.type_names.rename(pair, str(type_id), name, ids)
        return self.cell_type_names(pair)

    def reset_cell_type_names(self, pair: Pair) -> dict[str, str]:
        """Forget the user's names: every type shows its automatic name again."""
        self.type_names.reset(pair)
        return self.cell_type_names(pair)

    def _shown_names(self, pair: Pair, ids: list[str]) -> dict[str, str]:
        renamed = self.type_names.get(pair)
        shown = {t: renamed.get(t, t) for t in ids}
        if len(set(shown.values())) < len(shown):  # a hand-edited file: keep types apart
            return {t: t for t in ids}
        return shown

    def denoised_rna(
        self,
        pair: Pair,
        genes: list[str] | None = None,
        *,
        progress: ProgressFn | None = None,
    ) -> pd.DataFrame:
        """Denoised RNA (per 10k counts), cells x genes (all genes, or ``genes``).

        Stored in blocks of genes (:meth:`denoised_rna_manifest`): asking for some genes
        reads only their rows; ``genes=None`` assembles the whole table (small data; code
        that needs every gene at scale reads block by block: ``self.blocks.read_block``, or
        by chunks of cells: ``self.blocks.iter_cells``, as the ``.h5mu`` export does).
        """
        from dashboard.backend.blocks import read_with_retry

        manifest = self.denoised_rna_manifest(pair, progress=progress)
        if genes is not None:
            known = set(manifest.columns)
            missing = [g for g in genes if g not in known]
            if missing:
                msg = f"unknown gene(s) {missing[:5]}"
                raise InvalidSelection(msg)
        key = self._tls.last_key
        values = read_with_retry(
            self.blocks,
            key,
            manifest,
            lambda: self.denoised_rna_manifest(pair, progress=progress),
            lambda m: self.blocks.read(m, None if genes is None else list(genes)),
        )
        self._tls.last_key = key
        columns = pd.Index(list(manifest.columns) if genes is None else list(genes))
        return pd.DataFrame(values, index=self._obs_names(pair), columns=columns)

    def denoised_rna_manifest(
        self, pair: Pair, *, progress: ProgressFn | None = None
    ) -> BlockManifest:
        """Compute (once) and return the manifest of the stored denoised RNA blocks.

        One pass of the model over the cells in chunks writes gene blocks of
        ``settings.denoise_block_genes`` genes (memory: one chunk of cells x genes, never
        the whole table); the denoised protein comes out of the same pass and is stored
        under its own key if missing. Cache key: kind ``"denoised_rna"``, params
        ``{"n_samples", "library_size": 1e4, "seed"}``.
        """
        from dashboard.backend.denoise import chunk_cells_for, denoised_chunks

        params = self._denoise_params()
        key = self.denoised_rna_key(pair)
        self._tls.last_key = key

        def compute(open_writer: Any) -> None:
            model, data = self.model(pair), self.dataset(pair)
            genes = [str(g) for g in model.var_names]
            writer = open_writer(data.n_cells, genes, self.settings.denoise_block_genes)
            pro_parts = []
            scale = self.protein_scale()
            for first, rna, pro in denoised_chunks(
                model,
                data,
                chunk_cells=chunk_cells_for(len(genes)),
                protein_scale=scale,
                **params,
            ):
                writer.write(rna)
                pro_parts.append(pro)
                if progress is not None:
                    done = (first + len(rna)) / max(1, data.n_cells)
                    progress(0.95 * done, f"denoised RNA: {first + len(rna)} cells")
            pro_all = (
                np.concatenate(pro_parts)
                if pro_parts
                else np.zeros((0, len(model.protein_names)), np.float32)
            )
            protein = pd.DataFrame(pro_all, index=data.obs_names, columns=model.protein_names)
            self._denoised_protein(pair, computed=protein, protein_scale=scale)

        def on_wait() -> None:
            if progress is not None:
                progress(0.0, "waiting for another computation of denoised RNA")

        manifest = self.blocks.manifest(key, compute, on_wait=on_wait)
        self._tls.last_key = key
        return manifest

    def denoised_rna_key(self, pair: Pair) -> str:
        """Cache key of the denoised RNA manifest (its blocks live under ``blocks_dir``)."""
        return self.key("denoised_rna", pair, self._denoise_params())

    def protein_scale(self, scale: str | None = None) -> ProteinScale:
        """``scale`` checked, or the configured default (``settings.protein_scale``)."""
        return check_protein_scale(self.settings.protein_scale if scale is None else scale)

    def denoised_protein(
        self,
        pair: Pair,
        *,
        protein_scale: str | None = None,
        progress: ProgressFn | None = None,
    ) -> pd.DataFrame:
        """Denoised protein (foreground rate), cells x proteins, on ``protein_scale``
        (default :meth:`protein_scale`: measured, times the batch's capture efficiency)."""
        return self._denoised_protein(pair, protein_scale=protein_scale, progress=progress)

    def _denoise_params(self) -> dict[str, Any]:
        return {
            "n_samples": self.settings.denoise_n_samples,
            "library_size": 1e4,
            "seed": self.settings.seed,
        }

    def _denoised_protein(
        self,
        pair: Pair,
        *,
        computed: pd.DataFrame | None = None,
        protein_scale: str | None = None,
        progress: ProgressFn | None = None,
    ) -> pd.DataFrame:
        """Cached denoised protein (kind ``"denoised_protein"``, params ``{"n_samples",
        "seed", "protein_scale"}`` plus ``"unmeasured": "predicted"`` when some cells lack
        proteins).

        ``computed``: the protein table of a denoised-RNA pass (same draws as a protein-only
        pass, on the same scale), stored if the key is missing instead of running the model
        again.
        """
        from dashboard.backend.denoise import denoised_protein, fill_unmeasured

        params = {
            "n_samples": self.settings.denoise_n_samples,
            "seed": self.settings.seed,
            "protein_scale": self.protein_scale(protein_scale),
        }
        predicted = self._predicts_unmeasured(pair)
        key_params = {**params, "unmeasured": "predicted"} if predicted else params

        def compute() -> pd.DataFrame:
            model, data = self.model(pair), self.dataset(pair)
            pro = denoised_protein(model, data, **params) if computed is None else computed
            if not predicted:
                return pro

            def predict(cells: np.ndarray, batches: list[int], proteins: list[str]) -> Any:
                return model.get_normalized_expression(
                    data,
                    indices=cells,
                    transform_batch=batches,
                    gene_list=[],
                    protein_list=proteins,
                    n_samples=params["n_samples"],
                    return_numpy=True,
                    seed=params["seed"],
                    protein_scale=params["protein_scale"],
                )[1]

            return fill_unmeasured(pro, model, data, predict)

        return self._cached("denoised_protein", pair, key_params, compute, progress)

    def _predicts_unmeasured(self, pair: Pair) -> bool:
        """True if some cells of the dataset lack proteins (a mapped query without those
        antibodies): protein tables then hold predictions for them, decoded in batches that
        measured the protein (:func:`~dashboard.backend.denoise.fill_unmeasured`)."""
        data = self.dataset(pair)
        if data.minified is not None:  # all-zero counts: the model's panel says
            from dashboard.backend.denoise import unmeasured_proteins

            return unmeasured_proteins(self.model(pair), data) is not None
        mask = data.protein_batch_mask
        if mask is None or data.n_cells == 0:
            return False
        present = np.bincount(data.batch, minlength=data.n_batch) > 0
        return bool((~np.asarray(mask, dtype=bool)[present]).any())

    def foreground_probability(
        self, pair: Pair, *, progress: ProgressFn | None = None
    ) -> pd.DataFrame:
        """Probability that each protein count is foreground, cells x proteins."""
        from dashboard.backend.denoise import fill_unmeasured, foreground_probability

        params = {"n_samples": self.settings.denoise_n_samples, "seed": self.settings.seed}
        predicted = self._predicts_unmeasured(pair)
        key_params = {**params, "unmeasured": "predicted"} if predicted else params

        def compute() -> pd.DataFrame:
            model, data = self.model(pair), self.dataset(pair)
            fg = foreground_probability(model, data, **params)
            if not predicted:
                return fg

            def predict(cells: np.ndarray, batches: list[int], proteins: list[str]) -> Any:
                return model.get_protein_foreground_probability(
                    data,
                    indices=cells,
                    transform_batch=batches,
                    protein_list=proteins,
                    n_samples=params["n_samples"],
                    return_numpy=True,
                    seed=params["seed"],
                )

            return fill_unmeasured(fg, model, data, predict)

        return self._cached("foreground", pair, key_params, compute, progress)

    def imputed_proteins(
        self, pair: Pair, *, progress: ProgressFn | None = None
    ) -> tuple[pd.DataFrame, pd.DataFrame]:
        """Proteins for every cell decoded where measured (on the configured
        :meth:`protein_scale`), and which entries are imputed."""
        from dashboard.backend.denoise import imputed_proteins

        params = {
            "n_samples": self.settings.denoise_n_samples,
            "seed": self.settings.seed,
            "protein_scale": self.protein_scale(),
        }

        def compute() -> tuple[pd.DataFrame, pd.DataFrame]:
            return imputed_proteins(self.model(pair), self.dataset(pair), **params)

        return self._cached("imputed", pair, params, compute, progress)

    def _de_params(self) -> dict[str, Any]:
        s = self.settings
        return {
            "n_samples_overall": s.de_n_samples,
            "delta": s.de_delta,
            "fdr_target": s.de_fdr,
            "z_samples_per_cell": s.de_z_samples_per_cell,
            "seed": s.seed,
        }

    def de_one_vs_rest(
        self,
        pair: Pair,
        *,
        labels_key: str | None = None,
        resolution: float | None = None,
        progress: ProgressFn | None = None,
        should_stop: Callable[[], bool] | None = None,
    ) -> pd.DataFrame:
        """Bayesian DE of every cell type versus the rest (genes and proteins)."""
        from dashboard.backend.de import de_one_vs_rest

        types = self.cell_types(pair, labels_key=labels_key, resolution=resolution)
        params = {**self._de_params(), "labels": np.asarray(types.astype(str))}

        def compute() -> pd.DataFrame:
            return self._without_counts(
                pair,
                de_one_vs_rest(
                    self.model(pair),
                    self.dataset(pair),
                    types.astype(str).to_numpy(),
                    progress=progress,
                    should_stop=should_stop,
                    **self._de_params(),
                ),
            )

        return self._cached("de_one_vs_rest", pair, params, compute, progress)

    def de_groups(
        self,
        pair: Pair,
        idx1: Any,
        idx2: Any | None = None,
        *,
        name1: str = "selection",
        name2: str | None = None,
        progress: ProgressFn | None = None,
    ) -> pd.DataFrame:
        """Bayesian DE of a selection versus another selection (``idx2=None``: the rest).

        Selections are cell positions or boolean masks over the dataset's cells.
        """
        from dashboard.backend.de import de_groups, selection_positions

        n = self.dataset(pair).n_cells
        pos1 = selection_positions(idx1, n, name="group 1")
        pos2 = None if idx2 is None else selection_positions(idx2, n, name="group 2")
        params = {
            **self._de_params(),
            "idx1": pos1,
            "idx2": pos2,
            "name1": name1,
            "name2": name2,
        }

        def compute() -> pd.DataFrame:
            return self._without_counts(
                pair,
                de_groups(
                    self.model(pair),
                    self.dataset(pair),
                    pos1,
                    pos2,
                    name1=name1,
                    name2=name2,
                    max_cells=self.settings.max_de_cells,
                    **self._de_params(),
                ),
            )

        return self._cached("de_groups", pair, params, compute, progress)

    def _without_counts(self, pair: Pair, de: pd.DataFrame) -> pd.DataFrame:
        """A DE table whose raw-count columns (means, non-zero proportions) are NaN for
        minified data, whose all-zero counts would read as "never expressed"."""
        if self.dataset(pair).minified is None:
            return de
        from model.differential import RAW_COLUMNS

        out = de.copy()
        for col in RAW_COLUMNS:
            if col in out:
                out[col] = np.nan
        return out

    def metrics(
        self,
        pair: Pair,
        *,
        labels_key: str | None = None,
        resolution: float | None = None,
        n_samples: int | None = None,
        progress: ProgressFn | None = None,
    ) -> MetricsResult:
        """Model-card metrics (CV tables and DE metric per modality), as scvi-hub.

        Protein tables from measured-scale samples, with scvi-tools 1.4.2's (efficiency left
        out) as ``result.other_scale`` and the calibration of both (:meth:`shown_metrics`
        picks a scale). The DE metric's groups are those of :meth:`metric_groups`; the
        result says which.
        """
        from dashboard.backend.metrics import (
            CALIBRATION_CELLS,
            CALIBRATION_SAMPLES,
            PPC_BATCH_SIZE,
            compute_metrics,
        )

        self.require_counts(pair, "the model-card metrics (observed vs generated counts)")
        model = self.model(pair)
        types, groups = self.metric_groups(pair, labels_key=labels_key, resolution=resolution)
        params = {
            "labels": np.asarray(types.astype(str)),
            "groups": groups,
            "de_n_top": "at least 1",  # older results used scvi's int(0.1 n), 0 below 10
            "n_samples": int(n_samples or self.settings.n_posterior_samples),
            "seed": self.settings.seed,
            "train_indices": model.train_indices,
            "validation_indices": model.validation_indices,
            "protein_scale": "measured, and scvi-tools 1.4.2's",
            "batch_size": PPC_BATCH_SIZE,
            "calibration": [CALIBRATION_SAMPLES, CALIBRATION_CELLS],
        }

        def compute() -> MetricsResult:
            return compute_metrics(
                model,
                self.dataset(pair),
                types.astype(str).to_numpy(),
                n_samples=params["n_samples"],
                seed=params["seed"],
                groups=groups,
                progress=progress,
            )

        return self._cached("metrics", pair, params, compute, progress)

    def require_counts(self, pair: Pair, what: str) -> None:
        """Raise :class:`MinifiedData` (one line naming ``what``) when the pair's dataset is
        minified: its counts were dropped and only the latent posterior is kept."""
        if self.dataset(pair).minified is not None:
            name = pair.dataset.name or pair.dataset.id
            msg = (
                f"{name} is minified (counts were dropped, only the latent posterior is kept): "
                f"{what} need the original counts"
            )
            raise MinifiedData(msg)

    def metric_groups(
        self, pair: Pair, *, labels_key: str | None = None, resolution: float | None = None
    ) -> tuple[pd.Series, str]:
        """The DE metric's group per cell, and a line saying what the groups are.

        ``labels_key`` when given; else the labels the checkpoint was set up with, when it has
        them and the dataset holds that obs column (as scvi-tools' ``create_criticism_report``
        uses the registered labels key); else :meth:`cell_types` (the dataset's labels, or
        our Leiden clusters named by markers, where scvi-tools would cluster the raw data).
        """
        if labels_key:
            types = self.cell_types(pair, labels_key=labels_key)
            return types, f"obs column '{labels_key}' (chosen)"
        data = self.dataset(pair)
        registered = (self.model(pair).setup_args or {}).get("labels_key")
        if registered in (None, "", "_scvi_labels"):
            registered = None
        if data.labels_key is not None and data.labels_key != registered:  # named when opened
            types = self.cell_types(pair)
            instead = "" if registered is None else f", instead of the registered {registered!r}"
            return types, (
                f"the dataset's labels, obs column '{data.labels_key}' (named when it was "
                f"opened{instead})"
            )
        if registered is not None and registered in data.obs.columns:
            types = self.cell_types(pair, labels_key=str(registered))
            return types, (
                f"the checkpoint's registered labels, obs column '{registered}' "
                "(as scvi-tools' model card)"
            )
        types = self.cell_types(pair, resolution=resolution)
        if data.labels_key is not None:
            what = f"the dataset's labels, obs column '{data.labels_key}'"
        else:
            what = (
                "our Leiden clusters of the latent space, named by markers (where scvi-tools "
                "would run Leiden on the raw counts)"
            )
        why = (
            f"the checkpoint's labels '{registered}' are not in this dataset"
            if registered is not None
            else "the checkpoint has no registered labels"
        )
        return types, f"{what}: {why}"

    def shown_metrics(
        self,
        pair: Pair,
        *,
        labels_key: str | None = None,
        resolution: float | None = None,
        protein_scale: str | None = None,
        **kwargs: Any,
    ) -> MetricsResult:
        """:meth:`metrics` from protein samples on ``protein_scale`` (default
        :meth:`protein_scale`), the DE-metric rows under the cell types' shown names (the
        cached result keeps the automatic names)."""
        import dataclasses

        result = self.metrics(pair, labels_key=labels_key, resolution=resolution, **kwargs)
        result = result.for_scale(self.protein_scale(protein_scale))
        names = self.cell_type_names(pair, labels_key=labels_key, resolution=resolution)
        if all(k == v for k, v in names.items()):
            return result

        def renamed(r: MetricsResult, other: MetricsResult | None) -> MetricsResult:
            tables = {mod: t.rename(index=names) for mod, t in r.diff_exp.items()}
            return dataclasses.replace(r, diff_exp=tables, other_scale=other)

        other = None if result.other_scale is None else renamed(result.other_scale, None)
        return renamed(result, other)

    def metrics_markdown(self, pair: Pair, **kwargs: Any) -> dict[str, str]:
        """scvi-hub ``metrics.json`` content: markdown per metric, per modality (cell types
        under their shown names)."""
        return self.shown_metrics(pair, **kwargs).markdown()

    def model_summary(self, pair: Pair) -> dict[str, Any]:
        """Model parameters, setup arguments, data registry and summary statistics."""
        from dashboard.backend.metrics import model_card_properties

        return model_card_properties(
            self.model(pair), self.dataset(pair), options=pair.dataset.options
        )

    def model_card(self, pair: Pair, *, with_metrics: bool = True, **kwargs: Any) -> str:
        """Markdown of the card's Metrics and Model Properties sections (with
        ``protein_scale="efficiency-free"``, what scvi-tools 1.4.2 writes; on the measured
        scale a sentence before the metrics says so)."""
        from dashboard.backend.metrics import MEASURED_CARD_NOTE, model_card_markdown

        if not with_metrics:
            return model_card_markdown(self.model_summary(pair), None)
        result = self.shown_metrics(pair, **kwargs)
        measured = result.protein_scale == MEASURED and result.other_scale is not None
        return model_card_markdown(
            self.model_summary(pair),
            result.markdown(),
            note=MEASURED_CARD_NOTE if measured else "",
        )

    def training_history(self, pair: Pair) -> pd.DataFrame:
        """Per-epoch training history of the model (empty if unknown)."""
        return self.model(pair).history.copy()

    def precompute(
        self,
        pair: Pair,
        *,
        progress: ProgressFn | None = None,
        should_stop: Callable[[], bool] | None = None,
    ) -> dict[str, str]:
        """Fill the cache with everything the pages show; returns ``{result: cache key}``."""
        steps: list[tuple[str, Callable[[], Any]]] = [
            ("latent", lambda: self.latent(pair)),
            ("umap", lambda: self.umap(pair)),
            ("clusters", lambda: self.clusters(pair)),
            ("denoised_rna", lambda: self.denoised_rna_manifest(pair)),
            ("denoised", lambda: self.denoised_protein(pair)),
            ("cell_types", lambda: self.cell_types(pair)),
            ("foreground", lambda: self.foreground_probability(pair)),
            ("imputed", lambda: self.imputed_proteins(pair)),
            ("de_one_vs_rest", lambda: self.de_one_vs_rest(pair, should_stop=should_stop)),
            ("metrics", lambda: self.metrics(pair)),
        ]
        if self.dataset(pair).minified is not None:  # the metrics need the counts
            steps = [(name, step) for name, step in steps if name != "metrics"]
        keys: dict[str, str] = {}
        for i, (name, step) in enumerate(steps):
            if should_stop is not None and should_stop():
                msg = f"precompute cancelled before {name}"
                raise InterruptedError(msg)
            if progress is not None:
                progress(i / len(steps), name)
            step()
            keys[name] = getattr(self._tls, "last_key", "")
        if progress is not None:
            progress(1.0, "done")
        return keys

    # ====================================================================== jobs
    def job_body(self, kind: str, payload: dict[str, Any]) -> JobBody:
        """What job ``kind`` runs for ``payload`` (JSON), the same on a server thread and
        on a Celery worker: ``prepare`` ({pair, steps}), ``query`` ({query, pair, params})
        or ``train`` ({dataset, kwargs})."""
        if kind == "prepare":
            pair, steps = Pair.from_dict(payload["pair"]), str(payload.get("steps"))
            if steps not in STEP_LISTS:
                msg = f"unknown step list {steps!r}"
                raise InvalidSelection(msg)

            def prepare(ctx: JobContext) -> dict[str, float]:
                return prepare_pair(
                    self, pair, steps=steps, progress=ctx.progress, should_stop=ctx.cancelled
                )

            return JobBody(prepare, result_json=lambda seconds: seconds)
        if kind == "query":
            return self._query_body(
                str(payload["query"]), Pair.from_dict(payload["pair"]), payload["params"]
            )
        if kind == "train":
            dataset, kwargs = DatasetRef.from_dict(payload["dataset"]), payload["kwargs"]
            out_dir = kwargs.get("out_dir")

            def train(ctx: JobContext) -> dict[str, Any]:
                try:
                    return train_in_process(ctx, self.settings, dataset, kwargs)
                except BaseException:
                    if out_dir is not None:
                        _discard_partial_checkpoint(out_dir)
                    raise

            return JobBody(train, result_json=lambda result: result)
        msg = f"unknown job kind {kind!r}"
        raise InvalidSelection(msg)

    def _query_body(self, query: str, pair: Pair, params: dict[str, Any]) -> JobBody:
        if query not in JOB_QUERIES:
            msg = f"unknown job query {query!r}; choose one of {JOB_QUERIES}"
            raise InvalidSelection(msg)
        method = getattr(self, query)
        accepted = inspect.signature(method).parameters

        def run(ctx: JobContext) -> Any:
            ctx.check()
            kwargs = dict(params)
            if "progress" in accepted:
                kwargs["progress"] = ctx.progress
            if "should_stop" in accepted:
                kwargs["should_stop"] = ctx.cancelled
            result = method(pair, **kwargs)
            ctx.check()
            return result

        return JobBody(run, result_key=lambda: getattr(self._tls, "last_key", None))

    def _dispatch(self, kind: str, name: str, payload: dict[str, Any], params: dict) -> str:
        """Run job ``kind`` (recorded as ``name``) on a Celery worker when configured,
        else on this process's threads; returns the job id."""
        if self.remote is not None:
            return self.remote.submit(name, {"kind": kind, **payload}, params=params)
        body = self.job_body(kind, payload)
        return self.jobs.submit(
            name, body.fn, params=params, result_key=body.result_key, result_json=body.result_json
        )

    def submit(self, query: str, pair: Pair, **params: Any) -> str:
        """Run query ``query`` (one of :data:`JOB_QUERIES`) for ``pair`` as a background job
        (on a Celery worker when ``redis_url`` is set). Returns the job id; the job's record
        gets the result's cache key when it finishes."""
        if query not in JOB_QUERIES:
            msg = f"unknown job query {query!r}; choose one of {JOB_QUERIES}"
            raise InvalidSelection(msg)
        payload = {"query": query, "pair": pair.to_dict(), "params": _json_params(params)}
        described = {"pair": pair.to_dict(), **{k: _describe(v) for k, v in params.items()}}
        return self._dispatch("query", query, payload, described)

    def submit_prepare(self, pair: Pair, *, steps: str = "essential") -> str:
        """Prepare ``pair`` (:mod:`dashboard.backend.preparation`) as a background job;
        ``steps``: ``essential`` (what every page needs) or ``warm`` (what later pages use)."""
        name = "prepare" if steps == "essential" else "warm"
        payload = {"pair": pair.to_dict(), "steps": steps}
        return self._dispatch("prepare", name, payload, {"pair": pair.to_dict()})

    def submit_train(self, dataset: DatasetRef, *, process: bool = False, **kwargs: Any) -> str:
        """:meth:`train` as a background job (cancel stops training at the next step).

        On a Celery worker when ``redis_url`` is set. Else, with ``process=True``, training
        runs in a child process (spawn) whose pid is in the job's record, so it can be
        killed like any process; the dataset must then have been opened from a file (the
        child or worker reads it again) and ``kwargs`` must be picklable (JSON for a
        worker). If the child dies, what it was writing under ``out_dir`` is removed.
        """
        params = {"dataset": dataset.to_dict(), **{k: _describe(v) for k, v in kwargs.items()}}
        if (self.remote is not None or process) and dataset.path is None:
            msg = "training in a separate process needs a dataset opened from a file"
            raise InvalidSelection(msg)
        if self.remote is not None:
            payload = {"dataset": dataset.to_dict(), "kwargs": _json_params(kwargs)}
            return self._dispatch("train", "train", payload, params)
        if process:
            out_dir = kwargs.get("out_dir")
            return self.jobs.submit_process(
                "train",
                train_in_process,
                (self.settings, dataset, kwargs),
                params=params,
                cleanup=None if out_dir is None else lambda: _discard_partial_checkpoint(out_dir),
            )

        def run(ctx: JobContext) -> Pair:
            return self.train(dataset, progress=ctx.progress, should_stop=ctx.cancelled, **kwargs)

        return self.jobs.submit(
            "train", run, params=params, result_json=lambda pair: pair.to_dict()
        )

    def submit_load_model(self, dataset: DatasetRef, path: str | os.PathLike[str]) -> str:
        """:meth:`load_model` as a background job."""

        def run(ctx: JobContext) -> Pair:
            ctx.progress(0.1, f"loading {path}")
            return self.load_model(dataset, path)

        return self.jobs.submit(
            "load_model",
            run,
            params={"dataset": dataset.to_dict(), "path": str(path)},
            result_json=lambda pair: pair.to_dict(),
        )

    # ============================================================== query mapping
    def open_query(
        self,
        path: str | os.PathLike[str],
        *,
        batch_key: str | None = None,
        name: str = "",
        untrusted: bool = False,
    ) -> DatasetRef:
        """Read a query dataset (RNA-only ``.h5ad`` allowed) and register it
        (``untrusted``: validated in a child process first, as :meth:`open_dataset`)."""
        from dashboard.backend.mapping import open_query

        return open_query(self, path, batch_key=batch_key, name=name, untrusted=untrusted)

    def map_query(
        self,
        pair: Pair,
        query: DatasetRef,
        *,
        max_epochs: int | None = None,
        k: int | None = None,
        progress: ProgressFn | None = None,
        should_stop: Callable[[], bool] | None = None,
    ) -> QueryMapResult:
        """Map ``query`` onto ``pair``'s model; registers and returns the combined pair
        (:func:`dashboard.backend.mapping.map_query`). ``pair`` is left unchanged."""
        from dashboard.backend.mapping import DEFAULT_K, map_query

        return map_query(
            self,
            pair,
            query,
            max_epochs=max_epochs,
            k=DEFAULT_K if k is None else k,
            progress=progress,
            should_stop=should_stop,
        )

    def submit_map_query(self, pair: Pair, query: DatasetRef, **kwargs: Any) -> str:
        """:meth:`map_query` as a background job (cancel stops training at the next step)."""

        def run(ctx: JobContext) -> QueryMapResult:
            ctx.check()
            return self.map_query(
                pair, query, progress=ctx.progress, should_stop=ctx.cancelled, **kwargs
            )

        return self.jobs.submit(
            "map_query",
            run,
            params={
                "pair": pair.to_dict(),
                "query": query.to_dict(),
                **{k: _describe(v) for k, v in kwargs.items()},
            },
            result_json=lambda result: result.to_dict(),
        )

    def job(self, job_id: str) -> JobInfo:
        """A job's record (status, progress, message, error, result key).

        Inside a request only the owner's jobs and the server's own are found: another
        user's job id reads as unknown (:class:`JobNotFound`)."""
        info = self.jobs.status(job_id)
        if not info.visible_to(current_owner()):
            msg = f"no job {job_id}"
            raise JobNotFound(msg)
        return info

    def discard_partial_checkpoint(self, job_id: str) -> None:
        """Remove what a training job that did not finish left in its output folder (a
        worker killed mid-save leaves a hidden staging folder; never a model)."""
        out_dir = self.jobs.status(job_id).params.get("out_dir")
        if isinstance(out_dir, str) and out_dir:
            _discard_partial_checkpoint(out_dir)

    def jobs_of(self, owner: str | None) -> list[JobInfo]:
        """The job records ``owner`` may see (``None``: all), newest first."""
        return [info for info in self.jobs.registry.list() if info.visible_to(owner)]

    def cancel(self, job_id: str) -> JobInfo:
        """Request cancellation of a job (the owner's only, inside a request)."""
        self.job(job_id)
        return self.jobs.cancel(job_id)

    def wait(self, job_id: str, timeout: float | None = None) -> JobInfo:
        """Block until a job finishes; returns its record."""
        return self.jobs.wait(job_id, timeout)

    def job_result(self, job_id: str, timeout: float | None = None) -> Any:
        """A finished job's result (from this process, else from the cache by its key)."""
        self.job(job_id)
        try:
            return self.jobs.result(job_id, timeout)
        except JobNotFound:
            info = self.jobs.status(job_id)
            if info.result is not None and info.kind in {"train", "load_model"}:
                return Pair.from_dict(info.result)
            if info.result_key is not None:
                value = self.cache.get(info.result_key)
                if value is not None:
                    return value
            raise

    # ================================================================== helpers
    @staticmethod
    def _resolve(path: str | os.PathLike[str], base: Path) -> Path:
        p = Path(path).expanduser()
        if not p.exists() and not p.is_absolute() and (base / p).exists():
            return base / p
        return p


def train_in_process(
    ctx: JobContext, settings: Settings, dataset: DatasetRef, kwargs: dict[str, Any]
) -> dict[str, Any]:
    """Body of a training job in another process (a spawned child or a Celery worker):
    rebuild the service from ``settings``, reread the dataset from its path, train, save
    (atomically) and return the new pair as a dict (the job's ``result``)."""
    service = AnalysisService(settings, max_jobs=1, remote=False)
    try:
        ctx.progress(0.0, "reading the dataset")
        service.dataset(dataset)
        ctx.check()
        pair = service.train(
            dataset,
            progress=lambda f, m: ctx.progress(0.02 + 0.98 * f, m),
            should_stop=ctx.cancelled,
            **kwargs,
        )
        return pair.to_dict()
    finally:
        service.close()


def _trained_checkpoint(
    path: Path, *, data: CiteSeqData | None = None, shown: Path | None = None
) -> TotalVI:
    """The trained model of checkpoint ``path`` (with ``data`` attached when given), its
    failures as the backend's one-line errors (``shown``: the path the message names)."""
    from model.totalvi import CheckpointError, TotalVI

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
    from model.data import CiteSeqDataError

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


def _staging_folder(out: Path) -> Path:
    """Hidden sibling of ``out`` where a new checkpoint is written before it is renamed."""
    return out.parent / f".{out.name}.partial-{os.getpid()}"


def _discard_partial_checkpoint(out_dir: str | os.PathLike[str]) -> None:
    """Remove what an interrupted save left for ``out_dir``: its staging folders, and
    temporary files in ``out_dir`` itself (which is removed when that leaves it empty)."""
    import shutil

    out = Path(out_dir)
    if out.parent.is_dir():
        for staging in out.parent.glob(f".{out.name}.partial-*"):
            shutil.rmtree(staging, ignore_errors=True)
    if out.is_dir():
        for tmp in out.glob(".model.*.tmp"):
            tmp.unlink(missing_ok=True)
        if not any(out.iterdir()):
            out.rmdir()


@dataclass(frozen=True)
class JobBody:
    """What a job runs (``fn(ctx)``) and what its record keeps: the result's cache key
    (``result_key()``, read after ``fn``) and a small JSON-able result."""

    fn: Callable[[JobContext], Any]
    result_key: Callable[[], str | None] | None = None
    result_json: Callable[[Any], Any] | None = None


def _json_params(params: dict[str, Any]) -> dict[str, Any]:
    """Job parameters as JSON (arrays as lists, paths as strings) for a worker."""
    out: dict[str, Any] = {}
    for k, v in params.items():
        if isinstance(v, np.ndarray):
            v = v.tolist()
        elif isinstance(v, os.PathLike):
            v = os.fspath(v)
        out[k] = v
    return out


def _describe(value: Any) -> Any:
    """JSON-able description of a job parameter (arrays summarised)."""
    if isinstance(value, np.ndarray):
        return f"array{value.shape}"
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return repr(value)[:200]


DashboardService = AnalysisService  # the name the page layer uses

__all__ = ["JOB_QUERIES", "AnalysisService", "BackendError", "DashboardService", "MinifiedData"]
