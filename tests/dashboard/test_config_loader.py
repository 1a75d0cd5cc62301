"""The one configuration loader: defaults < TOML file < environment < flags, one converter
driven by the field types, one-line errors naming the source, and every subcommand built
on it (bad values stop a command before it opens or serves anything)."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from dashboard.backend.cli_commands import config_of
from dashboard.backend.errors import BackendError
from dashboard.backend.settings import (
    ConfigError,
    ServeOptions,
    Settings,
    convert,
    describe_default,
    load_config,
    load_settings,
)
from dashboard.cli import build_parser, main

BOOL_ERROR = (
    "TOTALVI_EXPLORER_TRAIN_IN_PROCESS: 'ture' is not a boolean (true/false, yes/no, 1/0, on/off)"
)


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch) -> None:
    """No TOTALVI_EXPLORER_* (or REDIS_URL) variable of the test runner leaks in."""
    for name in list(os.environ):
        if name.startswith("TOTALVI_EXPLORER_") or name == "REDIS_URL":
            monkeypatch.delenv(name)


def _toml(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "explorer.toml"
    path.write_text(text)
    return path


# ------------------------------------------------------------------------- precedence
def test_defaults_then_file_then_env_then_flags(tmp_path) -> None:
    config = _toml(
        tmp_path,
        'max_points = 1_000\nport = 1111\ncache_dir = "c"\ntrain_in_process = false\n'
        "max_de_cells = 40\n",
    )
    env = {"TOTALVI_EXPLORER_MAX_POINTS": "2_000", "TOTALVI_EXPLORER_PORT": "2222"}
    flags = {"max_points": "3000", "cache_dir": None}  # None: the flag was not given

    c = load_config(env={})
    assert c.settings == Settings() and c.serve == ServeOptions()
    assert c.origin["max_points"] == "default"
    c = load_config(config_file=config, env={})
    assert (c.settings.max_points, c.serve.port, c.settings.max_de_cells) == (1000, 1111, 40)
    assert c.settings.cache_dir == tmp_path / "c"  # relative to the file's folder
    assert c.settings.train_in_process is False and c.origin["port"] == f"file {config}"
    c = load_config(config_file=config, env=env)
    assert (c.settings.max_points, c.serve.port) == (2000, 2222)
    assert c.origin["max_points"] == "environment" and c.origin["cache_dir"].startswith("file")
    c = load_config(config_file=config, env=env, flags=flags)
    assert (c.settings.max_points, c.serve.port) == (3000, 2222)
    assert c.settings.cache_dir == tmp_path / "c" and c.origin["max_points"] == "command line"
    # $TOTALVI_EXPLORER_CONFIG names the file when none is given
    assert load_settings(env={"TOTALVI_EXPLORER_CONFIG": str(config)}).max_points == 1000


def test_from_env_is_the_loader_on_the_environment_alone(tmp_path) -> None:
    config = _toml(tmp_path, "max_points = 1_000\n")
    env = {"TOTALVI_EXPLORER_CONFIG": str(config), "TOTALVI_EXPLORER_MAX_POINTS": "7"}
    assert Settings.from_env(env).max_points == 7
    assert Settings.from_env({"TOTALVI_EXPLORER_CONFIG": str(config)}).max_points == 200_000
    assert Settings.from_env({}, max_points=5).max_points == 5
    with pytest.raises(ConfigError, match=re.escape(BOOL_ERROR)):
        Settings.from_env({"TOTALVI_EXPLORER_TRAIN_IN_PROCESS": "ture"})


def test_upload_limit_in_mib_and_redis_url() -> None:
    mib = {"TOTALVI_EXPLORER_MAX_UPLOAD_MB": "2"}
    assert load_settings(env=mib).max_upload_bytes == 2 * 1024**2
    both = {**mib, "TOTALVI_EXPLORER_MAX_UPLOAD_BYTES": "2_000_000_000"}
    assert load_settings(env=both).max_upload_bytes == 2_000_000_000  # bytes win
    assert load_settings(env=both, flags={"max_upload_mb": "1"}).max_upload_bytes == 1024**2
    assert load_settings(env={"REDIS_URL": "redis://a:1/0"}).redis_url == "redis://a:1/0"
    env = {"REDIS_URL": "redis://a:1/0", "TOTALVI_EXPLORER_REDIS_URL": "redis://b:1/0"}
    assert load_settings(env=env).redis_url == "redis://b:1/0"


# -------------------------------------------------------------------------- converter
@pytest.mark.parametrize(
    ("word", "value"),
    [
        ("true", True), ("TRUE", True), ("Yes", True), ("1", True), ("on", True),
        ("false", False), ("False", False), ("no", False), ("0", False), (" OFF ", False),
    ],
)  # fmt: skip
def test_bool_spellings(word: str, value: bool) -> None:
    env = {"TOTALVI_EXPLORER_TRAIN_IN_PROCESS": word}
    assert load_settings(env=env).train_in_process is value


@pytest.mark.parametrize("word", ["ture", "", "none", "2", "y"])
def test_a_bad_bool_is_one_line_naming_the_variable(word: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_settings(env={"TOTALVI_EXPLORER_TRAIN_IN_PROCESS": word})
    message = str(err.value)
    assert message.startswith("TOTALVI_EXPLORER_TRAIN_IN_PROCESS: ") and "\n" not in message
    assert "is not a boolean (true/false, yes/no, 1/0, on/off)" in message
    if word == "ture":
        assert message == BOOL_ERROR
    assert isinstance(err.value, BackendError) and isinstance(err.value, ValueError)


def test_none_for_a_required_int_is_an_error_not_a_type_error() -> None:
    with pytest.raises(ConfigError) as err:
        load_settings(env={"TOTALVI_EXPLORER_MAX_POINTS": "none"})
    assert str(err.value) == "TOTALVI_EXPLORER_MAX_POINTS: 'none' is not an integer"
    with pytest.raises(ConfigError, match=r"^TOTALVI_EXPLORER_MAX_POINTS: '' is not an integer"):
        load_settings(env={"TOTALVI_EXPLORER_MAX_POINTS": ""})
    with pytest.raises(ConfigError, match=r"^--max-points: '1.5' is not an integer$"):
        load_settings(flags={"max_points": "1.5"}, env={})
    with pytest.raises(ConfigError, match=r"^TOTALVI_EXPLORER_MAX_POINTS: must be positive"):
        load_settings(env={"TOTALVI_EXPLORER_MAX_POINTS": "0"})


def test_optional_fields_are_cleared_by_empty_or_none(tmp_path) -> None:
    config = _toml(tmp_path, f'max_de_cells = 40\nauth_file = "{tmp_path / "users"}"\n')
    assert load_settings(config_file=config, env={}).max_de_cells == 40
    env = {"TOTALVI_EXPLORER_MAX_DE_CELLS": "", "TOTALVI_EXPLORER_AUTH_FILE": "None"}
    s = load_settings(config_file=config, env=env)
    assert s.max_de_cells is None and s.auth_file is None
    assert load_settings(env={"TOTALVI_EXPLORER_DEVICE": "none"}).device is None
    # a read key keeps "" (clear the part) and is None only when not set
    c = load_config(env={"TOTALVI_EXPLORER_BATCH_KEY": ""})
    assert c.read_flags == {"batch_key": ""}


def test_converter_follows_the_field_type(tmp_path) -> None:
    assert convert("2_000_000_000", int, "X") == 2_000_000_000
    assert convert(" 0.25 ", float, "X") == 0.25
    assert convert("sub/dir", Path, "X", base=tmp_path) == tmp_path / "sub" / "dir"
    assert convert("none", str, "X") == "none"  # "none" is None only for an optional field
    env = {"TOTALVI_EXPLORER_EVICTION_POLICY": "none"}  # a Literal choice, not None
    assert load_settings(env=env).eviction_policy == "none"
    with pytest.raises(ConfigError, match="EVICTION_POLICY: 'lru' is not one of least-"):
        load_settings(env={"TOTALVI_EXPLORER_EVICTION_POLICY": "lru"})
    with pytest.raises(ConfigError, match="PROTEIN_SCALE: protein_scale must be one of"):
        load_settings(env={"TOTALVI_EXPLORER_PROTEIN_SCALE": "raw"})
    with pytest.raises(ConfigError, match="TOTALVI_EXPLORER_PORT: must be at most 65535"):
        load_config(env={"TOTALVI_EXPLORER_PORT": "70000"})


def test_bad_file_values_name_the_file_and_key(tmp_path) -> None:
    for text, words in [
        ("max_ponts = 3\n", "unknown key 'max_ponts'"),
        ("train_in_process = 'ture'\n", "key 'train_in_process': 'ture' is not a boolean"),
        ("max_points = true\n", "key 'max_points': True is not an integer"),
        ("[serve]\nport = 1\n", "unknown key 'serve'"),
    ]:
        config = _toml(tmp_path, text)
        with pytest.raises(ConfigError) as err:
            load_config(config_file=config, env={})
        assert str(err.value).startswith(str(config)) and words in str(err.value), text
    missing = tmp_path / "nope.toml"
    with pytest.raises(
        ConfigError, match=re.escape("not found (named by TOTALVI_EXPLORER_CONFIG)")
    ):
        load_config(env={"TOTALVI_EXPLORER_CONFIG": str(missing)})


# -------------------------------------------------------------------- the subcommands
def _one_error_line(capsys, *words: str) -> str:
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert "Traceback" not in err and all(w in err for w in words), err
    return err


def test_precompute_and_export_stop_on_a_bad_variable(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("TOTALVI_EXPLORER_MAX_POINTS", "none")
    argv = [str(tmp_path / "nope.h5ad"), "--model", str(tmp_path / "no-model")]
    assert main(["precompute", *argv]) == 2  # the variable, before any file is opened
    _one_error_line(capsys, "TOTALVI_EXPLORER_MAX_POINTS: 'none' is not an integer")
    assert main(["export", *argv, "--out", str(tmp_path / "x.h5mu")]) == 2
    _one_error_line(capsys, "TOTALVI_EXPLORER_MAX_POINTS")
    assert not (tmp_path / "x.h5mu").exists()


def test_serve_and_run_stop_before_starting_a_server(tmp_path, monkeypatch, capsys) -> None:
    def no_server(*args, **kwargs) -> int:
        raise AssertionError("a server was started")

    monkeypatch.setattr("dashboard.server.serve", no_server)
    monkeypatch.setenv("TOTALVI_EXPLORER_TRAIN_IN_PROCESS", "ture")
    assert main(["serve"]) == 2
    assert _one_error_line(capsys) == f"error: {BOOL_ERROR}\n"
    assert main(["run"]) == 2
    _one_error_line(capsys, BOOL_ERROR)
    monkeypatch.delenv("TOTALVI_EXPLORER_TRAIN_IN_PROCESS")
    assert main(["serve", "--port", "eighty"]) == 2
    _one_error_line(capsys, "--port: 'eighty' is not an integer")


def test_train_and_info_stop_on_a_bad_variable(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("TOTALVI_EXPLORER_SEED", "x")
    assert main(["train", str(tmp_path / "nope.h5ad"), "--out", str(tmp_path / "m")]) == 2
    _one_error_line(capsys, "TOTALVI_EXPLORER_SEED: 'x' is not an integer")
    assert not (tmp_path / "m").exists()
    assert main(["info", str(tmp_path / "no-model")]) == 2
    _one_error_line(capsys, "TOTALVI_EXPLORER_SEED")


def test_flags_not_given_leave_the_environment_and_file_in_force(tmp_path, monkeypatch) -> None:
    seen: dict = {}

    def fake_serve(data, model, **kwargs) -> int:
        seen.update(kwargs, data=data, model=model)
        return 0

    monkeypatch.setattr("dashboard.server.serve", fake_serve)
    config = _toml(tmp_path, 'host = "0.0.0.0"\nport = 1111\nlayer = "counts"\n')
    monkeypatch.setenv("TOTALVI_EXPLORER_PORT", "2222")
    monkeypatch.setenv("TOTALVI_EXPLORER_CACHE_DIR", str(tmp_path / "cache"))
    assert main(["run", "--config", str(config)]) == 0
    assert (seen["host"], seen["port"], seen["flags"]) == ("0.0.0.0", 2222, {"layer": "counts"})
    assert seen["settings"].cache_dir == tmp_path / "cache" and seen["debug"] is False
    assert main(["run", "--config", str(config), "--port", "3333", "--layer", ""]) == 0
    assert (seen["port"], seen["flags"]) == (3333, {"layer": ""})

    parser = build_parser()
    args = parser.parse_args(["train", "d.h5ad", "--out", "m"])
    monkeypatch.setenv("TOTALVI_EXPLORER_SEED", "7")
    monkeypatch.setenv("TOTALVI_EXPLORER_DEVICE", "cpu")
    assert (config_of(args).settings.seed, config_of(args).settings.device) == (7, "cpu")
    args = parser.parse_args(["train", "d.h5ad", "--out", "m", "--seed", "3"])
    assert config_of(args).settings.seed == 3


def test_one_train_command() -> None:
    parser = build_parser()
    train = parser.parse_args(["train", "d.h5ad", "--out", "m"])
    assert train.func.__module__ == "dashboard.backend.cli_commands"
    assert (train.n_latent, train.precision, train.max_epochs) == (20, "auto", None)


@pytest.mark.parametrize(
    ("sub", "shown"),
    [
        ("train", ["latent dimensions (default: 20)", "random seed (default: 0)"]),
        ("precompute", ["results cache folder (default: data/cache)", "(default: measured)"]),
        ("export", ["results cache folder (default: data/cache)"]),
        ("run", ["port to listen on (default: 8050)", "on (default: 127.0.0.1)"]),
        ("serve", ["worker threads (default: 8)", "upload limit in MiB (default: 500)"]),
        ("info", ["TOML config file (default: $TOTALVI_EXPLORER_CONFIG, else none)"]),
    ],
)
def test_help_states_the_dataclass_defaults(sub: str, shown: list[str], capsys) -> None:
    with pytest.raises(SystemExit) as exit_:
        main([sub, "--help"])
    assert exit_.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    for words in shown:
        assert words in text, (sub, words)
    assert "flag > environment > file > default" in text
    assert describe_default("cache_dir") == "data/cache"
    assert describe_default("port") == str(ServeOptions.port)
