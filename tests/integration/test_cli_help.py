"""``totalvi-explorer --help``: fast (no heavy imports), every option's default stated, and
README's "Command line" section agreeing with the parser on what is required.

The speed target (< 1 s per ``--help``) is checked through its cause, deterministically:
building the parser and printing help must not import torch, Dash, scanpy, anndata or
plotly (each costs seconds). No timing is asserted.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from dashboard.cli import build_parser, main

ROOT = Path(__file__).resolve().parents[2]
SUBCOMMANDS = ("train", "info", "precompute", "export", "simulate", "run", "serve", "passwd")
HEAVY = ("torch", "dash", "scanpy", "anndata", "plotly", "mudata", "sklearn", "umap")

_PROBE = """
import contextlib, io, json, sys
from dashboard.cli import main
out = io.StringIO()
with contextlib.redirect_stdout(out):
    try:
        code = main(sys.argv[1:])
    except SystemExit as exit_:
        code = exit_.code
heavy = sorted({m.split(".")[0] for m in sys.modules} & set(HEAVY))
print(json.dumps({"code": code, "heavy": heavy, "out": out.getvalue()}))
""".replace("HEAVY", repr(HEAVY))


def _probe(argv: list[str], stdin: str = "") -> dict:
    """Run the entry point in a fresh interpreter; its exit code, output, heavy imports."""
    done = subprocess.run(
        [sys.executable, "-c", _PROBE, *argv],
        cwd=ROOT,
        input=stdin,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.splitlines()[-1])


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


@pytest.mark.parametrize("sub", ["", *SUBCOMMANDS])
def test_help_imports_nothing_heavy(sub: str) -> None:
    result = _probe([sub, "--help"] if sub else ["--help"])
    assert result["code"] == 0
    assert result["heavy"] == []
    assert result["out"].startswith(f"usage: totalvi-explorer {sub}".rstrip())


def test_passwd_imports_nothing_heavy(tmp_path) -> None:
    users = tmp_path / "users"
    result = _probe(["passwd", str(users), "alice", "--password-stdin"], stdin="s3cret-passw0rd\n")
    assert result["code"] == 0
    assert result["heavy"] == []
    assert result["out"] == f"added user alice in {users}\n"
    assert users.read_text().startswith("alice:")


def test_every_option_has_help_stating_its_default() -> None:
    parser = build_parser()
    missing = []
    for name, sub in _subparsers(parser).items():
        formatter = sub._get_formatter()
        for action in sub._actions:
            if not action.option_strings or isinstance(action, argparse._HelpAction):
                continue
            text = formatter._get_help_string(action) if action.help else ""
            wanted = "(required)" if action.required else "default"
            if wanted not in text:
                missing.append(f"{name} {action.option_strings[0]}: {text!r}")
    assert not missing, "\n".join(missing)


def test_help_text_shows_the_defaults() -> None:
    subs = _subparsers(build_parser())
    train = subs["train"].format_help()
    usage = " ".join(train.split("\n\n")[0].split())  # argparse wraps the usage lines
    assert "--out DIR" in usage  # usage: required, so not in brackets
    assert "[--out" not in train
    assert re.search(r"--n-latent N_LATENT\s+latent dimensions \(default: 20\)", train)
    assert re.search(r"--quiet\s+no per-epoch progress lines \(default: off\)", train)
    serve = " ".join(subs["serve"].format_help().split())
    assert "port to listen on (default: 8050)" in serve
    assert "worker threads (default: 8)" in serve
    assert "upload limit in MiB (default: 500)" in serve


def test_train_without_out_is_a_usage_error(tmp_path, capsys) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["train", str(tmp_path / "data.h5ad")])
    assert exit_.value.code == 2
    assert "the following arguments are required: --out" in capsys.readouterr().err


def _readme_commands() -> dict[str, str]:
    """``{subcommand: its line}`` from README's "Command line" code block."""
    text = (ROOT / "README.md").read_text()
    section = text.split("## Command line", 1)[1].split("\n## ", 1)[0]
    block = section.split("```bash", 1)[1].split("```", 1)[0]
    lines = {}
    for line in block.strip().splitlines():
        words = line.split("#", 1)[0].split()
        if len(words) > 1 and words[0] == "totalvi-explorer":
            lines[words[1]] = " ".join(words[2:])
    return lines


def test_readme_and_help_agree_on_required_options() -> None:
    readme = _readme_commands()
    subs = _subparsers(build_parser())
    assert set(readme) == set(SUBCOMMANDS)
    for name, usage in readme.items():
        parser = subs[name]
        known = {s for a in parser._actions for s in a.option_strings}
        required = {
            a.option_strings[0] for a in parser._actions if a.option_strings and a.required
        }
        outside = re.sub(r"\[[^\]]*\]", " ", usage)  # what README shows as required
        shown_required = set(re.findall(r"--[a-z][a-z-]*", outside))
        assert shown_required == required, (name, shown_required, required)
        mentioned = set(re.findall(r"--[a-z][a-z-]*", usage))
        assert mentioned <= known, (name, mentioned - known)
        positionals = [
            a.dest.upper() for a in parser._actions if not a.option_strings and a.nargs != "?"
        ]
        for a in parser._actions:  # an optional positional is shown in brackets
            if not a.option_strings and a.nargs == "?":
                assert f"[{a.dest.upper()}]" in usage, (name, a.dest)
        shown_positionals = [
            w for w in outside.split() if not w.startswith("-") and w.isupper() and w != "..."
        ]
        # positionals come first in README (before any option and its value)
        assert shown_positionals[: len(positionals)] == [
            {"MODEL": "MODEL_DIR"}.get(p, p) for p in positionals
        ], (name, shown_positionals)
