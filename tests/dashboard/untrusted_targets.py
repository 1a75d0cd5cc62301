"""Readers the validation child runs in tests/dashboard/test_untrusted.py (imported by
module name in the child, via PYTHONPATH): they crash, balloon, hang or refuse on purpose."""

from __future__ import annotations

import os
import signal
import time
from types import SimpleNamespace
from typing import Any

import pandas as pd

from dashboard.backend.errors import DatasetNotFound


def crash(path: str, **_kwargs: Any) -> None:
    """Die of a segmentation fault, as a C extension reading a malformed file would."""
    os.kill(os.getpid(), signal.SIGSEGV)


def balloon(path: str, **_kwargs: Any) -> None:
    """Allocate far more than any test limit."""
    blocks = [bytearray(256 * 1024**2) for _ in range(64)]
    del blocks


def hang(path: str, **_kwargs: Any) -> None:
    """Never finish."""
    time.sleep(60)


def refuse(path: str, **_kwargs: Any) -> None:
    """Refuse the file naming it by path, as the readers do (without importing the model:
    children of these targets start in a fraction of a second)."""
    msg = f"{path}: X: CSR indptr decreases at row 17\nsecond line"
    raise DatasetNotFound(msg)


def stub(path: str, **kwargs: Any) -> SimpleNamespace:
    """A tiny read result; ``kwargs`` become obs columns (to see what reached the child)."""
    return SimpleNamespace(
        n_cells=3,
        n_genes=2,
        n_proteins=1,
        obs=pd.DataFrame(columns=sorted(kwargs)),
        notices=("a note",),
        fingerprint=lambda: "f" * 64,
    )
