"""Opening a model folder as its registry describes it: how long each step takes.

For each folder (the seed-like scvi-hub MuData model in ``tests/data``; with ``../shared``,
the scvi-tools 1.4.2 PBMC 300 x 1000 AnnData model saved with its data) it times, on an
empty cache: locating the folder and reading the card, ``AnalysisService.open_model`` (read
the checkpoint, read the data with the registry's keys, check and attach), and the
start-up preparation to "ready" (``server.bootstrap``: latent, UMAP, clusters and their
names, denoised proteins). Prints a markdown table.

    python bench/open_model.py
"""

from __future__ import annotations

import platform
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
# bench/dashboard.py would shadow the ``dashboard`` package: import from the repository root
sys.path[:] = [str(BENCH.parent), *(p for p in sys.path if Path(p or ".").resolve() != BENCH)]

from dashboard.backend.card import hub_card_for  # noqa: E402
from dashboard.backend.service import AnalysisService  # noqa: E402
from dashboard.backend.settings import Settings  # noqa: E402
from dashboard.server import bootstrap  # noqa: E402
from model.model_folder import locate_model  # noqa: E402

ROOT = BENCH.parent
FOLDERS = {
    "seed-like (MuData, 17 batches, 111 proteins)": ROOT
    / "tests/data/scvi_tools_1.4.2_mudata_seedlike_800",
    "PBMC 300 x 1000 (AnnData, 2 batches, 14 proteins)": ROOT.parent
    / "shared/reference/checkpoints/scvi_tools_1.4.2_pbmc300x1000",
}


def measure(folder: Path) -> dict[str, float | str]:
    """Seconds of each step for one folder, each on its own empty cache."""
    t = time.perf_counter()
    located = locate_model(folder)
    card = hub_card_for(str(folder))
    t_locate = time.perf_counter() - t
    with tempfile.TemporaryDirectory() as cache:
        service = AnalysisService(Settings(cache_dir=Path(cache)))
        t = time.perf_counter()
        pair = service.open_model(folder)
        t_open = time.perf_counter() - t
        data = service.dataset(pair)
        service.close()
    with tempfile.TemporaryDirectory() as cache:
        t = time.perf_counter()
        boot = bootstrap(None, folder, settings=Settings(cache_dir=Path(cache)), out=None)
        info = boot.service.wait(boot.job, timeout=1200)
        t_ready = time.perf_counter() - t
        boot.service.close()
    return {
        "cells": f"{data.n_cells:,}",
        "read with": pair.dataset.options.describe(),
        "layout": located.layout + (", card" if card is not None else ""),
        "locate + card": t_locate,
        "open_model": t_open,
        "to ready": t_ready if str(info.status) == "done" else float("nan"),
    }


def main() -> int:
    cpu = platform.processor() or platform.machine()
    print(f"machine: {cpu}, Python {sys.version.split()[0]}")
    print()
    print("| model folder | cells | read with (from the registry) | layout | locate + card s "
          "| open_model s | bootstrap to ready s |")  # fmt: skip
    print("|---|---:|---|---|---:|---:|---:|")
    for name, folder in FOLDERS.items():
        if not folder.is_dir():
            print(f"| {name} | – | absent ({folder.name}) | | | | |")
            continue
        r = measure(folder)
        print(
            f"| {name} | {r['cells']} | {r['read with']} | {r['layout']} | "
            f"{r['locate + card']:.3f} | {r['open_model']:.2f} | {r['to ready']:.1f} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
