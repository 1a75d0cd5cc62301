"""Configuration of ``totalvi-explorer serve`` (and ``run``): the view of
:func:`~dashboard.backend.settings.load_config` those commands start the server with.

Precedence, the converter and the errors are the loader's (defaults < TOML file <
environment < flags). A config file is flat TOML; its keys are the fields of
:class:`~dashboard.backend.settings.ServeOptions` (``host``, ``port``, ``threads``,
``trusted_proxy``, ``dev``, ``data``, ``model``), of
:class:`~dashboard.backend.settings.ReadKeys` (``layer``, ``batch_key``, ... over the
model's registry, ``""`` clearing one) and of :class:`~dashboard.backend.settings.Settings`
(``data_dir``, ``cache_dir``, ``auth_file``, ``max_upload_bytes``, ``redis_url``, ...)::

    host = "0.0.0.0"
    port = 8050
    threads = 8
    data_dir = "/srv/totalvi/data"
    model_dir = "/srv/totalvi/models"
    cache_dir = "/var/cache/totalvi"
    auth_file = "/etc/totalvi/users"
    max_upload_bytes = 2_000_000_000

The environment uses the same names as ``TOTALVI_EXPLORER_<KEY>``; relative paths in a file
are relative to the file's folder.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from dashboard.backend.settings import (
    ConfigError,
    ServeOptions,
    Settings,
    config_keys,
    load_config,
    read_config_file,
)

__all__ = ["ConfigError", "ServeConfig", "known_keys", "load_serve_config", "read_config_file"]


def known_keys() -> dict[str, Any]:
    """Every key a config file may set, with its type."""
    return config_keys()


@dataclass(frozen=True)
class ServeConfig:
    """What ``serve`` runs with (:class:`ServeOptions`' fields, the read keys that are set,
    the settings); ``origin`` says where each value came from."""

    host: str
    port: int
    threads: int
    trusted_proxy: str | None
    dev: bool
    data: Path | None
    model: Path | None
    read_flags: dict[str, str]
    settings: Settings
    origin: Mapping[str, str]


def load_serve_config(
    flags: Mapping[str, Any] | None = None,
    *,
    config_file: str | os.PathLike[str] | None = None,
    env: Mapping[str, str] | None = None,
) -> ServeConfig:
    """:func:`~dashboard.backend.settings.load_config` as :class:`ServeConfig`."""
    config = load_config(config_file=config_file, env=env, flags=flags)
    return ServeConfig(
        **{f.name: getattr(config.serve, f.name) for f in fields(ServeOptions)},
        read_flags=config.read_flags,
        settings=config.settings,
        origin=config.origin,
    )
