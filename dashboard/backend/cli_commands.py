"""Backend subcommands for ``totalvi-explorer``: ``train``, ``precompute`` and ``export``.

``dashboard/cli.py`` wires them in with :func:`add_subcommands`. Each command builds an
:class:`~dashboard.backend.service.AnalysisService` from the environment (``--cache-dir``
overrides the cache folder), shows progress with tqdm and turns backend errors into one
``error: ...`` line and exit status 2.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from dashboard.backend.errors import BackendError
from model.protein_scale import PROTEIN_SCALES

COMMANDS = ("train", "precompute", "export")
CACHE_DIR_HELP = "results cache folder (default: $TOTALVI_EXPLORER_CACHE_DIR, else data/cache)"


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


def add_subcommands(
    subparsers: Any, *, include: Sequence[str] = COMMANDS
) -> dict[str, argparse.ArgumentParser]:
    """Register ``train``, ``precompute`` and ``export`` (or those in ``include``).

    ``subparsers`` is what ``ArgumentParser.add_subparsers()`` returns. Each parser gets
    ``func`` set to its command function. Returns the parsers by name.
    """
    parsers: dict[str, argparse.ArgumentParser] = {}
    fmt = {"formatter_class": DefaultsFormatter}
    if "train" in include:
        p = subparsers.add_parser(
            "train", help="train TotalVI on a CITE-seq file and save it", **fmt
        )
        _data_args(p)
        p.add_argument(
            "--max-epochs",
            type=int,
            default=None,
            help="most epochs (default: min(400, 20000 / n_cells * 400), as scvi-tools)",
        )
        p.add_argument("--n-latent", type=int, default=20, help="latent dimensions")
        p.add_argument("--seed", type=int, default=0, help="random seed")
        p.add_argument("--out", type=Path, required=True, help="model folder (required)")
        p.set_defaults(func=cmd_train)
        parsers["train"] = p
    if "precompute" in include:
        p = subparsers.add_parser(
            "precompute", help="fill the results cache (UMAP, clusters, DE, metrics)", **fmt
        )
        _data_args(p, with_model=True)
        p.add_argument(
            "--model", type=Path, required=True, help="model folder or model.pt (required)"
        )
        p.set_defaults(func=cmd_precompute)
        parsers["precompute"] = p
    if "export" in include:
        p = subparsers.add_parser("export", help="write results to .h5mu and tables to CSV", **fmt)
        _data_args(p, with_model=True)
        p.add_argument(
            "--model", type=Path, required=True, help="model folder or model.pt (required)"
        )
        p.add_argument("--out", type=Path, required=True, help="output .h5mu file (required)")
        p.add_argument(
            "--tables", type=Path, default=None, help="folder for CSV tables (default: none)"
        )
        p.add_argument("--denoised-rna", action="store_true", help="also store denoised RNA")
        p.set_defaults(func=cmd_export)
        parsers["export"] = p
    return parsers


#: The read flags every command that reads data takes (``dest`` names; their values are
#: :meth:`model.read_options.ReadOptions.overridden` keywords).
READ_FLAGS = ("layer", "batch_key", "labels_key", "protein_key", "protein_layer", "rna_modality")


def add_read_flags(p: argparse.ArgumentParser, *, with_model: bool = True) -> None:
    """The flags that say where a file keeps its counts and keys, the same on every command.

    ``with_model``: the command opens a checkpoint, whose registry (its setup arguments)
    gives the defaults; a flag overrides that part. ``''`` clears a part (``--batch-key ''``
    is one batch, ``--layer ''`` reads ``X``).
    """
    default = "the model's registry, else " if with_model else ""
    g = p.add_argument_group("where the data keeps its counts and keys")
    g.add_argument("--layer", default=None, help=f"RNA counts layer (default: {default}X)")
    g.add_argument(
        "--batch-key",
        default=None,
        help=f"obs column of batches, '' for one batch (default: {default}none, one batch)",
    )
    g.add_argument(
        "--labels-key",
        default=None,
        help=f"obs column of cell-type labels (default: {default}none, types from clusters)",
    )
    g.add_argument(
        "--protein-key",
        default=None,
        help="protein counts: the obsm key of an .h5ad, the modality of an .h5mu "
        f"(default: {default}protein_expression / protein)",
    )
    g.add_argument(
        "--protein-layer",
        default=None,
        help=f"layer of the .h5mu protein modality (default: {default}X)",
    )
    g.add_argument(
        "--rna-modality",
        default=None,
        help=f"RNA modality of an .h5mu (default: {default}rna)",
    )


def read_flags(args: argparse.Namespace) -> dict[str, str]:
    """The read flags given on the command line (those left out are not in the dict)."""
    return {k: getattr(args, k) for k in READ_FLAGS if getattr(args, k, None) is not None}


def _data_args(p: argparse.ArgumentParser, *, with_model: bool = False) -> None:
    if with_model:
        p.add_argument(
            "data",
            type=Path,
            nargs="?",
            default=None,
            help=".h5ad, .h5mu, 10x .h5 or 10x folder (default: the data saved in --model's "
            "folder)",
        )
    else:
        p.add_argument("data", type=Path, help=".h5ad, .h5mu, 10x .h5 or 10x folder")
    add_read_flags(p, with_model=with_model)
    p.add_argument("--cache-dir", type=Path, default=None, help=CACHE_DIR_HELP)
    if with_model:
        p.add_argument(
            "--protein-scale",
            choices=PROTEIN_SCALES,
            default=None,
            help="denoised proteins and model-card tables: measured (rate x the batch's "
            "capture efficiency, the counts' scale) or efficiency-free (as scvi-tools 1.4.2, "
            "e.g. to regenerate its model card) (default: TOTALVI_EXPLORER_PROTEIN_SCALE, "
            "else measured)",
        )


def _service(args: argparse.Namespace) -> Any:
    from dashboard.backend.service import AnalysisService
    from dashboard.backend.settings import Settings

    overrides: dict[str, Any] = {"cache_dir": args.cache_dir} if args.cache_dir else {}
    if getattr(args, "protein_scale", None):
        overrides["protein_scale"] = args.protein_scale
    return AnalysisService(Settings.from_env(**overrides))


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


def _open(service: Any, args: argparse.Namespace) -> Any:
    """Open DATA (read flags on the readers' defaults); its notices (e.g. duplicate names
    made unique) go to stderr, one line each."""
    from model.read_options import ReadOptions

    ref = service.open_dataset(args.data, options=ReadOptions().overridden(**read_flags(args)))
    _notices(service, ref)
    return ref


def _open_pair(service: Any, args: argparse.Namespace) -> Any:
    """Open ``--model`` with DATA read the way the model's registry says (flags on top)."""
    pair = service.open_model(args.model, data=args.data, flags=read_flags(args))
    _notices(service, pair.dataset)
    return pair


def _notices(service: Any, ref: Any) -> None:
    for note in service.dataset(ref).notices:
        print(f"note: {note}", file=sys.stderr)


@_guard
def cmd_train(args: argparse.Namespace) -> int:
    """Train TotalVI on DATA and save it to ``--out``."""
    service = _service(args)
    try:
        dataset = _open(service, args)
        with _progress_bar("train") as progress:
            pair = service.train(
                dataset,
                out_dir=args.out,
                max_epochs=args.max_epochs,
                n_latent=args.n_latent,
                seed=args.seed,
                progress=progress,
            )
        history = service.training_history(pair)
        last = history.iloc[-1] if len(history) else {}
        print(
            f"trained {len(history)} epochs; validation ELBO "
            f"{float(last.get('elbo_validation', float('nan'))):.2f}; saved {args.out}"
        )
    finally:
        service.close()
    return 0


@_guard
def cmd_precompute(args: argparse.Namespace) -> int:
    """Compute and cache everything the dashboard shows for DATA with ``--model``."""
    service = _service(args)
    try:
        pair = _open_pair(service, args)
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

    service = _service(args)
    try:
        pair = _open_pair(service, args)
        with _progress_bar("export") as progress:
            if args.tables is not None:
                service.precompute(pair, progress=lambda f, m: progress(0.8 * f, m))
            progress(0.8, "writing .h5mu")
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
