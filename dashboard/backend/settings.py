"""Backend configuration: one frozen dataclass, buildable from environment variables.

Background workers rebuild the service from :class:`Settings` alone, so everything a worker
needs to find data, models and cached results lives here.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any, Literal

from model.protein_scale import check_protein_scale

REPO_ROOT = Path(__file__).resolve().parents[2]
ENV_PREFIX = "TOTALVI_EXPLORER_"

EvictionPolicy = Literal[
    "least-recently-stored", "least-recently-used", "least-frequently-used", "none"
]


@dataclass(frozen=True)
class Settings:
    """Where data, models and the cache live, cache limits and analysis defaults.

    Parameters
    ----------
    data_dir
        Folder of datasets (relative dataset names are resolved against it).
    model_dir
        Folder of model checkpoints (relative model names are resolved against it).
    cache_dir
        Root of the cache: ``results/`` (diskcache of computed results), ``blocks/`` (gene
        blocks of denoised RNA), ``jobs/`` (job registry), ``locks/`` (per-key file locks),
        ``callbacks/`` (Dash background callbacks) and ``names/`` (the user's cell-type
        names, one JSON file per dataset and model). Gitignored under ``data/cache/`` by
        default.
    cache_size_limit
        Bytes the results cache and the denoised RNA blocks may use together; beyond it the
        least recently used block sets and results are evicted (recomputed when asked
        again). A block set larger than the whole limit is kept and served while it is the
        newest thing written, and evicted first at the next write or start.
    eviction_policy
        diskcache's eviction policy for the results cache.
    job_record_max_age
        Seconds a finished job's record (``jobs/``) is kept (default 7 days); pruned at start
        and as jobs are submitted. Running jobs are never pruned.
    job_record_max_count
        Finished job records kept at most (the newest), so a flood of jobs cannot fill the disk.
    memory_items
        Results also kept in process memory (LRU), so repeated page requests skip unpickling.
    lock_timeout
        Seconds to wait for another thread or process computing the same result.
    device
        Torch device for model queries (``None``: the model's device, CUDA when present).
    seed
        Seed of every stochastic step (model sampling, UMAP, Leiden, DE draws).
    umap_n_neighbors, umap_min_dist
        UMAP defaults (scanpy's ``min_dist`` 0.5 default).
    n_neighbors, leiden_resolution
        kNN graph size and Leiden resolution for clusters.
    denoise_n_samples
        Posterior samples averaged for denoised expression and foreground probability.
    denoise_block_genes
        Genes per stored block of denoised RNA (reading one gene reads one row of one block).
    de_n_samples, de_delta, de_fdr, de_z_samples_per_cell
        Bayesian DE settings (scvi-tools defaults: 5000 paired draws, delta 0.25, FDR 0.05).
    n_posterior_samples
        Posterior predictive samples for the model-card metrics (3, as on scvi-hub).
    protein_scale
        Scale of denoised and imputed protein values and the Metrics page's default tables:
        ``"measured"`` (the decoder's rate times the batch's learned capture efficiency, the
        scale of the counts and of the likelihood the model was trained with) or
        ``"efficiency-free"`` (the efficiency left out, as scvi-tools 1.4.2).
    max_de_cells
        Largest group a DE request may name (``None``: no limit).
    redis_url
        When set, Dash background callbacks use Celery with this Redis broker.
    max_upload_bytes
        Largest dataset upload the Model page accepts (refused before anything is stored).
    auth_file
        Credentials file (``user:hash`` lines) enabling HTTP basic auth on every route.
    train_in_process
        Train in a separate process (the Model page): it can be cancelled or killed like any
        process, and a crash or out-of-memory kill leaves the server and the active model as
        they were. ``False`` trains on a worker thread of the server instead.
    max_points
        Most cells a cell view (UMAP, linked view) plots; larger datasets show a seeded
        subsample stratified by cell type, while selections still cover every cell.
    max_loaded_datasets
        Datasets (and, separately, models) the server keeps in memory, least recently used
        evicted first: a dataset merely picked is read again from its file when needed.
    validate_memory_limit
        Bytes of memory that reading an untrusted file (an upload) may take in its
        validation child process (:mod:`dashboard.backend.untrusted`); a file may use 20
        times its size when that is more. Over it, the file is refused with one line.
    validate_timeout
        Seconds (wall clock and CPU) that validation child may take before the file is
        refused.
    """

    data_dir: Path = REPO_ROOT / "data"
    model_dir: Path = REPO_ROOT / "data" / "models"
    cache_dir: Path = REPO_ROOT / "data" / "cache"
    cache_size_limit: int = 8 * 1024**3
    eviction_policy: EvictionPolicy = "least-recently-used"
    job_record_max_age: float = 7 * 24 * 3600.0
    job_record_max_count: int = 1000
    memory_items: int = 32
    lock_timeout: float = 3600.0
    device: str | None = None
    seed: int = 0
    umap_n_neighbors: int = 15
    umap_min_dist: float = 0.5
    n_neighbors: int = 15
    leiden_resolution: float = 1.0
    denoise_n_samples: int = 5
    denoise_block_genes: int = 256
    de_n_samples: int = 5000
    de_delta: float = 0.25
    de_fdr: float = 0.05
    de_z_samples_per_cell: int = 1
    n_posterior_samples: int = 3
    protein_scale: str = "measured"
    max_de_cells: int | None = None
    redis_url: str | None = None
    max_upload_bytes: int = 500 * 1024**2
    auth_file: Path | None = None
    train_in_process: bool = True
    max_points: int = 200_000
    max_loaded_datasets: int = 4
    validate_memory_limit: int = 4 * 1024**3
    validate_timeout: float = 600.0

    def __post_init__(self) -> None:
        for name in ("data_dir", "model_dir", "cache_dir"):
            object.__setattr__(self, name, Path(getattr(self, name)).expanduser())
        if self.auth_file is not None:
            object.__setattr__(self, "auth_file", Path(self.auth_file).expanduser())
        if self.denoise_block_genes <= 0:
            msg = f"denoise_block_genes must be positive, got {self.denoise_block_genes}"
            raise ValueError(msg)
        if self.max_upload_bytes <= 0:
            msg = f"max_upload_bytes must be positive, got {self.max_upload_bytes}"
            raise ValueError(msg)
        if self.max_loaded_datasets <= 0:
            msg = f"max_loaded_datasets must be positive, got {self.max_loaded_datasets}"
            raise ValueError(msg)
        if self.max_points <= 0:
            msg = f"max_points must be positive, got {self.max_points}"
            raise ValueError(msg)
        if self.validate_memory_limit <= 0 or self.validate_timeout <= 0:
            msg = "validate_memory_limit and validate_timeout must be positive"
            raise ValueError(msg)
        if self.job_record_max_age < 0 or self.job_record_max_count < 1:
            msg = (
                "job_record_max_age must be >= 0 and job_record_max_count >= 1, got "
                f"{self.job_record_max_age} and {self.job_record_max_count}"
            )
            raise ValueError(msg)
        check_protein_scale(self.protein_scale)
        if self.cache_size_limit <= 0:
            msg = f"cache_size_limit must be positive, got {self.cache_size_limit}"
            raise ValueError(msg)
        if self.eviction_policy not in EvictionPolicy.__args__:  # type: ignore[attr-defined]
            msg = f"eviction_policy must be one of {EvictionPolicy.__args__}"  # type: ignore[attr-defined]
            raise ValueError(msg)

    # ------------------------------------------------------------------- folders
    @property
    def results_dir(self) -> Path:
        """diskcache folder of computed results."""
        return self.cache_dir / "results"

    @property
    def blocks_dir(self) -> Path:
        """Block files of large tables (denoised RNA); their manifests are in results."""
        return self.cache_dir / "blocks"

    @property
    def jobs_dir(self) -> Path:
        """Job registry (one JSON file per job)."""
        return self.cache_dir / "jobs"

    @property
    def locks_dir(self) -> Path:
        """Per-key lock files that make one process compute a missing result."""
        return self.cache_dir / "locks"

    @property
    def callbacks_dir(self) -> Path:
        """Dash's own background-callback bookkeeping (kept apart from results)."""
        return self.cache_dir / "callbacks"

    @property
    def names_dir(self) -> Path:
        """The user's cell-type names (one JSON file per dataset and model); not a cache:
        clearing results leaves them."""
        return self.cache_dir / "names"

    def with_overrides(self, **changes: Any) -> Settings:
        """A copy with some fields replaced."""
        return replace(self, **changes)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Settings from ``TOTALVI_EXPLORER_<FIELD>`` variables (e.g. ``..._CACHE_DIR``).

        Values are converted to the field's type; ``REDIS_URL`` is also read unprefixed.
        Keyword ``overrides`` win over the environment.
        """
        values = cls.env_values(env)
        values.update(overrides)
        return cls(**values)

    @classmethod
    def env_values(cls, env: Mapping[str, str] | None = None) -> dict[str, Any]:
        """Only the fields set in the environment, converted (see :meth:`from_env`).

        ``TOTALVI_EXPLORER_MAX_UPLOAD_MB`` (megabytes) is read when ``..._MAX_UPLOAD_BYTES``
        is not set.
        """
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        defaults = cls()
        for f in fields(cls):
            raw = env.get(ENV_PREFIX + f.name.upper())
            if raw is None and f.name == "redis_url":
                raw = env.get("REDIS_URL")
            if raw is None and f.name == "max_upload_bytes":
                mb = env.get(ENV_PREFIX + "MAX_UPLOAD_MB")
                if mb is not None and mb.strip():
                    try:
                        values[f.name] = int(float(mb) * 1024**2)
                    except ValueError:
                        msg = f"{ENV_PREFIX}MAX_UPLOAD_MB={mb!r} is not a number"
                        raise ValueError(msg) from None
                continue
            if raw is None:
                continue
            values[f.name] = _convert(raw, getattr(defaults, f.name), f.name)
        return values


def _convert(raw: str, default: Any, name: str) -> Any:
    if raw.strip().lower() in {"", "none", "null"}:
        return None
    if isinstance(default, Path) or name == "auth_file":
        return Path(raw)
    if isinstance(default, bool):
        return raw.strip().lower() in {"1", "true", "yes", "on"}
    try:
        if isinstance(default, int) or name in {"max_de_cells"}:
            return int(raw)
        if isinstance(default, float):
            return float(raw)
    except ValueError:
        msg = f"{ENV_PREFIX}{name.upper()}={raw!r} is not a valid {type(default).__name__}"
        raise ValueError(msg) from None
    return raw
