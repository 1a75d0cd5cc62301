"""The analysis service: the one object pages, the CLI and scripts ask for results.

:class:`AnalysisService` is the composition root of the backend. It builds, from
:class:`~dashboard.backend.settings.Settings` alone, the parts that answer:

- ``registry`` (:class:`~dashboard.backend.registry.Registry`): open and add datasets and
  models, hand them out by reference;
- ``results`` (:class:`~dashboard.backend.results.Results`): the cache key of a result and
  :meth:`~dashboard.backend.results.Results.cached`, the one way into the results cache;
- the cached queries about a (dataset, model) :class:`~dashboard.backend.refs.Pair`:
  ``embeddings`` (latent space, UMAP, clusters), ``annotation`` (cell types and their names),
  ``expression`` (denoised values), ``differential`` (DE), ``card`` (model-card metrics),
  ``concordance`` (each protein against its gene's RNA, per cell type) and ``integration``
  (the scib-metrics integration scorecard, per-cell batch mixing), ``qc`` (model QC per
  cell: reconstruction error, latent uncertainty, background, CV ratio; and a posterior
  predictive check per feature), ``gene_sets`` (per-cell scores of gene sets);
- ``training`` (:class:`~dashboard.backend.training.Training`) and ``background``
  (:class:`~dashboard.backend.background.BackgroundJobs`: jobs with progress and cancel, on
  threads or Celery workers), over ``jobs`` (the :class:`~dashboard.backend.jobs.JobRunner`).

Every public method of the parts is also the service's own (``service.umap(pair)`` is
``service.embeddings.umap(pair)``), so callers need not know which part answers. A
background worker in another process builds the same service, opens the same cache and
reloads datasets and models from the paths recorded in the references (checking their
fingerprints).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TYPE_CHECKING

from dashboard.backend import mapping
from dashboard.backend.annotation import Annotation
from dashboard.backend.background import JOB_QUERIES, BackgroundJobs
from dashboard.backend.blocks import BlockStore
from dashboard.backend.cache import ResultCache
from dashboard.backend.celery_jobs import CeleryJobs
from dashboard.backend.cell_qc import CellQC
from dashboard.backend.concordance import Concordance
from dashboard.backend.differential import Differential
from dashboard.backend.embeddings import Embeddings
from dashboard.backend.errors import BackendError, MinifiedData
from dashboard.backend.expression import Expression
from dashboard.backend.gene_sets import GeneSetScores
from dashboard.backend.integration import Integration
from dashboard.backend.jobs import JobRegistry, JobRunner
from dashboard.backend.label_sets import LabelSets
from dashboard.backend.model_card import ModelCard
from dashboard.backend.names import CellTypeNames
from dashboard.backend.preparation import precompute
from dashboard.backend.registry import Registry
from dashboard.backend.results import ProgressFn, Results
from dashboard.backend.training import Training

if TYPE_CHECKING:
    from dashboard.backend.mapping import QueryMapResult
    from dashboard.backend.refs import DatasetRef, Pair
    from dashboard.backend.settings import Settings


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

    def __init__(self, settings: Settings, *, max_jobs: int = 2, remote: bool = True) -> None:
        self.settings = s = settings
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
        self.label_sets = LabelSets(s.names_dir)
        records = JobRegistry(
            s.jobs_dir, max_age=s.job_record_max_age, max_count=s.job_record_max_count
        )
        self.jobs = JobRunner(records, max_workers=max_jobs, nice=s.job_nice)
        #: Celery workers for the long jobs when ``redis_url`` is set (``remote=False``: a
        #: worker's own service, which runs what it is given)
        self.remote = CeleryJobs(s, records) if remote and s.redis_url else None

        r = self.registry = Registry(s)
        self.results = Results(self.cache, self.blocks)
        self.training = Training(s, r)
        self.embeddings = Embeddings(self.results, r, s)
        self.expression = Expression(self.results, r, s)
        self.annotation = Annotation(
            self.results,
            r,
            s,
            embeddings=self.embeddings,
            expression=self.expression,
            type_names=self.type_names,
            label_sets=self.label_sets,
        )
        self.differential = Differential(self.results, r, s, self.annotation)
        self.card = ModelCard(self.results, r, s, self.annotation)
        self.concordance = Concordance(
            self.results, r, s, annotation=self.annotation, expression=self.expression
        )
        self.integration = Integration(
            self.results, r, s, card=self.card, embeddings=self.embeddings
        )
        self.qc = CellQC(self.results, r, s)
        self.gene_sets = GeneSetScores(self.results, r, s, expression=self.expression)
        self.background = BackgroundJobs(self, self.jobs, self.remote)
        self._expose_parts()

    def _expose_parts(self) -> None:
        """The parts' public methods as the service's own (their signatures, docs and
        types), so callers need not know which part answers."""
        r, b = self.registry, self.background
        self.open_dataset = r.open_dataset
        self.add_dataset = r.add_dataset
        self.dataset = r.dataset
        self.load_model = r.load_model
        self.open_model = r.open_model
        self.add_model = r.add_model
        self.model = r.model
        self.hub_card = r.hub_card
        self.train = self.training.train
        self.key = self.results.key
        self.cached = self.results.cached
        self.latent = self.embeddings.latent
        self.umap = self.embeddings.umap
        self.clusters = self.embeddings.clusters
        self.cluster_names = self.annotation.cluster_names
        self.label_columns = self.annotation.label_columns
        self.cell_types = self.annotation.cell_types
        self.shown_cells = self.annotation.shown_cells
        self.shown_cell_types = self.annotation.shown_cell_types
        self.cell_type_names = self.annotation.cell_type_names
        self.rename_cell_type = self.annotation.rename_cell_type
        self.reset_cell_type_names = self.annotation.reset_cell_type_names
        self.undo_cell_type_name = self.annotation.undo_cell_type_name
        self.label_set = self.annotation.label_set
        self.label_set_snapshot = self.annotation.label_set_snapshot
        self.denoised_rna = self.expression.denoised_rna
        self.denoised_rna_manifest = self.expression.denoised_rna_manifest
        self.denoised_rna_state = self.expression.denoised_rna_state
        self.denoised_rna_block = self.expression.denoised_rna_block
        self.denoised_rna_key = self.expression.denoised_rna_key
        self.protein_scale = self.expression.protein_scale
        self.denoised_protein = self.expression.denoised_protein
        self.foreground_probability = self.expression.foreground_probability
        self.imputed_proteins = self.expression.imputed_proteins
        self.de_one_vs_rest = self.differential.de_one_vs_rest
        self.de_groups = self.differential.de_groups
        self.metrics = self.card.metrics
        self.require_counts = self.card.require_counts
        self.metric_groups = self.card.metric_groups
        self.shown_metrics = self.card.shown_metrics
        self.metrics_markdown = self.card.metrics_markdown
        self.model_summary = self.card.model_summary
        self.model_card = self.card.model_card
        self.training_history = self.card.training_history
        self.integration_scores = self.integration.integration_scores
        self.has_integration_scores = self.integration.has_integration_scores
        self.require_batches = self.integration.require_batches
        self.batch_mixing = self.integration.batch_mixing
        self.has_batch_mixing = self.integration.has_batch_mixing
        self.protein_gene_pairs = self.concordance.protein_gene_pairs
        self.gene_protein_concordance = self.concordance.gene_protein_concordance
        self.cell_qc = self.qc.cell_qc
        self.cell_diagnostics = self.qc.cell_diagnostics
        self.cell_cv = self.qc.cell_cv
        self.has_cell_cv = self.qc.has_cell_cv
        self.feature_check = self.qc.feature_check
        self.gene_set_score = self.gene_sets.gene_set_score
        self.job_body = b.job_body
        self.submit = b.submit
        self.submit_local = b.submit_local
        self.submit_prepare = b.submit_prepare
        self.submit_train = b.submit_train
        self.submit_load_model = b.submit_load_model
        self.submit_map_query = b.submit_map_query
        self.submit_upload = b.submit_upload
        self.refuse = b.refuse
        self.job = b.job
        self.jobs_of = b.jobs_of
        self.cancel = b.cancel
        self.wait = b.wait
        self.job_result = b.job_result
        self.discard_partial_checkpoint = b.discard_partial_checkpoint

    def close(self) -> None:
        """Cancel running jobs and close the cache."""
        self.jobs.shutdown(cancel=True)
        if self.remote is not None:
            self.remote.close()
        self.cache.close()

    def precompute(
        self,
        pair: Pair,
        *,
        progress: ProgressFn | None = None,
        should_stop: Callable[[], bool] | None = None,
    ) -> dict[str, str]:
        """Fill the cache with everything the pages show; returns ``{result: cache key}``
        (:func:`~dashboard.backend.preparation.precompute`)."""
        return precompute(self, pair, progress=progress, should_stop=should_stop)

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
        return mapping.open_query(self, path, batch_key=batch_key, name=name, untrusted=untrusted)

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
        return mapping.map_query(
            self,
            pair,
            query,
            max_epochs=max_epochs,
            k=mapping.DEFAULT_K if k is None else k,
            progress=progress,
            should_stop=should_stop,
        )


DashboardService = AnalysisService  # the name the page layer uses

__all__ = [
    "JOB_QUERIES",
    "AnalysisService",
    "BackendError",
    "DashboardService",
    "MinifiedData",
]
