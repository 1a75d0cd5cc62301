"""Configuration of ``totalvi-explorer serve``: defaults < TOML file < environment < flags.

A config file is flat TOML; its keys are the server's own (``host``, ``port``, ``threads``,
``data``, ``model``, ``trusted_proxy``, and the read keys ``layer``, ``batch_key``,
``labels_key``, ``protein_key``, ``protein_layer``, ``rna_modality`` that override a model's
registry, ``""`` clearing one) and every field of
:class:`~dashboard.backend.settings.Settings` (``data_dir``, ``cache_dir``, ``model_dir``,
``auth_file``, ``max_upload_bytes``, ``redis_url``, ...)::

    host = "0.0.0.0"
    port = 8050
    threads = 8
    data_dir = "/srv/totalvi/data"
    model_dir = "/srv/totalvi/models"
    cache_dir = "/var/cache/totalvi"
    auth_file = "/etc/totalvi/users"
    max_upload_bytes = 2_000_000_000

The environment uses the same names as ``TOTALVI_EXPLORER_<KEY>`` (``..._PORT``,
``..._DATA_DIR``, ...); ``TOTALVI_EXPLORER_CONFIG`` names a config file when ``--config``
is not given. Relative paths in a file are relative to the file's folder. A file that is
not TOML, an unknown key or a value of the wrong type raises :class:`ConfigError`, one line
naming the file and the key.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from dashboard.backend.cli_commands import READ_FLAGS
from dashboard.backend.settings import ENV_PREFIX, Settings

#: The server's own keys and their kinds (Settings fields are added from the dataclass).
SERVER_KEYS: dict[str, str] = {
    "host": "str",
    "port": "int",
    "threads": "int",
    "data": "path?",
    "model": "path?",
    "trusted_proxy": "str?",
    **dict.fromkeys(READ_FLAGS, "key"),  # a string kept as given: "" clears the part
}
SERVER_DEFAULTS: dict[str, Any] = {
    "host": "127.0.0.1",
    "port": 8050,
    "threads": 8,
    "data": None,  # the data in the model's folder, else the embedded data
    "model": None,  # the embedded model
    "trusted_proxy": None,
    **dict.fromkeys(READ_FLAGS),  # not given: the model's registry says
}


class ConfigError(ValueError):
    """A bad config file, key or value (one line naming the file or variable and key)."""


_KIND_OF_TYPE = {"Path": "path", "int": "int", "float": "float", "str": "str", "bool": "bool"}


def _settings_kinds() -> dict[str, str]:
    kinds = {}
    for f in fields(Settings):
        t = str(f.type).replace(" ", "")
        optional = "|None" in t
        base = t.replace("|None", "")
        kind = _KIND_OF_TYPE.get(base, "str")
        kinds[f.name] = kind + ("?" if optional else "")
    return kinds


def known_keys() -> dict[str, str]:
    """Every key a config file may set, with its kind (``int``, ``path?``, ...)."""
    return {**SERVER_KEYS, **_settings_kinds()}


@dataclass
class ServeConfig:
    """What ``serve`` runs with; ``origin`` says where each value came from."""

    host: str = "127.0.0.1"
    port: int = 8050
    threads: int = 8
    data: Path | None = None
    model: Path | None = None
    read_flags: dict[str, str] = field(default_factory=dict)
    trusted_proxy: str | None = None
    settings: Settings = field(default_factory=Settings)
    origin: dict[str, str] = field(default_factory=dict)


def _coerce(value: Any, kind: str, key: str, where: str, base: Path | None) -> Any:
    if kind == "key":
        if not isinstance(value, str):
            msg = f"{where}: key '{key}' must be a string ('' for none), got {value!r}"
            raise ConfigError(msg)
        return value.strip()
    optional = kind.endswith("?")
    kind = kind.rstrip("?")
    if value is None or (optional and isinstance(value, str) and value.strip() == ""):
        if optional:
            return None
        msg = f"{where}: key '{key}' needs a value"
        raise ConfigError(msg)
    if kind == "int":
        if isinstance(value, bool) or not isinstance(value, int | str):
            msg = f"{where}: key '{key}' must be an integer, got {value!r}"
            raise ConfigError(msg)
        try:
            value = int(str(value).replace("_", "").strip())
        except ValueError:
            msg = f"{where}: key '{key}' must be an integer, got {value!r}"
            raise ConfigError(msg) from None
        if value < 0 or (key in {"threads", "max_upload_bytes"} and value == 0):
            msg = f"{where}: key '{key}' must be positive, got {value}"
            raise ConfigError(msg)
        if key == "port" and value > 65535:
            msg = f"{where}: key 'port' must be at most 65535, got {value}"
            raise ConfigError(msg)
        return value
    if kind == "bool":
        if isinstance(value, bool):
            return value
        word = str(value).strip().lower() if isinstance(value, str | int) else None
        if word in {"1", "true", "yes", "on"}:
            return True
        if word in {"0", "false", "no", "off"}:
            return False
        msg = f"{where}: key '{key}' must be true or false, got {value!r}"
        raise ConfigError(msg)
    if kind == "float":
        if isinstance(value, bool):
            msg = f"{where}: key '{key}' must be a number, got {value!r}"
            raise ConfigError(msg)
        try:
            return float(value)
        except (TypeError, ValueError):
            msg = f"{where}: key '{key}' must be a number, got {value!r}"
            raise ConfigError(msg) from None
    if not isinstance(value, str | os.PathLike):
        msg = f"{where}: key '{key}' must be a string, got {value!r}"
        raise ConfigError(msg)
    if kind == "path":
        path = Path(value).expanduser()
        if base is not None and not path.is_absolute():
            path = base / path
        return path
    return str(value)


def read_config_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The keys of a TOML config file, checked and converted (paths relative to the file)."""
    path = Path(path)
    try:
        with path.open("rb") as fh:
            raw = tomllib.load(fh)
    except FileNotFoundError:
        msg = f"{path}: config file not found"
        raise ConfigError(msg) from None
    except OSError as err:
        msg = f"{path}: cannot read the config file ({err.strerror or err})"
        raise ConfigError(msg) from None
    except tomllib.TOMLDecodeError as err:
        msg = f"{path}: not valid TOML ({err})"
        raise ConfigError(msg) from None
    kinds = known_keys()
    values: dict[str, Any] = {}
    for key, value in raw.items():
        if key not in kinds:
            msg = f"{path}: unknown key '{key}' (known: {', '.join(sorted(kinds))})"
            raise ConfigError(msg)
        values[key] = _coerce(value, kinds[key], key, str(path), path.resolve().parent)
    return values


def env_config(env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The keys set by ``TOTALVI_EXPLORER_<KEY>`` variables, converted."""
    env = os.environ if env is None else env
    values: dict[str, Any] = {}
    for key, kind in SERVER_KEYS.items():
        name = ENV_PREFIX + key.upper()
        if name in env:
            values[key] = _coerce(env[name], kind, key, f"environment {name}", None)
    try:
        values.update(Settings.env_values(env))
    except ValueError as err:
        raise ConfigError(f"environment: {err}") from None
    return values


def load_serve_config(
    flags: Mapping[str, Any] | None = None,
    *,
    config_file: str | os.PathLike[str] | None = None,
    env: Mapping[str, str] | None = None,
) -> ServeConfig:
    """Merge defaults, the config file, the environment and the command-line ``flags``
    (``None`` values are flags not given), in that order of increasing precedence."""
    env = os.environ if env is None else env
    if config_file is None and env.get(ENV_PREFIX + "CONFIG"):
        config_file = env[ENV_PREFIX + "CONFIG"]
    kinds = known_keys()
    layers: list[tuple[str, dict[str, Any]]] = []
    if config_file is not None:
        layers.append((f"file {config_file}", read_config_file(config_file)))
    layers.append(("environment", env_config(env)))
    cli: dict[str, Any] = {}
    for key, value in (flags or {}).items():
        if value is None:
            continue
        if key not in kinds:
            msg = f"command line: unknown option '{key}'"
            raise ConfigError(msg)
        cli[key] = _coerce(value, kinds[key], key, f"command line --{key.replace('_', '-')}", None)
    layers.append(("command line", cli))

    merged: dict[str, Any] = dict(SERVER_DEFAULTS)
    origin = dict.fromkeys(kinds, "default")
    for name, values in layers:
        merged.update(values)
        origin.update(dict.fromkeys(values, name))
    settings_values = {k: v for k, v in merged.items() if k not in SERVER_KEYS}
    try:
        settings = Settings(**settings_values)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"settings: {err}") from None
    return ServeConfig(
        host=merged["host"],
        port=merged["port"],
        threads=merged["threads"],
        data=merged["data"],
        model=merged["model"],
        read_flags={k: merged[k] for k in READ_FLAGS if merged[k] is not None},
        trusted_proxy=merged["trusted_proxy"],
        settings=settings,
        origin=origin,
    )
