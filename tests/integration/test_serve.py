"""``totalvi-explorer serve``: configuration precedence and errors, HTTP basic auth on every
route (Flask test client), one real waitress server over HTTP, and ``passwd``."""

from __future__ import annotations

import base64
import io
import stat
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from werkzeug.security import check_password_hash

from dashboard.app import ASSETS
from dashboard.auth import FailureLimiter, read_credentials, set_password
from dashboard.cli import main
from dashboard.serve_config import ConfigError, load_serve_config

PASSWORD = "correct horse battery"


def basic(user: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


# ------------------------------------------------------------------------ configuration
def test_precedence_flag_over_env_over_file_over_default(tmp_path) -> None:
    config = tmp_path / "conf" / "explorer.toml"
    config.parent.mkdir()
    config.write_text(
        'host = "0.0.0.0"\nport = 1111\nthreads = 3\ndata_dir = "datasets"\n'
        'cache_dir = "/file/cache"\nmax_upload_bytes = 1_000_000\nauth_file = "users"\n'
        'redis_url = "redis://file:6379/0"\n'
    )
    env = {"TOTALVI_EXPLORER_PORT": "2222", "TOTALVI_EXPLORER_CACHE_DIR": "/env/cache"}

    c = load_serve_config({"port": 3333, "host": None}, config_file=config, env=env)
    assert c.port == 3333 and c.origin["port"] == "command line"  # flag wins
    assert c.host == "0.0.0.0" and c.origin["host"] == f"file {config}"  # None = not given
    assert c.settings.cache_dir == Path("/env/cache")  # env beats the file
    assert c.settings.data_dir == config.parent / "datasets"  # relative to the file
    assert c.settings.auth_file == config.parent / "users"
    assert c.settings.max_upload_bytes == 1_000_000
    assert c.settings.redis_url == "redis://file:6379/0"
    assert c.threads == 3

    c = load_serve_config({}, config_file=config, env=env)
    assert c.port == 2222 and c.origin["port"] == "environment"
    c = load_serve_config({}, config_file=config, env={})
    assert c.port == 1111 and c.settings.cache_dir == Path("/file/cache")
    c = load_serve_config({}, env={})
    assert (c.host, c.port, c.threads) == ("127.0.0.1", 8050, 8)
    assert c.settings.auth_file is None and c.settings.max_upload_bytes == 500 * 1024**2
    assert c.data is None and c.model is None  # the embedded default (server.bootstrap)
    assert c.read_flags == {}  # the model's registry says where the counts and keys are
    # TOTALVI_EXPLORER_CONFIG names the file when --config is not given
    c = load_serve_config({}, env={"TOTALVI_EXPLORER_CONFIG": str(config)})
    assert c.port == 1111


@pytest.mark.parametrize(
    ("body", "key", "words"),
    [
        ("prot = 8050\n", "prot", "unknown key"),
        ('port = "eighty"\n', "port", "is not an integer"),
        ("threads = 0\n", "threads", "must be positive"),
        ("data_dir = 3\n", "data_dir", "is not a path"),
        ("port = \n", None, "not valid TOML"),
    ],
)
def test_bad_config_is_one_line_naming_file_and_key(tmp_path, capsys, body, key, words) -> None:
    config = tmp_path / "bad.toml"
    config.write_text(body)
    with pytest.raises(ConfigError) as err:
        load_serve_config({}, config_file=config, env={})
    message = str(err.value)
    assert str(config) in message and words in message and "\n" not in message
    if key:
        assert f"'{key}'" in message
    assert main(["serve", "--config", str(config)]) == 2  # nothing is opened or served
    _, errtext = capsys.readouterr()
    assert errtext.startswith("error: ") and str(config) in errtext
    assert errtext.count("\n") == 1 and "Traceback" not in errtext


def test_missing_config_file_and_bad_env(tmp_path) -> None:
    with pytest.raises(ConfigError, match="config file not found"):
        load_serve_config({}, config_file=tmp_path / "nope.toml", env={})
    with pytest.raises(ConfigError, match="TOTALVI_EXPLORER_PORT"):
        load_serve_config({}, env={"TOTALVI_EXPLORER_PORT": "x"})


# ---------------------------------------------------------------------------------- auth
@pytest.fixture(autouse=True)
def _fresh_login_limits(request) -> None:
    """Each auth test starts with no failed login counted (``dashboard.auth`` rate limits
    them: tests/integration/test_http_guard.py)."""
    if "auth_app" in request.fixturenames:
        auth = request.getfixturevalue("auth_app").app.server.config["TOTALVI_AUTH"]
        auth.clients, auth.user_names = FailureLimiter(), FailureLimiter()


ROUTES = ["/", "/model", "/_dash-layout", "/_dash-dependencies", f"/assets/{'style.css'}"]


@pytest.mark.parametrize("route", ROUTES)
def test_auth_is_required_on_every_route(auth_app, route) -> None:
    assert (ASSETS / "style.css").is_file()
    for headers in ({}, basic("alice", "wrong"), basic("mallory", PASSWORD), basic("alice", "")):
        r = auth_app.client.get(route, headers=headers)
        assert r.status_code == 401, (route, headers)
        assert r.headers["WWW-Authenticate"].startswith("Basic realm=")
        assert b"alice" not in r.data and PASSWORD.encode() not in r.data
    r = auth_app.client.get(route, headers=basic("alice", PASSWORD))
    assert r.status_code == 200, route
    r = auth_app.client.post(
        "/_dash-update-component", json={"output": "x", "inputs": []}, headers={}
    )
    assert r.status_code == 401


def test_auth_never_logs_password_or_hash(auth_app, caplog) -> None:
    caplog.set_level("DEBUG")
    auth_app.client.get("/", headers=basic("alice", "wrong-" + PASSWORD))
    hashed = read_credentials(auth_app.users)["alice"]
    assert PASSWORD not in caplog.text and hashed not in caplog.text
    assert "wrong-" not in caplog.text


def test_passwd_changes_take_effect_without_restart(auth_app) -> None:
    set_password(auth_app.users, "bob", "bob's password")
    assert auth_app.client.get("/", headers=basic("bob", "bob's password")).status_code == 200
    assert auth_app.client.get("/", headers=basic("alice", PASSWORD)).status_code == 200
    set_password(auth_app.users, "alice", "changed!")  # the remembered check is dropped
    assert auth_app.client.get("/", headers=basic("alice", PASSWORD)).status_code == 401
    assert auth_app.client.get("/", headers=basic("alice", "changed!")).status_code == 200
    set_password(auth_app.users, "alice", PASSWORD)


# ------------------------------------------------------------------------- real waitress
def test_serve_with_waitress_over_http_with_auth(waitress_serve) -> None:
    with waitress_serve(threads=2) as server:
        url = f"http://127.0.0.1:{server.effective_port}/"
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(url, timeout=10)
        assert err.value.code == 401 and "Basic" in err.value.headers["WWW-Authenticate"]
        req = urllib.request.Request(url, headers=basic("alice", PASSWORD))
        with urllib.request.urlopen(req, timeout=10) as r:
            assert r.status == 200
            assert r.headers["Server"] == "totalvi-explorer"
            assert b"TotalVI Explorer" in r.read()


# -------------------------------------------------------------------------------- passwd
def test_passwd_writes_a_0600_file_and_never_echoes(tmp_path, capsys, monkeypatch) -> None:
    users = tmp_path / "etc" / "users"
    monkeypatch.setattr("sys.stdin", io.StringIO(PASSWORD + "\n"))
    assert main(["passwd", str(users), "alice", "--password-stdin"]) == 0
    out, err = capsys.readouterr()
    assert "added user alice" in out and PASSWORD not in out + err
    assert stat.S_IMODE(users.stat().st_mode) == 0o600
    hashed = read_credentials(users)["alice"]
    assert hashed.startswith("scrypt:") and check_password_hash(hashed, PASSWORD)
    assert PASSWORD not in users.read_text()

    # from the prompt (getpass: no echo), updating alice and adding bob
    answers = iter(["new secret", "new secret"])
    monkeypatch.setattr("getpass.getpass", lambda prompt="": next(answers))
    assert main(["passwd", str(users), "alice"]) == 0
    answers = iter(["bob's pw", "bob's pw"])
    assert main(["passwd", str(users), "bob"]) == 0
    out, err = capsys.readouterr()
    assert "updated user alice" in out and "new secret" not in out + err
    creds = read_credentials(users)
    assert set(creds) == {"alice", "bob"} and len(users.read_text().splitlines()) == 2
    assert check_password_hash(creds["alice"], "new secret")
    assert not check_password_hash(creds["alice"], PASSWORD)
    assert stat.S_IMODE(users.stat().st_mode) == 0o600
    assert [p.name for p in users.parent.iterdir()] == ["users"]  # no temp file left

    # mismatched prompt answers change nothing; a pbkdf2 hash written by hand is accepted
    answers = iter(["one", "two"])
    assert main(["passwd", str(users), "alice"]) == 2
    assert read_credentials(users)["alice"] == creds["alice"]
    from werkzeug.security import generate_password_hash

    users.write_text(f"carol:{generate_password_hash('c', method='pbkdf2:sha256')}\n")
    assert check_password_hash(read_credentials(users)["carol"], "c")
    users.write_text("carol:plaintext\n")
    assert main(["serve", "--auth-file", str(users)]) == 2
    out, err = capsys.readouterr()
    assert "line 1" in err and "plaintext" not in err


def test_serve_command_passes_the_merged_config(tmp_path, monkeypatch) -> None:
    users = tmp_path / "users"
    set_password(users, "alice", PASSWORD)
    config = tmp_path / "explorer.toml"
    config.write_text(f'threads = 3\nport = 1111\nauth_file = "{users}"\nbatch_key = ""\n')
    seen: dict = {}

    def fake_serve(data, model, **kwargs) -> int:
        seen.update(kwargs, data=data, model=model)
        return 0

    monkeypatch.setattr("dashboard.server.serve", fake_serve)
    monkeypatch.setenv("TOTALVI_EXPLORER_THREADS", "5")
    argv = ["serve", "--config", str(config), "--port", "9999", "--max-upload-mb", "2"]
    assert main(argv) == 0
    assert seen["production"] is True and seen["debug"] is False
    assert (seen["port"], seen["threads"], seen["flags"]) == (9999, 5, {"batch_key": ""})
    assert seen["settings"].auth_file == users
    assert seen["settings"].max_upload_bytes == 2 * 1024**2
    assert seen["data"] is None and seen["model"] is None  # the embedded default
    assert main([*argv, "--dev"]) == 0
    assert seen["production"] is False and seen["debug"] is True
