"""Configuration: :class:`Settings` (what the backend and its workers need), the options of
``run``/``serve`` and the read keys, and the one loader every subcommand builds them with.

Precedence, lowest first: the dataclass field defaults (the only place a default is
written), a flat TOML file (``--config``, else ``$TOTALVI_EXPLORER_CONFIG``), the environment
(``TOTALVI_EXPLORER_<KEY>``; ``REDIS_URL`` too) and the command line's flags. Every value, a
string or a TOML value, goes through one converter driven by the field's type; a bad one is
a :class:`ConfigError`, one line naming the file and key, the variable or the flag.

Background workers rebuild the service from :class:`Settings` alone, so everything a worker
needs to find data, models and cached results lives there.
"""

from __future__ import annotations

import os
import tomllib
import types
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields, replace
from functools import cache
from pathlib import Path
from typing import Any, Literal, NewType, Union, get_args, get_origin, get_type_hints

from dashboard.backend.errors import BackendError
from model.protein_scale import check_protein_scale

REPO_ROOT = Path(__file__).resolve().parents[2]
ENV_PREFIX = "TOTALVI_EXPLORER_"
#: The variable naming a config file when no ``--config`` is given.
CONFIG_ENV = ENV_PREFIX + "CONFIG"

EvictionPolicy = Literal[
    "least-recently-stored", "least-recently-used", "least-frequently-used", "none"
]
#: A read key (``layer``, ``batch_key``, ...): a string kept as given, ``""`` clearing the part.
ReadKey = NewType("ReadKey", str)

#: Numeric keys that must be positive (the others may not be negative).
POSITIVE = frozenset(
    {
        "threads", "cache_size_limit", "job_record_max_count", "denoise_block_genes",
        "max_upload_bytes", "max_points", "max_loaded_datasets", "validate_memory_limit",
        "validate_timeout", "leiden_exact_max_cells", "umap_n_epochs",
    }
)  # fmt: skip


class ConfigError(BackendError, ValueError):
    """A bad config file, key or value: one line naming the file and key, the environment
    variable or the flag."""


def _cache_folder(name: str, doc: str) -> property:
    """A read-only ``Settings`` property: the folder ``name`` under ``cache_dir``."""

    def folder(self: Settings) -> Path:
        return self.cache_dir / name

    folder.__doc__ = doc
    return property(folder)


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
        ``workspaces/`` (every user's workspace) and ``names/`` (the user's cell-type
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
    umap_max_fit_cells
        Above this many cells umap-learn is fitted on a seeded sample of that many and the
        others are placed through their latent neighbours (the first look at a large model
        in seconds; ``bench/first_look.py`` measures the layout's neighbour preservation).
    umap_n_epochs
        Epochs of umap-learn's layout optimisation. umap-learn's default is 200 above
        10,000 cells and 500 below; 200 at every size keeps the 15-neighbour preservation
        of the latent (0.3656 vs 0.3658 at 6,855 cells) in 40% of the time.
    warm_up_layout
        When the server or a Celery worker starts, compile umap-learn's and pynndescent's
        numba kernels in a background thread (:func:`~dashboard.backend.warm_up.warm_up`,
        about 40 s of CPU on 2 cores once per process), so the first new model's layout
        and clusters do not wait for the compile.
    n_neighbors, leiden_resolution
        kNN graph size and Leiden resolution for clusters.
    leiden_exact_max_cells
        Up to this many cells the clusters' kNN graph is exact (scikit-learn); above it,
        pynndescent's approximate graph (the exact search is quadratic in cells: 11 s at
        72,042 cells against 1 s for pynndescent, whose neighbours agree 99.9%; a million
        cells would take the better part of an hour).
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
        When set, the long jobs (preparation, queries, training, upload checks) run on
        Celery workers through this Redis broker; else on the server's own threads.
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
    job_nice
        How much lower the CPU priority of the server's job threads is than that of the
        threads answering page requests (Linux nice values, 0-19; 0: the same), so a
        model's warm steps or a DE on every core do not slow the pages others are using
        (:mod:`~dashboard.backend.priority`). Celery workers run at whatever priority they
        were started with.
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
    umap_max_fit_cells: int = 20_000
    umap_n_epochs: int = 200
    warm_up_layout: bool = True
    n_neighbors: int = 15
    leiden_resolution: float = 1.0
    leiden_exact_max_cells: int = 20_000
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
    job_nice: int = 10

    def __post_init__(self) -> None:
        for name in ("data_dir", "model_dir", "cache_dir"):
            object.__setattr__(self, name, Path(getattr(self, name)).expanduser())
        if self.auth_file is not None:
            object.__setattr__(self, "auth_file", Path(self.auth_file).expanduser())
        for name in sorted(POSITIVE & {f.name for f in fields(self)}):
            if getattr(self, name) <= 0:
                msg = f"{name} must be positive, got {getattr(self, name)}"
                raise ValueError(msg)
        if self.job_record_max_age < 0:
            msg = f"job_record_max_age must be >= 0, got {self.job_record_max_age}"
            raise ValueError(msg)
        if not 0 <= self.job_nice <= 19:
            msg = f"job_nice must be from 0 to 19 (a nice value), got {self.job_nice}"
            raise ValueError(msg)
        check_protein_scale(self.protein_scale)
        if self.eviction_policy not in get_args(EvictionPolicy):
            msg = f"eviction_policy must be one of {get_args(EvictionPolicy)}"
            raise ValueError(msg)

    # ------------------------------------------------------------------- folders
    results_dir = _cache_folder("results", "diskcache folder of computed results.")
    blocks_dir = _cache_folder(
        "blocks", "Block files of large tables (denoised RNA); their manifests are in results."
    )
    jobs_dir = _cache_folder("jobs", "Job registry (one JSON file per job).")
    locks_dir = _cache_folder(
        "locks", "Per-key lock files that make one process compute a missing result."
    )
    workspaces_dir = _cache_folder(
        "workspaces", "Every user's workspace record (one JSON file per workspace)."
    )
    names_dir = _cache_folder(
        "names",
        "The user's cell-type names (one JSON file per dataset and model); not a cache:\n"
        "clearing results leaves them.",
    )

    def with_overrides(self, **changes: Any) -> Settings:
        """A copy with some fields replaced."""
        return replace(self, **changes)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Settings from defaults and ``TOTALVI_EXPLORER_<FIELD>`` variables only (no config
        file), through :func:`load_config`'s converter; keyword ``overrides`` win.

        Prefer :func:`load_settings` (what the command line builds) passed down.
        """
        env = os.environ if env is None else env
        return replace(_load(None, env, None).settings, **overrides)


@dataclass(frozen=True)
class ServeOptions:
    """How ``run`` and ``serve`` listen and what they open at start.

    Parameters
    ----------
    host, port
        Address and port to listen on (port 0: any free port).
    threads
        Waitress worker threads (``serve``).
    trusted_proxy
        Address of a reverse proxy whose ``X-Forwarded-*`` headers are trusted.
    dev
        ``serve`` runs Dash's development server, debug on, instead of waitress.
    data, model
        Dataset and model folder opened at start (``None``: the data in the model's folder,
        else the embedded data; the embedded model).
    """

    host: str = "127.0.0.1"
    port: int = 8050
    threads: int = 8
    trusted_proxy: str | None = None
    dev: bool = False
    data: Path | None = None
    model: Path | None = None


@dataclass(frozen=True)
class ReadKeys:
    """Where a file keeps its counts and keys, over the model's registry (or, with no model,
    the readers' defaults); ``None``: not set, ``""``: clear the part (e.g. one batch)."""

    layer: ReadKey | None = None
    batch_key: ReadKey | None = None
    labels_key: ReadKey | None = None
    protein_key: ReadKey | None = None
    protein_layer: ReadKey | None = None
    rna_modality: ReadKey | None = None

    def given(self) -> dict[str, str]:
        """The keys that are set (``ReadOptions.overridden`` keywords)."""
        return {
            f.name: getattr(self, f.name)
            for f in fields(self)
            if getattr(self, f.name) is not None
        }


#: The dataclasses whose fields are the config keys.
SECTIONS: tuple[type, ...] = (Settings, ServeOptions, ReadKeys)
#: Keys that set another key in other units: ``max_upload_mb`` (MiB) sets ``max_upload_bytes``
#: when that is not set in the same place.
ALIASES: dict[str, tuple[str, int]] = {"max_upload_mb": ("max_upload_bytes", 1024**2)}
_BOOLS = {"1": True, "true": True, "yes": True, "on": True}
_BOOLS |= {"0": False, "false": False, "no": False, "off": False}


@dataclass(frozen=True)
class Config:
    """What a subcommand runs with; ``origin`` says where each key's value came from
    (``default``, ``file PATH``, ``environment`` or ``command line``)."""

    settings: Settings
    serve: ServeOptions
    read: ReadKeys
    origin: Mapping[str, str]

    @property
    def read_flags(self) -> dict[str, str]:
        """The read keys that are set (:meth:`ReadKeys.given`)."""
        return self.read.given()


@cache
def config_keys() -> dict[str, Any]:
    """Every config key with its type (the fields of :data:`SECTIONS`)."""
    kinds: dict[str, Any] = {}
    for section in SECTIONS:
        hints = get_type_hints(section)
        kinds.update({f.name: hints[f.name] for f in fields(section)})
    return kinds


def default_of(key: str) -> Any:
    """The default of a config key (its dataclass field's default)."""
    for section in SECTIONS:
        for f in fields(section):
            if f.name == key:
                return f.default
    target, factor = ALIASES[key]
    return default_of(target) / factor


def describe_default(key: str) -> str:
    """A config key's default as help text shows it (``data/cache``, ``off``, ``none``)."""
    value = default_of(key)
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, Path):
        try:
            return value.relative_to(REPO_ROOT).as_posix()
        except ValueError:
            return str(value)
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def env_name(key: str) -> str:
    """The environment variable of a config key (``TOTALVI_EXPLORER_PORT``)."""
    return ENV_PREFIX + key.upper()


def convert(value: Any, kind: Any, where: str, *, base: Path | None = None) -> Any:
    """``value`` (a string from the environment or a flag, or a TOML value) as type ``kind``.

    Booleans are true/false, yes/no, 1/0 or on/off (any case); integers may hold
    underscores (``2_000_000_000``); ``""`` and ``"none"`` are ``None`` for an optional
    field only. A relative path is taken relative to ``base`` (a config file's folder).
    Anything else raises :class:`ConfigError` naming ``where``.
    """
    args = get_args(kind)
    optional = get_origin(kind) in (Union, types.UnionType) and type(None) in args
    if optional:
        kind = next(a for a in args if a is not type(None))
    if kind is ReadKey:
        if not isinstance(value, str):
            _fail(where, f"{value!r} is not a string ('' clears it)")
        return value.strip()
    if value is None or (
        optional and isinstance(value, str) and value.strip().lower() in {"", "none"}
    ):
        if optional:
            return None
        _fail(where, "needs a value")
    if kind is bool:
        if isinstance(value, bool):
            return value
        word = str(value).strip().lower() if isinstance(value, str | int) else None
        if word not in _BOOLS:
            _fail(where, f"{value!r} is not a boolean (true/false, yes/no, 1/0, on/off)")
        return _BOOLS[word]
    if kind is int or kind is float:
        noun = "an integer" if kind is int else "a number"
        if isinstance(value, bool) or not isinstance(value, int | float | str):
            _fail(where, f"{value!r} is not {noun}")
        if kind is int and isinstance(value, float):
            _fail(where, f"{value!r} is not {noun}")
        try:
            return kind(value.strip() if isinstance(value, str) else value)
        except ValueError:
            _fail(where, f"{value!r} is not {noun}")
    if get_origin(kind) is Literal:
        choices = get_args(kind)
        word = value.strip() if isinstance(value, str) else value
        if word not in choices:
            _fail(where, f"{value!r} is not one of {', '.join(map(str, choices))}")
        return word
    if kind is Path:
        if not isinstance(value, str | os.PathLike) or not str(value).strip():
            _fail(where, f"{value!r} is not a path")
        path = Path(value).expanduser()
        return base / path if base is not None and not path.is_absolute() else path
    if not isinstance(value, str):
        _fail(where, f"{value!r} is not a string")
    return value


def _fail(where: str, problem: str) -> Any:
    raise ConfigError(f"{where}: {problem}")


def _check_range(key: str, value: Any, where: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return
    if key in POSITIVE and value <= 0:
        _fail(where, f"must be positive, got {value}")
    if isinstance(value, int) and value < 0:
        _fail(where, f"must not be negative, got {value}")
    if key == "port" and value > 65535:
        _fail(where, f"must be at most 65535, got {value}")


def _layer(
    items: Iterable[tuple[str, Any, str]], base: Path | None = None
) -> dict[str, tuple[Any, str]]:
    """``(key, raw value, where)`` converted to ``{key: (value, where)}``; an alias yields
    to its target key set in the same layer."""
    kinds = config_keys()
    aliased: dict[str, tuple[Any, str]] = {}
    direct: dict[str, tuple[Any, str]] = {}
    for key, raw, where in items:
        if key in ALIASES:
            target, factor = ALIASES[key]
            amount = convert(raw, float, where)
            _check_range(target, amount, where)
            aliased[target] = (int(amount * factor), where)
            continue
        value = convert(raw, kinds[key], where, base=base)
        _check_range(key, value, where)
        direct[key] = (value, where)
    return {**aliased, **direct}


def read_config_file(path: str | os.PathLike[str], *, named_by: str = "") -> dict[str, Any]:
    """The keys of a flat TOML config file, converted (paths relative to the file's folder).

    A missing or unreadable file, bad TOML, an unknown key or a bad value raises
    :class:`ConfigError` naming the file (and the key).
    """
    return {k: v for k, (v, _) in _file_layer(Path(path), named_by).items()}


def _file_layer(path: Path, named_by: str = "") -> dict[str, tuple[Any, str]]:
    by = f" (named by {named_by})" if named_by else ""
    try:
        with path.open("rb") as fh:
            raw = tomllib.load(fh)
    except FileNotFoundError:
        _fail(str(path), f"config file not found{by}")
    except OSError as err:
        _fail(str(path), f"cannot read the config file ({err.strerror or err}){by}")
    except tomllib.TOMLDecodeError as err:
        _fail(str(path), f"not valid TOML ({err})")
    known = {*config_keys(), *ALIASES}
    for key in raw:
        if key not in known:
            _fail(str(path), f"unknown key '{key}' (known: {', '.join(sorted(known))})")
    items = ((key, value, f"{path}, key '{key}'") for key, value in raw.items())
    return _layer(items, base=path.resolve().parent)


def _env_layer(env: Mapping[str, str]) -> dict[str, tuple[Any, str]]:
    items = []
    for key in (*ALIASES, *config_keys()):
        name = env_name(key)
        if name not in env and key == "redis_url" and "REDIS_URL" in env:
            name = "REDIS_URL"
        if name in env:
            items.append((key, env[name], name))
    return _layer(items)


def _flag_layer(flags: Mapping[str, Any]) -> dict[str, tuple[Any, str]]:
    known = {*config_keys(), *ALIASES}
    items = []
    for key, value in flags.items():
        if value is None:  # not given
            continue
        if key not in known:
            _fail("command line", f"unknown option '{key}'")
        items.append((key, value, "--" + key.replace("_", "-")))
    return _layer(items)


def load_config(
    *,
    config_file: str | os.PathLike[str] | None = None,
    env: Mapping[str, str] | None = None,
    flags: Mapping[str, Any] | None = None,
) -> Config:
    """Merge defaults < the TOML ``config_file`` (default: ``$TOTALVI_EXPLORER_CONFIG``) <
    ``env`` (default: ``os.environ``) < ``flags`` (config keys; ``None`` values are flags
    not given) into a :class:`Config`; any bad value raises :class:`ConfigError`."""
    env = os.environ if env is None else env
    named_by = ""
    if config_file is None and env.get(CONFIG_ENV):
        config_file, named_by = env[CONFIG_ENV], CONFIG_ENV
    return _load(None if config_file is None else Path(config_file), env, flags, named_by)


def load_settings(
    *,
    config_file: str | os.PathLike[str] | None = None,
    env: Mapping[str, str] | None = None,
    flags: Mapping[str, Any] | None = None,
) -> Settings:
    """The :class:`Settings` of :func:`load_config`."""
    return load_config(config_file=config_file, env=env, flags=flags).settings


def _load(
    config_file: Path | None,
    env: Mapping[str, str],
    flags: Mapping[str, Any] | None,
    named_by: str = "",
) -> Config:
    layers: list[tuple[str, dict[str, tuple[Any, str]]]] = []
    if config_file is not None:
        layers.append((f"file {config_file}", _file_layer(config_file, named_by)))
    layers.append(("environment", _env_layer(env)))
    layers.append(("command line", _flag_layer(flags or {})))
    merged: dict[str, tuple[Any, str]] = {}
    origin = dict.fromkeys(config_keys(), "default")
    for name, values in layers:
        merged.update(values)
        origin.update(dict.fromkeys(values, name))
    built = []
    for section in SECTIONS:
        names = {f.name for f in fields(section)}
        given = {k: v for k, (v, _) in merged.items() if k in names}
        try:
            built.append(section(**given))
        except ValueError as err:
            text = str(err)
            where = next((w for k, (_, w) in merged.items() if k in names and k in text), "")
            raise ConfigError(f"{where or 'settings'}: {text}") from None
    settings, serve, read = built
    return Config(settings=settings, serve=serve, read=read, origin=origin)
