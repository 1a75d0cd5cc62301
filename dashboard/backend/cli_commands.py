"""Subcommands and option helpers of ``totalvi-explorer``: ``train``, ``precompute``,
``export`` and ``simulate``, and the flags every command shares.

``dashboard/cli.py`` wires them in with :func:`add_subcommands`. Every command builds its
configuration with :func:`config_of` (the one loader,
:func:`~dashboard.backend.settings.load_config`: defaults < ``--config`` file < environment
< flags) before anything else, shows progress and turns backend and configuration errors
into one ``error: ...`` line and exit status 2.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import fields
from pathlib import Path
from typing import Any, get_args

from dashboard.backend.errors import BackendError
from dashboard.backend.owner import acting_as
from dashboard.backend.settings import (
    CONFIG_ENV,
    ENV_PREFIX,
    Config,
    describe_default,
    load_config,
)
from model.config import Precision, TotalVIConfig, TrainConfig
from model.protein_scale import PROTEIN_SCALES

COMMANDS = ("train", "precompute", "export", "simulate")


class DefaultsFormatter(argparse.HelpFormatter):
    """Help that states every option's default.

    Options whose help already says ``default`` (or ``required``) keep it as written, which
    is how options with a computed or ``None`` default explain it; flags add
    ``(default: off)``; other options add ``(default: VALUE)``.
    """

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        said = "default" in text or "required" in text
        if said or not action.option_strings or action.default is argparse.SUPPRESS:
            return text
        if action.nargs == 0:
            return f"{text} (default: off)"
        return f"{text} (default: %(default)s)"


def _default(cls: type, name: str) -> Any:
    """The default of dataclass ``cls``'s field ``name``."""
    return next(f.default for f in fields(cls) if f.name == name)


# ------------------------------------------------------------------- configuration flags
def add_config_flag(
    p: argparse.ArgumentParser,
    key: str,
    text: str,
    *,
    group: Any = None,
    shown: str | None = None,
    **kwargs: Any,
) -> None:
    """``--KEY`` for config key ``key``, read by :func:`config_of` through the loader.

    It has no argparse default (``None``: not given, so the file, environment or field
    default applies) and no argparse type (the loader converts it); its help ``text`` gets
    the field's default (or ``shown``) unless it already states one.
    """
    if "default" not in text:
        text = f"{text} (default: {describe_default(key) if shown is None else shown})"
    (group or p).add_argument(
        "--" + key.replace("_", "-"), dest=key, default=None, help=text, **kwargs
    )
    p.set_defaults(config_flags=(*(p.get_default("config_flags") or ()), key))
    _set_epilog(p)


def add_config_file_flag(p: argparse.ArgumentParser) -> None:
    """``--config FILE``, and an epilog saying where else the options may be set."""
    p.add_argument(
        "--config",
        type=Path,
        default=None,
        metavar="FILE",
        help=f"TOML config file (default: ${CONFIG_ENV}, else none)",
    )
    p.set_defaults(config_flags=p.get_default("config_flags") or ())
    _set_epilog(p)


def _set_epilog(p: argparse.ArgumentParser) -> None:
    """Say which options may also come from the environment or the config file."""
    keys = p.get_default("config_flags") or ()
    if not keys:
        return
    options = ", ".join("--" + k.replace("_", "-") for k in keys)
    p.epilog = (
        f"{options} can also be set as {ENV_PREFIX}<OPTION> (e.g. {ENV_PREFIX}"
        f"{keys[0].upper()}) or as keys of a TOML --config file (e.g. {keys[0]} = ...), as "
        "can every other setting (see README): flag > environment > file > default."
    )


def config_flags(args: argparse.Namespace) -> dict[str, Any]:
    """The config flags of a parsed command, by key (``None``: not given)."""
    return {key: getattr(args, key) for key in getattr(args, "config_flags", ())}


def config_of(args: argparse.Namespace) -> Config:
    """The configuration of a parsed command: its config flags over the environment over
    its ``--config`` file (or ``$TOTALVI_EXPLORER_CONFIG``) over the defaults."""
    return load_config(config_file=getattr(args, "config", None), flags=config_flags(args))


def add_read_flags(p: argparse.ArgumentParser, *, with_model: bool = True) -> None:
    """The flags that say where a file keeps its counts and keys, the same on every command.

    ``with_model``: the command opens a checkpoint, whose registry (its setup arguments)
    gives the defaults; a flag overrides that part. ``''`` clears a part (``--batch-key ''``
    is one batch, ``--layer ''`` reads ``X``).
    """
    default = "the model's registry, else " if with_model else ""
    g = p.add_argument_group("where the data keeps its counts and keys")
    for key, text, shown in (
        ("layer", "RNA counts layer", "X"),
        ("batch_key", "obs column of batches, '' for one batch", "none, one batch"),
        ("labels_key", "obs column of cell-type labels", "none, types from clusters"),
        (
            "protein_key",
            "protein counts: the obsm key of an .h5ad, the modality of an .h5mu",
            "protein_expression / protein",
        ),
        ("protein_layer", "layer of the .h5mu protein modality", "X"),
        ("rna_modality", "RNA modality of an .h5mu", "rna"),
    ):
        add_config_flag(p, key, text, group=g, shown=default + shown)


# -------------------------------------------------------------------------- subcommands
def add_subcommands(
    subparsers: Any, *, include: Sequence[str] = COMMANDS
) -> dict[str, argparse.ArgumentParser]:
    """Register ``train``, ``precompute``, ``export`` and ``simulate`` (or those in
    ``include``).

    ``subparsers`` is what ``ArgumentParser.add_subparsers()`` returns. Each parser gets
    ``func`` set to its command function. Returns the parsers by name.
    """
    parsers: dict[str, argparse.ArgumentParser] = {}
    fmt = {"formatter_class": DefaultsFormatter}
    if "train" in include:
        p = subparsers.add_parser(
            "train", help="train TotalVI on a CITE-seq file and save it", **fmt
        )
        p.add_argument("data", type=Path, help=".h5ad, .h5mu, 10x .h5 or 10x folder")
        add_read_flags(p, with_model=False)
        p.add_argument(
            "--n-latent",
            type=int,
            default=_default(TotalVIConfig, "n_latent"),
            help="latent dimensions",
        )
        p.add_argument(
            "--max-epochs",
            type=int,
            default=None,
            help="most epochs; training stops early on the validation ELBO "
            "(default: min(400, 20000 / n_cells * 400), as scvi-tools)",
        )
        add_config_flag(p, "seed", "random seed")
        add_config_flag(p, "device", "cpu or cuda", shown="cuda if present")
        p.add_argument(
            "--precision",
            choices=get_args(Precision),
            default=_default(TrainConfig, "precision"),
            help="training matmul precision; auto: bf16-mixed where bfloat16 is native (CPUs "
            "with AVX512-BF16/AMX, CUDA 8.0+), tf32 on older GPUs, else 32",
        )
        p.add_argument(
            "--out",
            type=Path,
            required=True,
            metavar="DIR",
            help="model folder to write (required)",
        )
        p.add_argument("--quiet", action="store_true", help="no per-epoch progress lines")
        add_config_file_flag(p)
        p.set_defaults(func=cmd_train)
        parsers["train"] = p
    if "precompute" in include:
        p = subparsers.add_parser(
            "precompute", help="fill the results cache (UMAP, clusters, DE, metrics)", **fmt
        )
        _data_args(p)
        p.set_defaults(func=cmd_precompute)
        parsers["precompute"] = p
    if "export" in include:
        p = subparsers.add_parser("export", help="write results to .h5mu and tables to CSV", **fmt)
        _data_args(p)
        p.add_argument("--out", type=Path, required=True, help="output .h5mu file (required)")
        p.add_argument(
            "--tables", type=Path, default=None, help="folder for CSV tables (default: none)"
        )
        p.add_argument("--denoised-rna", action="store_true", help="also store denoised RNA")
        p.add_argument(
            "--workspace",
            default=None,
            metavar="USER",
            help="export the cell-type names and label sets of USER's workspace (the "
            "dashboard's user name); default: those kept outside any workspace",
        )
        p.set_defaults(func=cmd_export)
        parsers["export"] = p
    if "simulate" in include:
        p = subparsers.add_parser(
            "simulate", help="write simulated CITE-seq data (the seed's layout) to .h5ad", **fmt
        )
        for flag, default, what in SIMULATE_SIZES:
            p.add_argument(f"--{flag}", type=int, default=default, help=what)
        p.add_argument("--seed", type=int, default=0, help="random seed")
        p.add_argument("--out", type=Path, required=True, help="new .h5ad file (required)")
        p.set_defaults(func=cmd_simulate)
        parsers["simulate"] = p
    return parsers


#: ``simulate``'s size flags: the built-in example's sizes (the seed's layout, fewer cells).
SIMULATE_SIZES = (
    ("cells", 10_000, "cells"),
    ("genes", 4000, "genes"),
    ("proteins", 111, "proteins"),
    ("batches", 17, "batches (each but the first on one of 3 antibody panels)"),
    ("cell-types", 21, "cell types (named after blood types up to 21)"),
)


def _data_args(p: argparse.ArgumentParser) -> None:
    """DATA, ``--model``, the read flags, ``--cache-dir``, ``--protein-scale``, ``--config``."""
    p.add_argument(
        "data",
        type=Path,
        nargs="?",
        default=None,
        help=".h5ad, .h5mu, 10x .h5 or 10x folder (default: the data saved in --model's folder)",
    )
    p.add_argument("--model", type=Path, required=True, help="model folder or model.pt (required)")
    add_read_flags(p)
    add_config_flag(p, "cache_dir", "results cache folder")
    add_config_flag(
        p,
        "protein_scale",
        "denoised proteins and model-card tables: measured (rate x the batch's capture "
        "efficiency, the counts' scale) or efficiency-free (as scvi-tools 1.4.2, e.g. to "
        "regenerate its model card)",
        choices=PROTEIN_SCALES,
    )
    add_config_file_flag(p)


def _service(config: Config) -> Any:
    from dashboard.backend.service import AnalysisService

    return AnalysisService(config.settings)


@contextmanager
def _progress_bar(desc: str) -> Iterator[Callable[[float, str], None]]:
    from tqdm import tqdm

    with tqdm(total=100, desc=desc, unit="%", file=sys.stderr, leave=True) as bar:

        def update(fraction: float, message: str) -> None:
            if message:
                bar.set_postfix_str(message[:60], refresh=False)
            target = round(min(max(fraction, 0.0), 1.0) * 100)
            if target > bar.n:
                bar.update(target - bar.n)
            else:
                bar.refresh()

        yield update


def _guard(fn: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        try:
            return fn(args)
        except BackendError as err:
            print(f"error: {err}", file=sys.stderr)
            return 2

    run.__name__ = fn.__name__
    run.__doc__ = fn.__doc__
    return run


def print_notices(data: Any) -> None:
    """Each of a dataset's notices (e.g. duplicate names made unique) as one stderr line."""
    for note in getattr(data, "notices", ()):
        print(f"note: {note}", file=sys.stderr)


def _open_pair(service: Any, args: argparse.Namespace, config: Config) -> Any:
    """Open ``--model`` with DATA read the way the model's registry says (read keys on top)."""
    pair = service.open_model(args.model, data=args.data, flags=config.read_flags)
    print_notices(service.dataset(pair.dataset))
    return pair


def _print_progress(p: Any) -> None:
    print(
        f"epoch {p.epoch:>4}/{p.max_epochs}  elbo_train {p.elbo_train:10.2f}  "
        f"elbo_validation {p.elbo_validation:10.2f}  kl_weight {p.kl_weight:5.3f}  "
        f"lr {p.lr:.2e}  {p.seconds:7.1f}s",
        flush=True,
    )


@_guard
def cmd_train(args: argparse.Namespace) -> int:
    """Train TotalVI on DATA (read keys on the readers' defaults) and save it to ``--out``;
    seed and device come from the configuration (``--seed``, ``--device``)."""
    config = config_of(args)
    from dashboard.backend.training import save_checkpoint  # anndata, like model
    from model import TotalVI
    from model.read_options import OURS, ReadOptions

    options = ReadOptions().overridden(**config.read_flags)
    data = options.read(args.data)
    print_notices(data)
    print(
        f"{args.data}: {data.n_cells} cells, {data.n_genes} genes, {data.n_proteins} proteins, "
        f"{data.n_batch} batch(es)"
    )
    seed = config.settings.seed
    model = TotalVI(data, n_latent=args.n_latent, seed=seed)
    model.setup_args[OURS] = options.to_dict()  # `run --model OUT --data DATA` reads it so
    overrides: dict[str, Any] = {"seed": seed, "precision": args.precision}
    if args.max_epochs:
        overrides["max_epochs"] = args.max_epochs
    if config.settings.device:
        overrides["device"] = config.settings.device
    result = model.train(progress=None if args.quiet else _print_progress, **overrides)
    path = save_checkpoint(model, args.out)
    last = result.history.iloc[-1]
    print(
        f"trained {result.epochs} epochs in {result.seconds:.1f}s on {result.device} "
        f"({result.precision})"
        f"{' (early stop)' if result.stopped_early else ''}; validation ELBO "
        f"{last['elbo_validation']:.2f}; saved {path}"
    )
    return 0


@_guard
def cmd_simulate(args: argparse.Namespace) -> int:
    """Write :func:`model.simulate.simulate_cite_seq` data to a new ``--out`` file (written
    beside it under a hidden name, then linked into place: an existing file is refused)."""
    import os

    from model.simulate import BLOOD_TYPE_NAMES, simulate_cite_seq

    out: Path = args.out
    if out.suffix != ".h5ad":
        raise BackendError(f"{out}: the output must be a .h5ad file")
    if out.exists():
        raise BackendError(f"{out} already exists; choose a new file")
    n_types = args.cell_types
    names = BLOOD_TYPE_NAMES[:n_types] if n_types <= len(BLOOD_TYPE_NAMES) else None
    adata = simulate_cite_seq(
        n_cells=args.cells,
        n_genes=args.genes,
        n_proteins=args.proteins,
        n_batches=args.batches,
        n_cell_types=n_types,
        seed=args.seed,
        cell_type_names=names,
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    try:
        adata.write_h5ad(tmp, compression="gzip")
        os.link(tmp, out)  # fails if ``out`` appeared meanwhile: nothing is overwritten
    except FileExistsError:
        raise BackendError(f"{out} already exists; choose a new file") from None
    finally:
        tmp.unlink(missing_ok=True)
    print(
        f"wrote {out}: {adata.n_obs} cells, {adata.n_vars} genes, {args.proteins} proteins, "
        f"{args.batches} batches, {n_types} cell types (simulated, seed {args.seed})"
    )
    return 0


@_guard
def cmd_precompute(args: argparse.Namespace) -> int:
    """Compute and cache everything the dashboard shows for DATA with ``--model``."""
    config = config_of(args)
    service = _service(config)
    try:
        pair = _open_pair(service, args, config)
        before = service.cache.stats.computed
        with _progress_bar("precompute") as progress:
            keys = service.precompute(pair, progress=progress)
        computed = service.cache.stats.computed - before
        print(
            f"{len(keys)} results ready for {pair.id} ({computed} computed, the rest cached) "
            f"in {service.settings.results_dir}"
        )
    finally:
        service.close()
    return 0


@_guard
def cmd_export(args: argparse.Namespace) -> int:
    """Write latent, UMAP, clusters, cell types and denoised protein to ``--out``
    (``.h5mu``), and DE and metric tables to ``--tables``."""
    from dashboard.backend.export import write_h5mu, write_tables

    config = config_of(args)
    service = _service(config)
    try:
        pair = _open_pair(service, args, config)
        with _progress_bar("export") as progress:
            if args.tables is not None:
                service.precompute(pair, progress=lambda f, m: progress(0.8 * f, m))
            progress(0.8, "writing .h5mu")
            with acting_as(getattr(args, "workspace", None)):  # whose names and label sets
                path = write_h5mu(service, pair, args.out, include_denoised_rna=args.denoised_rna)
                written = [path]
                if args.tables is not None:
                    progress(0.9, "writing tables")
                    written += write_tables(service, pair, args.tables)
            progress(1.0, "written")
        for p in written:
            print(p)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    finally:
        service.close()
    return 0
