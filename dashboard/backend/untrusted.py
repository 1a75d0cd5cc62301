"""Open untrusted data files in a child process with a memory, CPU and time limit.

A file from a user (an upload, a file dropped into the data folder) is first read by a
short-lived child (``python -m dashboard.backend.untrusted``) that runs the same reader the
server will (:func:`model.data.read_cite_seq`, which refuses unsafe HDF5 files before
reading them, see :mod:`model.hdf5_guard`). Whatever still goes wrong there (a crash in C
code, a reader that balloons, an endless loop) ends the child, never the server, and the
user gets one line (:class:`~dashboard.backend.errors.DatasetNotFound`):

* the reader's own message, with the temporary path replaced by the user's file name;
* ``"<name>: reading it used more than N MB of memory; refused"``;
* ``"<name>: the reader crashed (signal 11, SIGSEGV); the file is malformed; refused"``;
* ``"<name>: reading it took longer than N s; refused"``.

The child dies with the server (:func:`dashboard.backend.lifetime.die_with_parent`), talks
JSON (no pickle from a process that parsed untrusted bytes), and its limits count only what
reading adds to the interpreter with its modules imported. At most :data:`MAX_CHILDREN`
children run at once. :func:`validate_file` remembers a file's verdict per file identity
(device, inode, size, modification time), so a file is read in a child once per process.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import resource
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dashboard.backend.errors import BackendError, DatasetNotFound, JobCancelled, LimitExceeded

if TYPE_CHECKING:
    from dashboard.backend.settings import Settings

__all__ = [
    "DATASET_READER",
    "QUERY_READER",
    "ValidationSummary",
    "child_validator",
    "validate_file",
    "validate_in_child",
]

#: Reader of CITE-seq datasets (``module:function``, called as ``fn(path, **read_kwargs)``).
DATASET_READER = "model.data:read_cite_seq"
#: Reader of query data to map (proteins optional).
QUERY_READER = "dashboard.backend.mapping:load_query_file"
#: Validation children that may run at once (each may use the whole memory limit).
MAX_CHILDREN = 2
#: Seconds a file waits for a free child slot before it is refused (try again later).
SLOT_WAIT = 10.0
#: Seconds between two looks at a job's cancel flag while its file is read.
CANCEL_POLL = 0.25
#: A file may use this many times its size in memory when that is above the setting.
BYTES_PER_FILE_BYTE = 20
_VERDICTS_KEPT = 256
_slots = threading.BoundedSemaphore(MAX_CHILDREN)
_verdicts: OrderedDict[tuple[Any, ...], ValidationSummary] = OrderedDict()
_verdicts_lock = threading.Lock()
_THREAD_ENV = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS")


@dataclass(frozen=True)
class ValidationSummary:
    """What the child read: sizes, obs columns, the reader's notices and the fingerprint."""

    source: str
    n_cells: int
    n_genes: int
    n_proteins: int
    obs_columns: tuple[str, ...]
    notices: tuple[str, ...]
    fingerprint: str


def validate_in_child(
    path: str | os.PathLike[str],
    *,
    read_kwargs: Mapping[str, Any] | None = None,
    memory_limit_bytes: int,
    timeout_s: float,
    source_name: str,
    reader: str = DATASET_READER,
    should_stop: Callable[[], bool] | None = None,
) -> ValidationSummary:
    """Read ``path`` with ``reader(path, **read_kwargs)`` in a limited child; its summary.

    ``memory_limit_bytes`` caps the address space reading may add, ``timeout_s`` the wall
    and CPU time. ``source_name`` names the file in messages. Raises
    :class:`DatasetNotFound` with one line on any failure (see the module docstring), and
    :class:`JobCancelled` when ``should_stop()`` turns true (the child is killed).
    """
    p = Path(path)
    name = source_name or p.name
    request = {
        "path": str(p),
        "reader": reader,
        "read_kwargs": dict(read_kwargs or {}),
        "memory_limit": int(memory_limit_bytes),
        "cpu_seconds": max(1, int(timeout_s + 0.999)),
        "parent_pid": os.getpid(),
    }
    env = dict(os.environ)
    for var in _THREAD_ENV:  # fewer threads: less address space reserved, less contention
        env.setdefault(var, "1")
    if not _slots.acquire(timeout=SLOT_WAIT):  # never let a queue of files hold the threads
        msg = (
            f"{name}: {MAX_CHILDREN} other files are being checked right now; try again in a "
            "minute"
        )
        raise LimitExceeded(msg)
    try:
        return _run_child(request, env, p, name, timeout_s, should_stop)
    finally:
        _slots.release()


def _run_child(
    request: Mapping[str, Any],
    env: dict[str, str],
    p: Path,
    name: str,
    timeout_s: float,
    should_stop: Callable[[], bool] | None,
) -> ValidationSummary:
    """Run one validation child (a slot is held) and read its verdict; ``should_stop`` is
    asked every :data:`CANCEL_POLL` seconds."""
    with tempfile.TemporaryFile() as errors:
        proc = subprocess.Popen(
            [sys.executable, "-m", "dashboard.backend.untrusted"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=errors,
            env=env,
            close_fds=True,
        )
        sent: bytes | None = json.dumps(request).encode()
        deadline = time.monotonic() + timeout_s
        while True:
            left = deadline - time.monotonic()
            try:  # communicate may be called again after a timeout; nothing is lost
                out, _ = proc.communicate(sent, timeout=max(0.0, min(CANCEL_POLL, left)))
                break
            except subprocess.TimeoutExpired:
                sent = None  # the request went with the first call
                stop = should_stop is not None and should_stop()
                if not stop and left > CANCEL_POLL:
                    continue
                proc.kill()
                proc.communicate()
                if stop:
                    msg = f"{name}: checking it was cancelled; nothing was stored"
                    raise JobCancelled(msg) from None
                msg = f"{name}: reading it took longer than {timeout_s:g} s; refused"
                raise DatasetNotFound(msg) from None
    return _verdict(proc.returncode, out, p, name, request)


def validate_file(
    path: str | os.PathLike[str],
    *,
    settings: Settings,
    source_name: str = "",
    read_kwargs: Mapping[str, Any] | None = None,
    reader: str = DATASET_READER,
    should_stop: Callable[[], bool] | None = None,
) -> ValidationSummary:
    """:func:`validate_in_child` with the limits of ``settings``, once per file and reader.

    The memory limit is ``settings.validate_memory_limit``, or :data:`BYTES_PER_FILE_BYTE`
    times the file's size when that is more. ``read_kwargs`` set to ``None`` are left out,
    so ``open_dataset(path)`` reuses the verdict of the upload that stored ``path``. Only
    accepted files are remembered; a refused one is read again (and refused again).
    """
    p = Path(path)
    kwargs = {k: v for k, v in (read_kwargs or {}).items() if v is not None}
    try:
        st = p.stat()
    except OSError:
        raise DatasetNotFound(f"{source_name or p.name}: no such file") from None
    options = json.dumps(kwargs, sort_keys=True, default=str)  # nested values (modalities)
    key = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, reader, options)
    with _verdicts_lock:
        known = _verdicts.get(key)
        if known is not None:
            _verdicts.move_to_end(key)
            return known
    summary = validate_in_child(
        p,
        read_kwargs=kwargs,
        memory_limit_bytes=max(settings.validate_memory_limit, BYTES_PER_FILE_BYTE * st.st_size),
        timeout_s=settings.validate_timeout,
        source_name=source_name or p.name,
        reader=reader,
        should_stop=should_stop,
    )
    with _verdicts_lock:
        _verdicts[key] = summary
        while len(_verdicts) > _VERDICTS_KEPT:
            _verdicts.popitem(last=False)
    return summary


def child_validator(
    settings: Settings, reader: str = DATASET_READER
) -> Callable[..., ValidationSummary]:
    """``validate(path, shown_name, should_stop=None)`` for uploads: :func:`validate_file`
    with ``settings``."""

    def validate(
        path: Path, shown: str, should_stop: Callable[[], bool] | None = None
    ) -> ValidationSummary:
        return validate_file(
            path, settings=settings, source_name=shown, reader=reader, should_stop=should_stop
        )

    return validate


# ====================================================================== parent side
def _verdict(
    rc: int, out: bytes, path: Path, name: str, request: Mapping[str, Any]
) -> ValidationSummary:
    """The summary of a finished child, or the one-line :class:`DatasetNotFound`."""
    if rc < 0:
        sig = -rc
        try:
            signame = signal.Signals(sig).name
        except ValueError:
            signame = "unknown signal"
        if sig == signal.SIGXCPU:
            msg = f"{name}: reading it took more than {request['cpu_seconds']} s of CPU; refused"
        elif sig == signal.SIGKILL:
            msg = (
                f"{name}: the reader was killed (signal {sig}, {signame}), most likely for "
                "using too much memory; refused"
            )
        else:
            msg = (
                f"{name}: the reader crashed (signal {sig}, {signame}); the file is "
                "malformed; refused"
            )
        raise DatasetNotFound(msg)
    try:
        answer = json.loads(out.decode("utf-8"))
        kind = answer["kind"]
    except (ValueError, KeyError, TypeError):
        msg = f"{name}: the reader stopped unexpectedly (exit status {rc}); refused"
        raise DatasetNotFound(msg) from None
    if kind == "ok":
        fields = answer["summary"]
        return ValidationSummary(
            source=name,
            n_cells=int(fields["n_cells"]),
            n_genes=int(fields["n_genes"]),
            n_proteins=int(fields["n_proteins"]),
            obs_columns=tuple(str(c) for c in fields["obs_columns"]),
            notices=tuple(str(n) for n in fields["notices"]),
            fingerprint=str(fields["fingerprint"]),
        )
    if kind == "memory":
        mb = request["memory_limit"] // 1024**2
        raise DatasetNotFound(f"{name}: reading it used more than {mb:,} MB of memory; refused")
    text = str(answer.get("message", ""))
    for shown in {str(path), str(path.resolve()), request["path"]}:
        text = text.replace(shown, name)
    text = " ".join(text.split("\n")).strip()[:2000]
    if kind == "data":
        raise DatasetNotFound(text)
    raise DatasetNotFound(f"{name}: not a readable CITE-seq file ({text})")


# ======================================================================= child side
def _child_main() -> None:
    """Entry of the child: read the JSON request, apply the limits, read, answer in JSON."""
    out = os.fdopen(os.dup(1), "w", encoding="utf-8")
    os.dup2(2, 1)  # whatever the reader prints goes to stderr, never into the answer
    sys.stdout = sys.stderr
    request = json.loads(sys.stdin.read())
    from dashboard.backend.lifetime import die_with_parent

    die_with_parent(int(request["parent_pid"]))
    module, _, func = str(request["reader"]).partition(":")
    read = getattr(importlib.import_module(module), func)  # heavy imports before the limits
    memory = int(request["memory_limit"])
    base = _limit(memory, int(request["cpu_seconds"]))
    try:
        data = read(request["path"], **request["read_kwargs"])
        answer = {"kind": "ok", "summary": _summarise(data)}
    except MemoryError:
        answer = {"kind": "memory"}
    except Exception as err:  # the parent turns it into one line
        # C code (an HDF5 filter) reports a failed allocation as an ordinary error: one
        # that is not our own refusal, after reading came near the limit, is memory
        near = _peak_bytes() >= base + memory // 2
        answer = _failure(err, near_limit=near)
    out.write(json.dumps(answer))
    out.flush()
    os._exit(0)


def _limit(memory: int, cpu_seconds: int) -> int:
    """Cap the address space at what is mapped now plus ``memory``, and the CPU time.

    Returns the bytes mapped before (0 where ``/proc`` is unavailable).
    """
    mapped = 0
    with contextlib.suppress(OSError, ValueError):
        mapped = int(Path("/proc/self/statm").read_text().split()[0]) * os.sysconf("SC_PAGE_SIZE")
        cap = mapped + memory
        _soft, hard = resource.getrlimit(resource.RLIMIT_AS)
        if hard != resource.RLIM_INFINITY:
            cap = min(cap, hard)
        resource.setrlimit(resource.RLIMIT_AS, (cap, hard))
    with contextlib.suppress(OSError, ValueError):
        _soft, hard = resource.getrlimit(resource.RLIMIT_CPU)
        soft = cpu_seconds if hard == resource.RLIM_INFINITY else min(cpu_seconds, hard)
        resource.setrlimit(resource.RLIMIT_CPU, (soft, hard))
    return mapped


def _peak_bytes() -> int:
    """Peak address space of this process (``VmPeak``), 0 if unknown."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmPeak:"):
                return int(line.split()[1]) * 1024
    return 0


def _summarise(data: Any) -> dict[str, Any]:
    return {
        "n_cells": int(data.n_cells),
        "n_genes": int(data.n_genes),
        "n_proteins": int(data.n_proteins),
        "obs_columns": [str(c) for c in data.obs.columns],
        "notices": [str(n) for n in data.notices],
        "fingerprint": str(data.fingerprint()),
    }


def _failure(err: BaseException, *, near_limit: bool = False) -> dict[str, Any]:
    """``{"kind": "data"|"memory"|"error", "message": ...}`` for a failed read.

    ``near_limit``: reading came near the memory limit, so an error from outside our own
    checks (an ``OSError`` wrapped by the reader) counts as running out of memory.
    """
    chain: list[BaseException] = []
    cur: BaseException | None = err
    while cur is not None and len(chain) < 10:
        chain.append(cur)
        cur = cur.__cause__ or cur.__context__
    # the reader's refusals; model.errors is not imported here (under the limit): a reader
    # that never imported it cannot have raised its error
    errors = sys.modules.get("model.errors")
    ours = (BackendError, getattr(errors, "CiteSeqDataError", BackendError))
    if any(isinstance(e, MemoryError) for e in chain):
        return {"kind": "memory"}
    if near_limit and any(not isinstance(e, ours) for e in chain):
        return {"kind": "memory"}
    if isinstance(err, ours):
        return {"kind": "data", "message": str(err)}
    return {"kind": "error", "message": f"{type(err).__name__}: {err}"}


if __name__ == "__main__":
    _child_main()
