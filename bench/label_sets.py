"""Time the label-set store (annotations) at 6,855, 72,042 and 1,000,000 cells: a copy of
the cell types, labelling a 10% selection, a rename, a merge, an undo, a cold read (a
new store over the folder: another process, a restarted server), a warm read (the parsed
file kept), the snapshot a job gets, a CSV export and import; with the size of the
workspace's file (sets plus the undo history) after those edits.

No model is needed: the store's cost depends on cells and categories only (labels are
drawn like PBMC types, 14 categories, Zipf-like sizes). Each size runs alone, one after
another, in a temporary folder.

Usage: ``python bench/label_sets.py [--sizes 6855 72042 1000000]``; results in
``bench/out/label_sets.json``.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

import _bench  # noqa: F401  (puts the repository first on sys.path)

from dashboard.backend.label_sets import LabelSets, labels_csv
from dashboard.backend.owner import acting_as
from dashboard.backend.refs import DatasetRef, ModelRef, Pair

OUT = Path(__file__).resolve().parent / "out" / "label_sets.json"


def _timed(fn) -> tuple[float, object]:
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def run(n: int, folder: Path) -> dict[str, float]:
    rng = np.random.default_rng(0)
    weights = 1 / np.arange(1, 15)
    codes = rng.choice(14, size=n, p=weights / weights.sum())
    obs = pd.Index([f"cell{i}" for i in range(n)])
    types = pd.Series(pd.Categorical.from_codes(codes, [f"type {i}" for i in range(14)]))
    pair = Pair(DatasetRef(fingerprint=f"{n:040d}"), ModelRef(fingerprint="m" * 40))
    store = LabelSets(folder)
    row: dict[str, float] = {"cells": n}
    with acting_as("bench"):
        row["copy types (s)"], _ = _timed(lambda: store.create(pair, n, "Lineage", labels=types))
        picked = rng.choice(n, size=n // 10, replace=False)
        row["label 10% (s)"], _ = _timed(
            lambda: store.label_cells(pair, n, "Lineage", picked, "picked")
        )
        row["rename (s)"], _ = _timed(
            lambda: store.rename_category(pair, n, "Lineage", "type 0", "CD14 monocytes")
        )
        row["merge 3 (s)"], _ = _timed(
            lambda: store.merge(pair, n, "Lineage", ["type 1", "type 2", "type 3"], "Lymphoid")
        )
        row["undo (s)"], _ = _timed(lambda: store.undo(pair, n))
        row["cold read (s)"], _ = _timed(lambda: LabelSets(folder).get(pair, n, "Lineage"))
        row["warm read (s)"], _ = _timed(lambda: store.get(pair, n, "Lineage"))
        row["snapshot (s)"], _ = _timed(lambda: store.snapshot_key(pair, n, "Lineage"))
        s = store.get(pair, n, "Lineage")
        row["export CSV (s)"], text = _timed(lambda: labels_csv(s, obs))
        row["import CSV (s)"], _ = _timed(
            lambda: store.import_csv(pair, obs, "Again", text.encode(), filename="x.csv")
        )
        row["file (MB)"] = store.path(pair).stat().st_size / 2**20
        row["CSV (MB)"] = len(text) / 2**20
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[6855, 72042, 1_000_000])
    args = parser.parse_args()
    rows = []
    for n in args.sizes:
        with tempfile.TemporaryDirectory() as tmp:
            rows.append(run(n, Path(tmp)))
    keys = list(rows[0])
    machine = platform.processor() or platform.machine()
    print(f"machine: {machine}, python {platform.python_version()}")
    print(" | ".join(keys))
    for r in rows:
        print(" | ".join(f"{r[k]:,.0f}" if k == "cells" else f"{r[k]:.3f}" for k in keys))
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
