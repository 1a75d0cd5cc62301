"""What the benchmark scripts share: the repository's paths, the import path and the results file.

Imported first by each script (found because the script's folder, ``bench/``, is
``sys.path[0]``): it puts the repository root first on ``sys.path`` and takes ``bench/`` out,
as ``bench/dashboard.py`` would shadow the ``dashboard`` package.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path[:] = [str(ROOT), *(p for p in sys.path if Path(p or ".").resolve() != BENCH)]

DEFAULT_DATA = ROOT / "data" / "pbmc10k.h5ad"
DEFAULT_MODEL = ROOT / "data" / "models" / "pbmc10k"
DEFAULT_OUT = ROOT / "bench" / "out"


def write_results(res: dict[str, Any], path: Path) -> None:
    """Write ``res`` to ``path`` as indented JSON (values JSON lacks as their ``str``)."""
    path.write_text(json.dumps(res, indent=2, default=str))


@contextmanager
def saving(res: dict[str, Any], path: Path) -> Iterator[None]:
    """Write ``res`` to ``path`` when the block ends, however it ends, with the load
    averages then as ``res["load_after"]``."""
    try:
        yield
    finally:
        res["load_after"] = list(os.getloadavg())
        write_results(res, path)


def reported(res: dict[str, Any], path: Path, print_report: Callable[[Any], None]) -> int:
    """Print the report of ``res`` and where it was written; the exit status (0)."""
    print_report(res)
    print(f"\nwrote {path}")
    return 0
