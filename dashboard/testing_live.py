"""A real ``totalvi-explorer serve`` process to attack over HTTP (``tests/security``,
``bench/attack_memory.py``).

:func:`start_server` runs the server as its own process (``python -m dashboard.cli serve``)
on 127.0.0.1 with basic auth, its data, model and cache folders in a temp dir, and a
"secret" file outside every folder it may read. :class:`Live` talks to it only over HTTP
(pages, callbacks as the browser fires them, uploads), reads its log and measures its
memory with psutil, as an attacker and an operator would see it. The crafted upload files
of :data:`ATTACKS` are each a valid small ``.h5ad`` changed in one way an attacker would.
"""

from __future__ import annotations

import base64
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import h5py
import numpy as np
import psutil
import requests

from dashboard.auth import set_password

ROOT = Path(__file__).resolve().parents[1]
USER, PASSWORD = "alice", "correct horse battery"
#: A second user (multi-user tests and benchmark).
OTHER_USER, OTHER_PASSWORD = "bob", "battery staple horse"
SECRET = "TOP-SECRET-credential-7f3a"
UPLOAD_LIMIT_MB = 64


# ------------------------------------------------------------------ crafted upload files
# Each builder takes a good small .h5ad, an HDF5 "secret" outside the server's folders and
# the path to write; it returns the crafted file's bytes.
Builder = Callable[[Path, Path, Path], bytes]


def secret_h5(path: Path, secret: str) -> Path:
    """An HDF5 file outside the folders whose strings an attack tries to show."""
    with h5py.File(path, "w") as f:
        f.create_dataset("categories", data=np.array([secret, secret + "-2"], dtype="S"))
        f.create_dataset("codes", data=np.zeros(200, dtype=np.int8))
        f.create_dataset("raw", data=np.frombuffer(secret.encode(), dtype=np.uint8))
    return path


def _edit(good: Path, out: Path, edit: Callable[[h5py.File], None]) -> bytes:
    shutil.copyfile(good, out)
    with h5py.File(out, "r+") as f:
        edit(f)
    return out.read_bytes()


def external_link(good: Path, secret: Path, out: Path) -> bytes:
    """``obs/batch/categories`` is an external link into the secret file."""

    def edit(f: h5py.File) -> None:
        del f["obs/batch/categories"]
        f["obs/batch/categories"] = h5py.ExternalLink(str(secret), "categories")

    return _edit(good, out, edit)


def external_group_link(good: Path, secret: Path, out: Path) -> bytes:
    """The whole ``uns`` group is an external link (to the secret file's root)."""

    def edit(f: h5py.File) -> None:
        del f["uns"]
        f["uns"] = h5py.ExternalLink(str(secret), "/")

    return _edit(good, out, edit)


def external_storage(good: Path, secret: Path, out: Path) -> bytes:
    """A dataset whose raw bytes live in another file (HDF5 external storage)."""
    size = secret.stat().st_size

    def edit(f: h5py.File) -> None:
        f["uns"].create_dataset(
            "leak", shape=(size,), dtype=np.uint8, external=[(str(secret), 0, size)]
        )

    return _edit(good, out, edit)


def virtual_dataset(good: Path, secret: Path, out: Path) -> bytes:
    """A virtual dataset mapping the secret file's ``categories``."""

    def edit(f: h5py.File) -> None:
        layout = h5py.VirtualLayout(shape=(2,), dtype="S40")
        layout[:] = h5py.VirtualSource(str(secret), "categories", shape=(2,))
        del f["obs/batch/categories"]
        f["obs/batch"].create_virtual_dataset("categories", layout)

    return _edit(good, out, edit)


def decreasing_indptr(good: Path, secret: Path, out: Path) -> bytes:
    """``X/indptr`` goes down in the middle (the attack that corrupted scipy's heap)."""

    def edit(f: h5py.File) -> None:
        indptr = f["X/indptr"][()]
        indptr[50] = indptr[-1] + 10_000
        indptr[51] = 3
        f["X/indptr"][...] = indptr

    return _edit(good, out, edit)


def indices_out_of_range(good: Path, secret: Path, out: Path) -> bytes:
    """Column indices beyond the number of genes (segfaulted training later)."""

    def edit(f: h5py.File) -> None:
        idx = f["X/indices"][()]
        idx[::7] = 10_000_000
        idx[3] = -5 if np.issubdtype(idx.dtype, np.signedinteger) else idx[3]
        f["X/indices"][...] = idx

    return _edit(good, out, edit)


def nnz_mismatch(good: Path, secret: Path, out: Path) -> bytes:
    """``indptr[-1]`` claims more entries than ``data`` holds."""

    def edit(f: h5py.File) -> None:
        indptr = f["X/indptr"][()]
        indptr[-1] += 1_000_000
        f["X/indptr"][...] = indptr

    return _edit(good, out, edit)


def unallocated_dense(good: Path, secret: Path, out: Path) -> bytes:
    """``X`` declares 50,000 cells x 4,000 genes dense (800 MB) with no chunk written."""

    def edit(f: h5py.File) -> None:
        del f["X"]
        f.create_dataset("X", shape=(50_000, 4_000), dtype=np.float32, chunks=(1000, 1000),
                         compression="gzip")  # fmt: skip

    return _edit(good, out, edit)


def unlinked_reference(good: Path, secret: Path, out: Path) -> bytes:
    """``obs/batch/codes`` refers (an old-format ``categories`` attribute, which anndata
    follows) to a dataset no link leads to, whose raw storage is the secret file."""
    import ctypes

    size = secret.stat().st_size

    def edit(f: h5py.File) -> None:
        ds = f["uns"].create_dataset(
            "tmp", shape=(1,), dtype=f"S{size}", external=[(str(secret), 0, size)]
        )
        ref = ds.ref
        lib = ctypes.CDLL(h5py.h5.__file__)  # links libhdf5: H5Oincr_refcount is there
        lib.H5Oincr_refcount.argtypes = [ctypes.c_int64]
        lib.H5Oincr_refcount(ds.id.id)  # kept alive once unlinked
        del f["uns/tmp"]
        f["obs/batch/codes"].attrs["categories"] = ref

    return _edit(good, out, edit)


def soft_link_amplification(good: Path, secret: Path, out: Path) -> bytes:
    """One hollow 60 MB dataset (under the size floor) behind 1,000 soft links: 60 GB for a
    reader that follows them."""

    def edit(f: h5py.File) -> None:
        f["uns"].create_dataset("d", shape=(15_000_000,), dtype="f4", chunks=(1_000_000,))
        for i in range(1000):
            f[f"uns/s{i}"] = h5py.SoftLink("/uns/d")

    return _edit(good, out, edit)


ATTACKS: dict[str, tuple[Builder, str]] = {
    # name: (builder, a word the refusal must contain besides the object)
    "external_link": (external_link, "obs/batch/categories"),
    "external_group_link": (external_group_link, "uns"),
    "external_storage": (external_storage, "uns/leak"),
    "virtual_dataset": (virtual_dataset, "obs/batch/categories"),
    "decreasing_indptr": (decreasing_indptr, "indptr"),
    "indices_out_of_range": (indices_out_of_range, "indices"),
    "nnz_mismatch": (nnz_mismatch, "indptr"),
    "unallocated_dense": (unallocated_dense, "X"),
    "unlinked_reference": (unlinked_reference, "outside the file's tree"),
    "soft_link_amplification": (soft_link_amplification, "in all"),
}


# ------------------------------------------------------------------------- live server
def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


@dataclass
class Live:
    """A running server and what the tests need to talk to it."""

    url: str
    proc: subprocess.Popen
    root: Path
    data_dir: Path
    model_dir: Path
    cache_dir: Path
    secret: Path
    log: list[str] = field(default_factory=list)
    deps: list[dict[str, Any]] = field(default_factory=list)
    users: dict[str, str] = field(default_factory=lambda: {USER: PASSWORD})
    #: whose requests this handle sends (see :meth:`as_user`)
    user: str = USER

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": basic(self.user, self.users[self.user])}

    def as_user(self, user: str) -> Live:
        """The same server, talked to as ``user`` (one of :attr:`users`)."""
        other = Live(**{**self.__dict__, "user": user})
        other.log, other.deps = self.log, self.deps  # one log, one dependency list
        return other

    def get(self, path: str, **kw: Any) -> requests.Response:
        headers = {**self.auth, **kw.pop("headers", {})}
        return requests.get(self.url + path, headers=headers, timeout=kw.pop("timeout", 60), **kw)

    def alive(self) -> bool:
        """The server still answers a page request with 200."""
        return self.proc.poll() is None and self.get("/_dash-layout").status_code == 200

    def rss(self) -> int:
        return psutil.Process(self.proc.pid).memory_info().rss

    def dependencies(self) -> list[dict[str, Any]]:
        """The app's callbacks as the renderer reads them (``/_dash-dependencies``)."""
        if not self.deps:
            r = self.get("/_dash-dependencies")
            r.raise_for_status()
            self.deps[:] = r.json()
        return self.deps

    def callback(self, output: str, values: dict[str, Any], changed: list[str]) -> dict:
        """Fire the callback whose output names ``output`` (``"id.prop"``) as the browser
        would (of several, the one ``changed`` fires); ``values`` maps ``"id.prop"`` to the
        values sent. Returns the response's JSON (``{"response": {id: {prop: value}}}``),
        raising on a non-200 answer."""
        found = [d for d in self.dependencies() if output in d["output"]]
        if len(found) > 1:  # several write it: the one the changed input fires
            found = [d for d in found if _fired_by(d, changed)]
        assert len(found) == 1, f"{len(found)} callbacks output {output}"
        return self.post_callback(found[0], values, changed)

    def fire(self, changed: str, values: dict[str, Any]) -> dict:
        """Fire the one callback whose inputs include ``changed`` (``"id.prop"``), as the
        browser does when that property changes; ``values`` as for :meth:`callback`."""
        found = [d for d in self.dependencies() if _fired_by(d, [changed])]
        assert len(found) == 1, f"{len(found)} callbacks take {changed}"
        return self.post_callback(found[0], values, [changed])

    def post_callback(
        self, cb: dict[str, Any], values: dict[str, Any], changed: list[str]
    ) -> dict:
        """POST one callback request for dependency ``cb``."""

        def fill(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
            return [{**d, "value": values.get(f"{d['id']}.{d['property']}")} for d in items]

        outputs = [
            {"id": part.split(".")[0], "property": part.split(".")[1]}
            for part in cb["output"].strip(".").split("...")
        ]
        body = {
            "output": cb["output"],
            "outputs": outputs if len(outputs) > 1 else outputs[0],
            "inputs": fill(cb["inputs"]),
            "state": fill(cb.get("state", [])),
            "changedPropIds": changed,
        }
        r = requests.post(
            self.url + "/_dash-update-component", json=body, headers=self.auth, timeout=120
        )
        assert r.status_code in (200, 204), (r.status_code, r.text[:300])
        return r.json() if r.status_code == 200 else {}

    def status(self) -> tuple[str | None, str]:
        """This user's workspace pair (the version token the shell's poll gives) and the
        status bar's text."""
        tick = "app-status-interval.n_intervals"
        out = self.fire(tick, {tick: 1})["response"]
        token = (out.get("app-model-version-store") or {}).get("data") or {}
        return token.get("pair"), shown_text(out["app-status"]["children"])

    def poll(self, interval: str) -> str:
        """What the job panel polled by the timer ``interval`` shows this user now."""
        return response_text(self.fire(f"{interval}.n_intervals", {f"{interval}.n_intervals": 1}))

    def upload(self, raw: bytes, name: str, target: str = "dataset") -> dict[str, Any]:
        """POST a file to the upload route as the drop zone does; what the zone stores."""
        r = requests.post(
            f"{self.url}/_upload/{target}",
            data=raw,
            headers={**self.auth, "X-Filename": quote(name),
                     "Content-Type": "application/octet-stream"},
            timeout=300,
        )  # fmt: skip
        body = r.json() if r.headers.get("Content-Type", "").startswith("application/json") else {}
        return {"upload": body["upload"]} if "upload" in body else {"failed": r.status_code}

    def upload_message(
        self, raw: bytes, name: str, target: str = "dataset", *, timeout: float = 120.0
    ) -> str:
        """Upload ``raw`` as the drop zone does, follow the job that checks it as its panel
        does (the poll timer) and return the one line the Model page then shows."""
        zone = "model-upload" if target == "dataset" else "model-query-upload"
        done, check = f"{zone}-done.data", f"{zone}-check"
        out = self.fire(done, {done: self.upload(raw, name, target)})["response"]
        store = out.get(f"{check}-job-store", {}).get("data")
        ended = out.get(f"{zone}-checked", {}).get("data")
        interval = f"{check}-interval.n_intervals"
        deadline = time.monotonic() + timeout
        while ended is None and time.monotonic() < deadline:
            time.sleep(0.3)
            polled = self.fire(interval, {interval: 1, f"{check}-job-store.data": store})
            ended = polled["response"].get(f"{zone}-checked", {}).get("data")
        assert ended is not None, f"the check of {name} did not end in {timeout:g} s"
        status = f"{zone}-status"
        out = self.fire(f"{zone}-checked.data", {f"{zone}-checked.data": ended})
        return shown_text(out["response"][status]["children"])

    def log_text(self) -> str:
        return "".join(self.log)


def store_data(layout: Any, store_id: str) -> Any:
    """The ``data`` of the store ``store_id`` in a Dash layout tree (``None`` if absent)."""
    found: list[Any] = []

    def visit(node: Any) -> None:
        if isinstance(node, dict):
            props = node.get("props")
            if isinstance(props, dict) and props.get("id") == store_id:
                found.append(props.get("data"))
            for v in node.values():
                visit(v)
        elif isinstance(node, list):
            for v in node:
                visit(v)

    visit(layout)
    return found[0] if found else None


def response_text(out: dict[str, Any]) -> str:
    """Everything a callback response shows, as one line of text."""
    return " ".join(shown_text(v) for c in out.get("response", {}).values() for v in c.values())


def _fired_by(dep: dict[str, Any], changed: list[str]) -> bool:
    return any(f"{i['id']}.{i['property']}" in changed for i in dep["inputs"])


def shown_text(component: Any) -> str:
    """The text a rendered component (Dash JSON) shows."""
    if isinstance(component, dict):
        return shown_text(component.get("props", {}).get("children"))
    if isinstance(component, list):
        return " ".join(shown_text(c) for c in component)
    return "" if component is None else str(component)


def small_dataset(path: Path, *, n_cells: int = 200, n_genes: int = 100) -> Path:
    from dashboard.backend.testing import pbmc_slice

    pbmc_slice(n_cells=n_cells, n_genes=n_genes).to_anndata().write_h5ad(path)
    return path


#: The default small pair made and prepared once per process (:func:`prepared_small`).
_SMALL: dict[str, Path] = {}
#: The cache folders that hold computed results (not jobs, workspaces or names).
RESULT_FOLDERS = ("results", "blocks")
#: What every test server runs with (a small neighbourhood for 200 cells, no compile).
SERVER_ENV = {
    "PYTHONUNBUFFERED": "1",
    "TOTALVI_EXPLORER_UMAP_N_NEIGHBORS": "10",
    "TOTALVI_EXPLORER_WARM_UP_LAYOUT": "0",  # no 40 s compile beside every suite
}


def prepared_small(base: Path) -> Path:
    """A folder with the default small pair (``data/small.h5ad``, ``models/small``) and a
    results cache where it was prepared (first view and warm steps) as a test server
    prepares it: made once per process under ``base``, then copied by each server that
    opens the default, so none trains it again or spends its start compiling UMAP.
    Results are keyed by content, so a copy serves what the server would compute."""
    if "root" in _SMALL:
        return _SMALL["root"]
    from dashboard.backend.settings import Settings
    from dashboard.server import bootstrap
    from model import TotalVI, read_cite_seq

    root = base / "prepared-small"
    data_dir, model_dir, cache_dir = root / "data", root / "models", root / "cache"
    for d in (data_dir, model_dir, cache_dir):
        d.mkdir(parents=True, exist_ok=True)
    data, model = small_dataset(data_dir / "small.h5ad"), model_dir / "small"
    cells = read_cite_seq(data, batch_key="batch")
    small = TotalVI(cells, n_hidden=32, n_latent=5, seed=0)
    small.train(max_epochs=3, device="cpu", early_stopping=False, precision="32")
    small.save(model)
    settings = Settings.from_env(
        SERVER_ENV, cache_dir=cache_dir, data_dir=data_dir, model_dir=model_dir
    )
    boot = bootstrap(data, model, settings=settings, out=None)
    try:
        assert boot.job is not None, boot.message
        info = boot.service.wait(boot.job, timeout=300)
        assert str(info.status) == "done", f"preparing the small pair failed: {info.error}"
        deadline = time.monotonic() + 300
        while boot.state.status().warming and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        boot.service.close()
    _SMALL["root"] = root
    return root


def start_server(
    root: Path,
    *,
    extra_env: dict[str, str] | None = None,
    upload_limit_mb: float = UPLOAD_LIMIT_MB,
    users: dict[str, str] | None = None,
    timeout: float = 180,
    data: Path | None = None,
    model: Path | None = None,
) -> Live:
    """Start ``serve`` over folders under ``root`` (made when missing) and wait for it;
    ``users`` (name: password, default :data:`USER` alone) may log in. It opens ``data``
    and ``model`` (default: a small slice and a model trained on it for 3 epochs, copied
    into the data and model folders with their prepared results, :func:`prepared_small`)."""
    users = dict(users or {USER: PASSWORD})

    data_dir, model_dir, cache_dir = root / "data", root / "models", root / "cache"
    for d in (data_dir, model_dir, cache_dir):
        d.mkdir(parents=True, exist_ok=True)
    secret = root / "outside" / "credentials.txt"
    if not secret.exists():
        secret.parent.mkdir(exist_ok=True)
        secret.write_text(SECRET + "\n")
    if data is None or model is None:
        data, model = data_dir / "small.h5ad", model_dir / "small"
        if not data.exists():
            small = prepared_small(root.parent)
            shutil.copy2(small / "data" / "small.h5ad", data)
            shutil.copytree(small / "models" / "small", model)
            for folder in RESULT_FOLDERS:
                if (small / "cache" / folder).is_dir():
                    shutil.copytree(small / "cache" / folder, cache_dir / folder)
    users_file = root / "users"
    if not users_file.exists():
        for name, password in users.items():
            set_password(users_file, name, password)
    env = {**os.environ, **SERVER_ENV, **(extra_env or {})}
    cmd = [
        sys.executable, "-m", "dashboard.cli", "serve", "--data", str(data),
        "--model", str(model), "--data-dir", str(data_dir),
        "--model-dir", str(model_dir), "--cache-dir", str(cache_dir),
        "--auth-file", str(users_file),
        "--port", "0", "--threads", "6", "--max-upload-mb", str(upload_limit_mb),
    ]  # fmt: skip
    proc = subprocess.Popen(
        cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    live = Live("", proc, root, data_dir, model_dir, cache_dir, secret, users=users)
    ready = threading.Event()

    def read() -> None:
        # ready once it listens and its results are prepared (in either order: a cache
        # that holds them says "ready" before the address), or at once on an error
        assert proc.stdout is not None
        prepared = False
        for line in proc.stdout:
            live.log.append(line)
            m = re.search(r"serve\s+(http://127\.0\.0\.1:\d+)/", line)
            if m:
                live.url = m.group(1)
            prepared = prepared or line.startswith("ready")
            if line.startswith("error") or (prepared and live.url):
                ready.set()
        ready.set()

    threading.Thread(target=read, daemon=True).start()
    if not ready.wait(timeout) or not live.url or proc.poll() is not None:
        proc.kill()
        raise RuntimeError("serve did not start:\n" + live.log_text())
    return live


def stop_server(live: Live) -> None:
    if live.proc.poll() is None:
        live.proc.terminate()
        try:
            live.proc.wait(20)
        except subprocess.TimeoutExpired:
            live.proc.kill()
            live.proc.wait(10)
