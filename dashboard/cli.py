"""``totalvi-explorer`` command line: train a model, inspect it, start the app.

Errors in user input (bad files, unknown keys, bad checkpoints) print one clear line and exit
with status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from dashboard.backend.cli_commands import (
    DefaultsFormatter,
    add_config_file_flag,
    add_config_flag,
    add_read_flags,
    add_subcommands,
    config_flags,
    config_of,
    print_notices,
)
from dashboard.backend.errors import BackendError
from dashboard.serve_config import ServeConfig, load_serve_config

DATA_HELP = (
    "dataset to open (default: the data saved in --model's folder; with no --model, the "
    "embedded data/pbmc10k.h5ad)"
)
MODEL_HELP = (
    "model folder: ours, scvi-tools', scvi-hub's or a hub download (default: the embedded "
    "data/models/pbmc10k)"
)


def cmd_info(args: argparse.Namespace) -> int:
    """Print what a checkpoint holds (ours or scvi-tools'), how its data is read and, with
    data (``--data`` or the data saved in the folder), the validation ELBO on it."""
    config = config_of(args)
    from model import TotalVI
    from model.model_folder import locate_model
    from model.read_options import ReadOptions

    folder = locate_model(args.model)
    model = TotalVI.load(folder.checkpoint)
    registered = ReadOptions.from_setup_args(model.setup_args)
    options = registered.overridden(**config.read_flags)
    source = args.data or folder.data
    data = None
    if source is not None:
        data = options.read(source)
        print_notices(data)
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
    config = load_serve_config(config_flags(args), config_file=args.config)
    return _serve(config, debug=args.debug)


def _serve(config: ServeConfig, **options: Any) -> int:
    """Serve ``config``'s data and model with its address, read flags and settings (and
    ``options``, passed on to :func:`dashboard.server.serve`); a readable failure prints
    one line and exits with status 2."""
    from dashboard.server import serve

    common: dict[str, Any] = {"host": config.host, "port": config.port, "flags": config.read_flags}
    try:
        return serve(config.data, config.model, settings=config.settings, **common, **options)
    except BackendError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


def cmd_serve(args: argparse.Namespace) -> int:
    """Production server: waitress with ``threads`` threads, Dash debug off (``dev``:
    Dash's development server). Settings: flag > environment > ``--config`` file > default.
    """
    config = load_serve_config(config_flags(args), config_file=args.config)
    from dashboard.auth import read_credentials

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
    return _serve(
        config,
        production=not config.dev,
        debug=config.dev,
        threads=config.threads,
        trusted_proxy=config.trusted_proxy,
    )


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
    imports what it needs when it runs. Every option's help states its default, read from
    the configuration dataclasses (:mod:`dashboard.backend.settings`).
    """
    fmt = {"formatter_class": DefaultsFormatter}
    parser = argparse.ArgumentParser(
        prog="totalvi-explorer", description=__doc__.splitlines()[0].replace("``", ""), **fmt
    )
    sub = parser.add_subparsers(
        dest="command", metavar="COMMAND", help="default: run (the dashboard, embedded data)"
    )

    add_subcommands(sub, include=("train",))

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
    add_config_file_flag(p)
    p.set_defaults(func=cmd_info)

    add_subcommands(sub, include=("precompute", "export", "simulate"))

    p = sub.add_parser("run", help="start the dashboard (default: embedded data and model)", **fmt)
    add_config_flag(p, "data", DATA_HELP)
    add_config_flag(p, "model", MODEL_HELP)
    add_read_flags(p)
    add_config_flag(p, "host", "address to listen on")
    add_config_flag(p, "port", "port to listen on")
    p.add_argument("--debug", action="store_true", help="Dash debug mode (development only)")
    add_config_file_flag(p)
    p.set_defaults(func=cmd_run)

    p = sub.add_parser(
        "serve",
        help="production server (waitress); flag > env > --config file > default",
        description="Serve the dashboard with waitress. Each option can also come from "
        "TOTALVI_EXPLORER_<OPTION> or a TOML --config file (see README); the defaults below "
        "apply when none of them sets it.",
        **fmt,
    )
    add_config_file_flag(p)
    add_config_flag(p, "data", DATA_HELP)
    add_config_flag(p, "model", MODEL_HELP)
    add_read_flags(p)
    add_config_flag(p, "host", "address to listen on")
    add_config_flag(p, "port", "port to listen on")
    add_config_flag(p, "threads", "worker threads")
    add_config_flag(p, "data_dir", "datasets the app may open")
    add_config_flag(p, "model_dir", "checkpoints the app may load")
    add_config_flag(p, "cache_dir", "results cache folder")
    add_config_flag(p, "auth_file", "basic-auth credentials file", shown="none, no authentication")
    add_config_flag(p, "max_upload_mb", "upload limit in MiB")
    add_config_flag(
        p,
        "redis_url",
        "Redis of the Celery workers that run the long jobs",
        shown="$REDIS_URL, else none: the server's own threads",
    )
    add_config_flag(p, "trusted_proxy", "reverse proxy address to trust")
    add_config_flag(p, "dev", "Dash development server, debug on", action="store_true")
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
