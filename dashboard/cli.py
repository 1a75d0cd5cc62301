"""``totalvi-explorer`` command line: train a model, inspect it, start the app.

Errors in user input (bad files, unknown keys, bad checkpoints) print one clear line and exit
with status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

DATA_HELP = (
    "dataset to open (default: the data saved in --model's folder; with no --model, the "
    "embedded data/pbmc10k.h5ad)"
)
MODEL_HELP = (
    "model folder: ours, scvi-tools', scvi-hub's or a hub download (default: the embedded "
    "data/models/pbmc10k)"
)


def _print_progress(p: object) -> None:
    print(
        f"epoch {p.epoch:>4}/{p.max_epochs}  elbo_train {p.elbo_train:10.2f}  "
        f"elbo_validation {p.elbo_validation:10.2f}  kl_weight {p.kl_weight:5.3f}  "
        f"lr {p.lr:.2e}  {p.seconds:7.1f}s",
        flush=True,
    )


def _print_notices(data: object) -> None:
    """Each of the dataset's notices (e.g. duplicate names made unique) as one stderr line."""
    for note in getattr(data, "notices", ()):
        print(f"note: {note}", file=sys.stderr)


def cmd_train(args: argparse.Namespace) -> int:
    """Train TotalVI on a dataset and save the checkpoint."""
    from dashboard.backend.cli_commands import read_flags
    from model import TotalVI
    from model.read_options import OURS, ReadOptions

    options = ReadOptions().overridden(**read_flags(args))
    data = options.read(args.data)
    _print_notices(data)
    print(
        f"{args.data}: {data.n_cells} cells, {data.n_genes} genes, {data.n_proteins} proteins, "
        f"{data.n_batch} batch(es)"
    )
    model = TotalVI(data, n_latent=args.n_latent, seed=args.seed)
    model.setup_args[OURS] = options.to_dict()  # `run --model OUT --data DATA` reads it so
    overrides = {"seed": args.seed}
    if args.max_epochs:
        overrides["max_epochs"] = args.max_epochs
    if args.device:
        overrides["device"] = args.device
    overrides["precision"] = args.precision
    result = model.train(progress=None if args.quiet else _print_progress, **overrides)
    path = model.save(args.out, overwrite=True)
    last = result.history.iloc[-1]
    print(
        f"trained {result.epochs} epochs in {result.seconds:.1f}s on {result.device} "
        f"({result.precision})"
        f"{' (early stop)' if result.stopped_early else ''}; validation ELBO "
        f"{last['elbo_validation']:.2f}; saved {path}"
    )
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    """Print what a checkpoint holds (ours or scvi-tools'), how its data is read and, with
    data (``--data`` or the data saved in the folder), the validation ELBO on it."""
    from dashboard.backend.cli_commands import read_flags
    from model import TotalVI
    from model.model_folder import locate_model
    from model.read_options import ReadOptions

    folder = locate_model(args.model)
    model = TotalVI.load(folder.checkpoint)
    registered = ReadOptions.from_setup_args(model.setup_args)
    options = registered.overridden(**read_flags(args))
    source = args.data or folder.data
    data = None
    if source is not None:
        data = options.read(source)
        _print_notices(data)
        model.attach_data(data)
    print(model)
    print(f"config: {model.config}")
    print(f"folder: {folder.layout}{'' if folder.card is None else ', model card README.md'}")
    print(f"data setup (the checkpoint's registry): {registered.describe()}")
    if source is not None:
        print(f"data: {source}{'' if options == registered else f' ({options.describe()})'}")
    if not model.history.empty:
        last = model.history.iloc[-1]
        loss = last.get("elbo_validation", float("nan"))
        print(
            f"history: {len(model.history)} epochs, last elbo_validation {loss:.2f} "
            "(per-cell loss, the negative ELBO: lower is better)"
        )
    if data is not None and data.minified is None and model.validation_indices is not None:
        elbo = model.get_elbo(indices=model.validation_indices)
        print(
            f"validation ELBO on {source}: {elbo:.2f} per cell "
            "(get_elbo, scvi-tools' sign: higher is better)"
        )
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    """Start the dashboard (default: the embedded PBMC data with its trained checkpoint).

    The first start prepares the model's results (progress printed here and shown in the
    page); they are cached, so later starts are ready in seconds.
    """
    from dashboard.backend.cli_commands import read_flags
    from dashboard.backend.errors import BackendError
    from dashboard.server import serve

    try:
        return serve(
            args.data,
            args.model,
            host=args.host,
            port=args.port,
            flags=read_flags(args),
            debug=args.debug,
        )
    except BackendError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


def cmd_serve(args: argparse.Namespace) -> int:
    """Production server: waitress with ``--threads`` threads, Dash debug off (``--dev``:
    Dash's development server). Settings: flag > environment > ``--config`` file > default.
    """
    from dashboard.auth import read_credentials
    from dashboard.backend.cli_commands import READ_FLAGS
    from dashboard.backend.errors import BackendError
    from dashboard.serve_config import load_serve_config
    from dashboard.server import serve

    flags = {
        key: getattr(args, key)
        for key in (
            "host", "port", "threads", "data", "model", "data_dir", "cache_dir",
            "model_dir", "auth_file", "redis_url", "trusted_proxy", *READ_FLAGS,
        )
    }  # fmt: skip
    if args.max_upload_mb is not None:
        flags["max_upload_bytes"] = int(args.max_upload_mb * 1024**2)
    config = load_serve_config(flags, config_file=args.config)
    if config.settings.auth_file is not None:
        users = read_credentials(config.settings.auth_file)  # a bad file stops here
        if not users:
            print(
                f"error: {config.settings.auth_file}: no users; add one with "
                f"`totalvi-explorer passwd {config.settings.auth_file} USER`",
                file=sys.stderr,
            )
            return 2
    elif config.host not in {"127.0.0.1", "localhost", "::1"}:
        print(
            f"warning: serving on {config.host} without authentication (set auth_file)",
            file=sys.stderr,
        )
    try:
        return serve(
            config.data,
            config.model,
            host=config.host,
            port=config.port,
            flags=config.read_flags,
            settings=config.settings,
            production=not args.dev,
            debug=args.dev,
            threads=config.threads,
            trusted_proxy=config.trusted_proxy,
        )
    except BackendError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


def cmd_passwd(args: argparse.Namespace) -> int:
    """Add or update a user of the basic-auth credentials file (mode 0600, atomic)."""
    import getpass

    from dashboard.auth import check_username, set_password

    check_username(args.user)
    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = getpass.getpass(f"password for {args.user}: ")
        if getpass.getpass("again: ") != password:
            print("error: the passwords differ; nothing changed", file=sys.stderr)
            return 2
    new = set_password(args.file, args.user, password)
    print(f"{'added' if new else 'updated'} user {args.user} in {args.file}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argparse tree of all subcommands.

    Building it and printing any ``--help`` imports only the standard library and the
    light configuration modules (no torch, Dash, scanpy, anndata or plotly): each command
    imports what it needs when it runs. Every option's help states its default.
    """
    from dataclasses import fields

    from dashboard.backend.cli_commands import (
        CACHE_DIR_HELP,
        DefaultsFormatter,
        add_read_flags,
        add_subcommands,
    )
    from dashboard.backend.settings import Settings
    from dashboard.serve_config import SERVER_DEFAULTS

    fmt = {"formatter_class": DefaultsFormatter}
    parser = argparse.ArgumentParser(
        prog="totalvi-explorer", description=__doc__.splitlines()[0].replace("``", ""), **fmt
    )
    sub = parser.add_subparsers(
        dest="command", metavar="COMMAND", help="default: run (the dashboard, embedded data)"
    )

    p = sub.add_parser("train", help="train TotalVI on a CITE-seq file and save it", **fmt)
    p.add_argument("data", type=Path, help=".h5ad, .h5mu, 10x .h5 or 10x folder")
    add_read_flags(p, with_model=False)
    p.add_argument("--n-latent", type=int, default=20, help="latent dimensions")
    p.add_argument(
        "--max-epochs",
        type=int,
        default=None,
        help="most epochs; training stops early on the validation ELBO "
        "(default: min(400, 20000 / n_cells * 400), as scvi-tools)",
    )
    p.add_argument("--seed", type=int, default=0, help="random seed")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda if present)")
    p.add_argument(
        "--precision",
        choices=("auto", "32", "bf16-mixed"),
        default="auto",
        help="training matmul precision; auto: bf16-mixed on CPUs with native bfloat16, else 32",
    )
    p.add_argument(
        "--out", type=Path, required=True, metavar="DIR", help="model folder to write (required)"
    )
    p.add_argument("--quiet", action="store_true", help="no per-epoch progress lines")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("info", help="describe a checkpoint (ours or scvi-tools')", **fmt)
    p.add_argument("model", type=Path, help="model folder (scvi-tools, scvi-hub, hub download)")
    p.add_argument(
        "--data",
        type=Path,
        default=None,
        help="dataset to evaluate the validation ELBO on (default: the data saved in the "
        "model folder, if any)",
    )
    add_read_flags(p)
    p.set_defaults(func=cmd_info)

    add_subcommands(sub, include=("precompute", "export"))

    p = sub.add_parser("run", help="start the dashboard (default: embedded data and model)", **fmt)
    p.add_argument(
        "--data",
        type=Path,
        default=None,
        help=DATA_HELP,
    )
    p.add_argument(
        "--model",
        type=Path,
        default=None,
        help=MODEL_HELP,
    )
    add_read_flags(p)
    p.add_argument("--host", default="127.0.0.1", help="address to listen on")
    p.add_argument("--port", type=int, default=8050, help="port to listen on")
    p.add_argument("--debug", action="store_true", help="Dash debug mode (development only)")
    p.set_defaults(func=cmd_run)

    settings = {f.name: f.default for f in fields(Settings)}
    server = SERVER_DEFAULTS

    def dflt(value: object) -> str:
        return f"(default: {value})"

    p = sub.add_parser(
        "serve",
        help="production server (waitress); flag > env > --config file > default",
        description="Serve the dashboard with waitress. Each option can also come from "
        "TOTALVI_EXPLORER_<OPTION> or a TOML --config file (see README); the defaults below "
        "apply when none of them sets it.",
        **fmt,
    )
    p.add_argument(
        "--config",
        type=Path,
        default=None,
        help="TOML config file (default: $TOTALVI_EXPLORER_CONFIG, else none)",
    )
    p.add_argument("--data", type=Path, default=None, help=DATA_HELP)
    p.add_argument("--model", type=Path, default=None, help=MODEL_HELP)
    add_read_flags(p)
    p.add_argument("--host", default=None, help=f"address to listen on {dflt(server['host'])}")
    p.add_argument(
        "--port", type=int, default=None, help=f"port to listen on {dflt(server['port'])}"
    )
    p.add_argument(
        "--threads", type=int, default=None, help=f"worker threads {dflt(server['threads'])}"
    )
    p.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="datasets the app may open (default: data/)",
    )
    p.add_argument(
        "--model-dir",
        type=Path,
        default=None,
        help="checkpoints the app may load (default: data/models/)",
    )
    p.add_argument("--cache-dir", type=Path, default=None, help=CACHE_DIR_HELP)
    p.add_argument(
        "--auth-file",
        type=Path,
        default=None,
        help="basic-auth credentials file (default: none, no authentication)",
    )
    p.add_argument(
        "--max-upload-mb",
        type=float,
        default=None,
        help=f"upload limit in MiB {dflt(settings['max_upload_bytes'] // 1024**2)}",
    )
    p.add_argument(
        "--redis-url",
        default=None,
        help="Celery/Redis for background callbacks (default: $REDIS_URL, else none: diskcache)",
    )
    p.add_argument(
        "--trusted-proxy",
        default=None,
        help="reverse proxy address to trust (default: none)",
    )
    p.add_argument("--dev", action="store_true", help="Dash development server, debug on")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser(
        "passwd", help="add or update a user of a basic-auth credentials file", **fmt
    )
    p.add_argument("file", type=Path, help="credentials file (created with mode 0600)")
    p.add_argument("user", help="user name")
    p.add_argument(
        "--password-stdin",
        action="store_true",
        help="read the password from stdin (else: prompt twice)",
    )
    p.set_defaults(func=cmd_passwd)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; with no subcommand, runs ``run`` on the embedded default.

    The model's errors (``CiteSeqDataError``, ``CheckpointError``) are ``ValueError``s, so
    they are caught here without importing the model (and torch) up front.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        args = parser.parse_args(["run"])
    try:
        return int(args.func(args))
    except (FileExistsError, KeyError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
