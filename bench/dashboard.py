"""Benchmark the dashboard's Explore callbacks and its start-up, at 7k and 70k cells.

Data: the embedded PBMC data (6855 cells x 4000 genes x 14 proteins) as it is, and the same
cells resampled 10x (68,550 cells), copies after the first as technical replicates (every
count redrawn from a Poisson with that mean), so every cell is distinct and the model really
runs on 68,550 cells. A size well below 6855 (e.g. ``--sizes 1500``, for a
quick check) is a random subset of the real cells. Resampled files are written once under
``--cache-dir`` and reused.

Part 1, callbacks, over Flask's test client: each update is a POST to
``/_dash-update-component`` with the body the browser sends, so the time includes Dash's
dispatch, the callback, JSON serialisation and gzip (what a browser waits for, less the
network). For each update: median and p95 server time over ``--repeats`` calls (a different
gene, protein or selection each call, after one untimed first call, reported apart), and the
response size as JSON and as gzip (the bytes on the wire). Recolours (``recolor``: a marker
``Patch`` of both views) are compared with sending both full figures (``build_umap`` +
``build_linked`` with the same colouring); the selection update (``highlight``: a
``selectedpoints`` patch of both views, for a lasso of 10% of the cells drawn in the UMAP) is
compared with both full figures rebuilt with that selection. The other two callbacks a
selection triggers (``selection_info``, ``update_url_query``) are timed too. These use a
results cache kept under ``--cache-dir``, prepared once (later runs reuse it). At 70k cells
UMAP by default is *not* run: the 7k layout is resampled with the cells and jittered
(``--umap-70k jitter``; ``compute`` runs umap-learn once and caches it).

Part 2, start-up, each in a fresh Python process (like restarting the server): cold start
(empty cache folder: ``bootstrap`` until its preparation job is done: read data, load model,
latent, UMAP, clusters, denoised values, cell types) and warm start (a second process on the
same cache folder). A start that runs past ``--start-timeout`` is killed and reported as
skipped. Background warming (foreground probability, DE) is off, as it runs after ready.

Usage: ``python bench/dashboard.py [--sizes 7000 70000] [--repeats 30] [--cache-dir DIR]``;
results go to ``bench/out/dashboard.json``. Run it on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from _bench import DEFAULT_DATA, DEFAULT_MODEL, DEFAULT_OUT, ROOT, reported, saving

DEFAULT_CACHE = ROOT / "bench" / "out" / "dashboard-cache"
UPDATE_URL = "/_dash-update-component"
SEED = 0
UMAP_JITTER = 0.02  # std of the UMAP jitter, as a fraction of the layout's std per axis
GENES = ["CD3E", "MS4A1", "CD14", "LYZ", "NKG7", "GNLY", "CD8A", "FCGR3A", "IL7R", "CST3"]


class BenchError(RuntimeError):
    """A problem the benchmark cannot work around (one readable line)."""


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    """Seconds and result of ``fn()``."""
    t0 = time.perf_counter()
    value = fn()
    return time.perf_counter() - t0, value


def summary(seconds: list[float]) -> dict[str, float]:
    """Median, p95, min and max in milliseconds."""
    ms = np.asarray(seconds) * 1e3
    return {
        "median_ms": float(np.median(ms)),
        "p95_ms": float(np.percentile(ms, 95)),
        "min_ms": float(ms.min()),
        "max_ms": float(ms.max()),
        "n": len(ms),
    }


# =============================================================================== data
def dataset_for_size(size: int, base: Path, cache_dir: Path) -> tuple[Path, str]:
    """The h5ad file to use for ``size`` cells and how it was made.

    About the real size: the real file. Larger: the real cells ``round(size / n)`` times,
    copies after the first Poisson-redrawn. Well below: a random subset.
    """

    n = n_obs(base)
    if 0.75 * n <= size < 1.5 * n:
        return base, f"real data ({n} cells)"
    folder = cache_dir / "data"
    folder.mkdir(parents=True, exist_ok=True)
    if size < n:
        path = folder / f"{base.stem}_subset{size}_seed{SEED}.h5ad"
        how = f"random subset of {size} of the {n} real cells"
    else:
        factor = round(size / n)
        path = folder / f"{base.stem}_x{factor}_poisson_seed{SEED}.h5ad"
        how = (
            f"real cells x{factor} ({factor * n} cells), copies 2..{factor} as technical "
            "replicates (every count redrawn from a Poisson with that mean)"
        )
    if path.is_file():
        try:
            n_obs(path)
            return path, how
        except Exception as err:  # unreadable (half-written): rebuild it
            print(f"rebuilding {path} ({type(err).__name__}: {err})", flush=True)
    t, _ = timed(lambda: write_resampled(base, path, size))
    print(f"wrote {path.name} in {t:.1f}s", flush=True)
    return path, how


def n_obs(path: Path) -> int:
    """Cells in an h5ad file (read backed, closed again)."""
    import anndata as ad

    adata = ad.read_h5ad(path, backed="r")
    try:
        return int(adata.n_obs)
    finally:
        adata.file.close()


def resample_index(n: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """Source cell of each output cell (see :func:`dataset_for_size`)."""
    if size < n:
        return np.sort(rng.choice(n, size=size, replace=False))
    return np.tile(np.arange(n), max(1, round(size / n)))


def write_resampled(base: Path, path: Path, size: int) -> None:
    """Write the resampled (or subset) dataset of ``size`` cells to ``path`` atomically."""
    import anndata as ad
    import pandas as pd
    import scipy.sparse as sp

    adata = ad.read_h5ad(base)
    rng = np.random.default_rng(SEED)
    idx = resample_index(adata.n_obs, size, rng)
    copy = np.arange(len(idx)) // adata.n_obs  # 0 for the first copy (kept as is)
    rna = sp.csr_matrix(adata.X)[idx].astype(np.float32)
    prot_frame = adata.obsm["protein_expression"]
    prot = np.asarray(prot_frame, dtype=np.float32)[idx]
    if size >= adata.n_obs:
        # copies 2.. are technical replicates: each count redrawn from Poisson(count), so
        # no two cells are identical (near-duplicates would give Leiden thousands of
        # two-cell clusters, which no real dataset has)
        row_of_entry = np.repeat(np.arange(rna.shape[0]), np.diff(rna.indptr))
        redraw = copy[row_of_entry] > 0
        rna.data[redraw] = rng.poisson(rna.data[redraw]).astype(np.float32)
        rna.eliminate_zeros()
        later = copy > 0
        prot[later] = rng.poisson(prot[later]).astype(np.float32)
    names = pd.Index(
        [f"{c}-r{k}" if k else str(c) for c, k in zip(adata.obs_names[idx], copy, strict=True)]
    )
    obs = adata.obs.iloc[idx].copy()
    obs.index = names
    obs["source_cell"] = np.asarray(adata.obs_names[idx], dtype=str)
    out = ad.AnnData(
        X=rna,
        obs=obs,
        var=adata.var.copy(),
        obsm={
            "protein_expression": pd.DataFrame(
                prot, index=names, columns=[str(c) for c in prot_frame.columns]
            )
        },
        uns={"source": f"{base.name} resampled to {len(idx)} cells (bench/dashboard.py)"},
    )
    tmp = path.with_suffix(".tmp.h5ad")
    out.write_h5ad(tmp)
    tmp.replace(path)


# ============================================================================ prepare
def real_results(args: argparse.Namespace) -> tuple[Any, Any]:
    """UMAP frame and Leiden clusters of the real data (from its results cache)."""
    from dashboard.backend.service import AnalysisService
    from dashboard.backend.settings import Settings

    svc = AnalysisService(Settings(cache_dir=results_dir(args.cache_dir, args.data)))
    try:
        pair = svc.load_model(svc.open_dataset(args.data, batch_key="batch"), args.model)
        return svc.umap(pair), svc.clusters(pair)  # cached after the real-size run
    finally:
        svc.close()


def source_cells(data_path: Path) -> np.ndarray:
    """The real cell each cell of a resampled file was copied from."""
    import anndata as ad

    adata = ad.read_h5ad(data_path, backed="r")
    try:
        return adata.obs["source_cell"].astype(str).to_numpy()
    finally:
        adata.file.close()


def seed_result(service: Any, key: str, value: Any, call: Callable[[], Any], what: str) -> None:
    """Store ``value`` under ``key`` and check that the service then reads it."""
    service.cache.set(key, value)
    before = service.cache.stats.computed
    call()
    if service.cache.stats.computed != before:
        msg = f"seeding the {what} failed: the service computed its own (cache key changed?)"
        raise BenchError(msg)


def seed_large(args: argparse.Namespace, service: Any, pair: Any, data_path: Path) -> dict:
    """For resampled data: UMAP from the real layout (``--umap-70k jitter``), and Leiden
    clusters copied from the real cells where the service cannot compute them. Returns
    notes (kept next to the cache, so later runs still say how the cache was filled)."""
    import pandas as pd

    notes_file = results_dir(args.cache_dir, data_path) / "bench-notes.json"
    notes = json.loads(notes_file.read_text()) if notes_file.is_file() else {}
    s = service.settings
    src = source_cells(data_path)
    names = service.dataset(pair).obs_names
    umap_key = service.key(
        "umap",
        pair,
        {
            "n_neighbors": int(s.umap_n_neighbors),
            "min_dist": float(s.umap_min_dist),
            "seed": int(s.seed),
        },
    )
    if args.umap_70k == "jitter" and umap_key not in service.cache:
        base_xy, _ = real_results(args)
        xy = base_xy.loc[src].to_numpy(dtype=np.float32)
        rng = np.random.default_rng(SEED + 1)
        xy = xy + rng.normal(size=xy.shape).astype(np.float32) * (UMAP_JITTER * xy.std(axis=0))
        frame = pd.DataFrame(xy, index=names, columns=["UMAP1", "UMAP2"])
        seed_result(service, umap_key, frame, lambda: service.umap(pair), "UMAP")
        notes["umap"] = (
            "UMAP not computed: the real layout resampled with the cells, jittered by "
            f"{UMAP_JITTER:g} std"
        )
    elif umap_key not in service.cache:
        print("  computing the UMAP (umap-learn, once; cached)...", flush=True)
        t, _ = timed(lambda: service.umap(pair))
        notes["umap"] = f"UMAP computed by umap-learn ({t:.0f}s, once)"
    notes.setdefault("umap", "UMAP read from the bench cache (filled by an earlier run)")
    clusters_key = service.key(
        "clusters",
        pair,
        {
            "resolution": float(s.leiden_resolution),
            "n_neighbors": int(s.n_neighbors),
            "seed": s.seed,
        },
    )
    if clusters_key not in service.cache:
        try:
            t, _ = timed(lambda: service.clusters(pair))
            notes["clusters"] = f"Leiden computed by the service ({t:.0f}s)"
        except Exception as err:  # the service's failure is the finding: report it
            _, base_clusters = real_results(args)
            copied = pd.Series(
                pd.Categorical(
                    base_clusters.loc[src].astype(str).to_numpy(),
                    categories=base_clusters.cat.categories,
                ),
                index=names,
                name=base_clusters.name,
            )
            seed_result(service, clusters_key, copied, lambda: service.clusters(pair), "clusters")
            notes["clusters"] = (
                f"Leiden FAILED at {len(names):,} cells ({type(err).__name__}: {err}); "
                "clusters copied from the real cells"
            )
            print(f"  {notes['clusters']}", flush=True)
    notes_file.write_text(json.dumps(notes, indent=2))
    return notes


def results_dir(cache_dir: Path, data_path: Path) -> Path:
    """Persistent results cache of one dataset (used by the callback part)."""
    return cache_dir / "results" / data_path.stem


def open_prepared(
    args: argparse.Namespace, data_path: Path, n_real: int
) -> tuple[Any, Any, Any, dict[str, Any]]:
    """Service, active state and pair over the persistent results cache, prepared."""
    from dashboard.backend.service import AnalysisService
    from dashboard.backend.settings import Settings
    from dashboard.views.state import ActiveState

    info: dict[str, Any] = {"results_cache": str(results_dir(args.cache_dir, data_path))}
    service = AnalysisService(Settings(cache_dir=results_dir(args.cache_dir, data_path)))
    try:
        dataset = service.open_dataset(data_path, batch_key="batch")
        pair = service.load_model(dataset, args.model)
        info["umap"] = "UMAP computed by the service (umap-learn)"
        if service.dataset(pair).n_cells > 1.5 * n_real:
            info.update(seed_large(args, service, pair, data_path))
        state = ActiveState(service, warm=False)
        t, job = timed(lambda: state.prepare(pair))
        t_wait, rec = timed(lambda: service.wait(job))
        if str(rec.status) != "done":
            msg = f"preparing {data_path.name} failed: {rec.error or rec.message}"
            raise BenchError(msg)
        info["prepare_s"] = t + t_wait
        info["prepare_steps_s"] = service.job_result(job)
        t_fg, _ = timed(lambda: service.foreground_probability(pair))
        info["foreground_s"] = t_fg  # done by the warm job in the real server
    except BaseException:
        service.close()
        raise
    return service, state, pair, info


# ========================================================================== Dash client
class DashClient:
    """POSTs callback requests as the renderer does, through Flask's test client."""

    def __init__(self, service: Any, state: Any) -> None:
        from dashboard.app import create_app
        from dashboard.testing import callbacks_by_name

        self.app = create_app(service, state=state)
        self.client = self.app.server.test_client()
        r = self.client.get("/_dash-dependencies")  # also registers the page callbacks
        if r.status_code != 200:
            msg = f"GET /_dash-dependencies answered {r.status_code}"
            raise BenchError(msg)
        self.callbacks = callbacks_by_name(self.app.callback_map)  # ambiguous: refused

    def body(self, name: str, values: dict[str, Any], changed: list[str]) -> bytes:
        """JSON request body for callback ``name``; ``values`` maps ``"id.prop"`` to values."""
        from dashboard.testing import callback_request

        return callback_request(self.callbacks, name, values, changed, error=BenchError)

    def post(self, body: bytes) -> tuple[float, int, int, dict[str, Any]]:
        """Seconds, JSON bytes, bytes on the wire (gzip) and the decoded response."""
        from dashboard import ids

        t0 = time.perf_counter()
        r = self.client.post(
            UPDATE_URL,
            data=body,
            headers={"Content-Type": "application/json", "Accept-Encoding": "gzip"},
        )
        wire = r.get_data()
        seconds = time.perf_counter() - t0
        if r.status_code != 200:
            msg = f"callback answered HTTP {r.status_code}: {wire[:300]!r}"
            raise BenchError(msg)
        raw = gzip.decompress(wire) if r.headers.get("Content-Encoding") == "gzip" else wire
        decoded = json.loads(raw)
        alert = (decoded.get("sideUpdate") or {}).get(ids.ALERT)
        if alert:
            msg = f"callback failed, the app showed an alert: {json.dumps(alert)[:400]}"
            raise BenchError(msg)
        return seconds, len(raw), len(wire), decoded


def bench_update(
    client: DashClient, name: str, bodies: list[bytes], check: Callable[[dict], None]
) -> dict[str, Any]:
    """One untimed-in-the-stats first call, then one timed call per body."""
    first_s, raw, wire, decoded = client.post(bodies[0])
    check(decoded)
    seconds, raws, wires = [], [], []
    for body in bodies[1:]:
        s, raw, wire, _ = client.post(body)
        seconds.append(s)
        raws.append(raw)
        wires.append(wire)
    return {
        "callback": name,
        "first_ms": first_s * 1e3,
        **summary(seconds),
        "request_bytes": int(np.median([len(b) for b in bodies])),
        "response_bytes": int(np.median(raws)),
        "response_gzip_bytes": int(np.median(wires)),
    }


def is_patch(decoded: dict) -> None:
    """Every figure output of the response must be a Dash ``Patch``."""
    for comp, props in decoded.get("response", {}).items():
        fig = props.get("figure")
        if fig is not None and not (isinstance(fig, dict) and fig.get("__dash_patch_update")):
            msg = f"{comp}.figure is not a Patch (full figure sent?)"
            raise BenchError(msg)


def is_figure(decoded: dict) -> None:
    fig = next(iter(decoded.get("response", {}).values()), {}).get("figure")
    if not isinstance(fig, dict) or "data" not in fig:
        msg = "expected a full figure in the response"
        raise BenchError(msg)


def no_check(_decoded: dict) -> None:
    return None


def full_figures(
    client: DashClient,
    feature: str,
    layer: str,
    selection: dict | None,
    x: str,
    y: str,
    repeats: int = 1,
) -> tuple[float, int, int]:
    """Median seconds, JSON bytes and gzip bytes of sending both Explore figures in full."""
    from dashboard import ids

    common = {
        f"{ids.EXPLORE_COLOR}.value": feature,
        f"{ids.EXPLORE_LAYER}.value": layer,
        f"{ids.SELECTION_STORE}.data": selection,
        f"{ids.PAGE_STATE}.data": {},
    }
    umap = client.body(
        "build_umap",
        {**common, f"{ids.EXPLORE_UMAP}.id": ids.EXPLORE_UMAP},
        [f"{ids.EXPLORE_UMAP}.id"],
    )
    linked = client.body(
        "build_linked",
        {
            **common,
            f"{ids.EXPLORE_LINKED_KIND}.value": "proteins",
            f"{ids.EXPLORE_LINKED_X}.value": x,
            f"{ids.EXPLORE_LINKED_Y}.value": y,
            f"{ids.EXPLORE_LINKED_LAYER}.value": "denoised",
        },
        [f"{ids.EXPLORE_LINKED_KIND}.value"],
    )
    seconds = []
    for _ in range(max(1, repeats)):
        s1, r1, w1, d1 = client.post(umap)
        s2, r2, w2, d2 = client.post(linked)
        is_figure(d1)
        is_figure(d2)
        seconds.append(s1 + s2)
    return float(np.median(seconds)), r1 + r2, w1 + w2


def lasso_selections(xy: np.ndarray, fraction: float, count: int) -> list[list[int]]:
    """``count`` selections of ``fraction`` of the cells: the cells nearest to a random
    cell in the UMAP (what a lasso around a region picks)."""
    rng = np.random.default_rng(SEED + 2)
    k = max(1, round(fraction * len(xy)))
    out = []
    for centre in rng.choice(len(xy), size=count, replace=count > len(xy)):
        d = ((xy - xy[centre]) ** 2).sum(axis=1)
        out.append(sorted(int(i) for i in np.argpartition(d, k - 1)[:k]))
    return out


def callback_part(args: argparse.Namespace, data_path: Path, n_real: int) -> dict[str, Any]:
    """Recolour and selection updates through the HTTP path (see the module docstring)."""
    from dashboard import ids
    from dashboard.layout import version_token
    from dashboard.views.features import default_protein_pair, feature_catalog

    service, state, pair, info = open_prepared(args, data_path, n_real)
    try:
        client = DashClient(service, state)
        data = service.dataset(pair)
        n = data.n_cells
        catalog = feature_catalog(service, pair)
        genes = [g for g in GENES if g in set(catalog.genes)] or list(catalog.genes[:10])
        proteins = list(catalog.proteins)
        x, y = default_protein_pair(catalog)
        reps = args.repeats + 1  # first call reported apart
        n_full = min(args.repeats, 5)
        full_figures(client, "obs:cell_type", "raw", None, x, y)  # hover text etc. (memoised)
        cases = {
            "gene raw": ([f"gene:{g}" for g in genes], "raw"),
            "gene denoised": ([f"gene:{g}" for g in genes], "denoised"),
            "protein denoised": ([f"protein:{p}" for p in proteins], "denoised"),
            "protein foreground": ([f"protein:{p}" for p in proteins], "foreground"),
            "cell type (categorical)": (["obs:cell_type"], "raw"),
        }
        rows = []
        for label, (pool, layer) in cases.items():
            bodies = []
            for i in range(reps):
                feature = pool[i % len(pool)]
                before = (
                    {"feature": f"gene:{genes[0]}", "layer": "raw"}
                    if feature.startswith("obs:")
                    else {"feature": "obs:cell_type", "layer": "raw"}
                )
                bodies.append(
                    client.body(
                        "recolor",
                        {
                            f"{ids.EXPLORE_COLOR}.value": feature,
                            f"{ids.EXPLORE_LAYER}.value": layer,
                            f"{ids.COLOR_STORE}.data": before,
                        },
                        [f"{ids.EXPLORE_COLOR}.value"],
                    )
                )
            row = bench_update(client, "recolor", bodies, is_patch)
            full_s, full_raw, full_wire = full_figures(client, pool[0], layer, None, x, y, n_full)
            row.update(
                update=f"recolour: {label}",
                full_ms=full_s * 1e3,
                full_bytes=full_raw,
                full_gzip_bytes=full_wire,
            )
            rows.append(row)
            print(f"  {n} cells  {row['update']}: {row['median_ms']:.1f} ms", flush=True)

        xy = service.umap(pair)[["UMAP1", "UMAP2"]].to_numpy(dtype=np.float64)
        selections = [
            {"cells": cells, "source": ids.EXPLORE_UMAP, "dataset": pair.dataset.id}
            for cells in lasso_selections(xy, args.selection_fraction, reps)
        ]
        token = version_token(state.status().to_dict())
        color = {"feature": f"gene:{genes[0]}", "layer": "raw"}
        sel_key = f"{ids.SELECTION_STORE}.data"
        for name, extra, check in (
            ("highlight", {}, is_patch),
            ("selection_info", {}, no_check),
            (
                "update_url_query",
                {f"{ids.COLOR_STORE}.data": color, f"{ids.MODEL_VERSION_STORE}.data": token},
                no_check,
            ),
        ):
            bodies = [client.body(name, {sel_key: s, **extra}, [sel_key]) for s in selections]
            row = bench_update(client, name, bodies, check)
            row["update"] = f"selection {100 * args.selection_fraction:g}%: {name}"
            if name == "highlight":
                full_s, full_raw, full_wire = full_figures(
                    client, color["feature"], "raw", selections[0], x, y, n_full
                )
                row.update(full_ms=full_s * 1e3, full_bytes=full_raw, full_gzip_bytes=full_wire)
            rows.append(row)
            print(f"  {n} cells  {row['update']}: {row['median_ms']:.1f} ms", flush=True)
        return {
            "n_cells": n,
            "n_genes": data.n_genes,
            "n_proteins": data.n_proteins,
            "selected_cells": len(selections[0]["cells"]),
            **info,
            "updates": rows,
        }
    finally:
        service.close()


# ============================================================================ start-up
def start_worker(data: str, model: str, cache: str) -> int:
    """One server start in this (fresh) process; prints ``RESULT {json}``."""
    t0 = time.perf_counter()
    from dashboard.backend.settings import Settings
    from dashboard.server import bootstrap, make_app

    t_import = time.perf_counter() - t0
    t1 = time.perf_counter()
    boot = bootstrap(data, model, settings=Settings(cache_dir=Path(cache)), warm=False, out=None)
    if boot.job is None:
        print(f"RESULT {json.dumps({'error': boot.message})}", flush=True)
        return 1
    t_boot = time.perf_counter() - t1
    t_app, _ = timed(lambda: make_app(boot))  # the server is up from here on
    t_wait, rec = timed(lambda: boot.service.wait(boot.job))
    ok = str(rec.status) == "done"
    steps = boot.service.job_result(boot.job) if ok else {}
    res = {
        "imports_s": t_import,
        "data_and_model_s": t_boot,
        "create_app_s": t_app,
        "prepare_wait_s": t_wait,
        "ready_s": time.perf_counter() - t0,
        "steps_s": steps,
        "computed": boot.service.cache.stats.computed,
        "error": None if ok else (rec.error or rec.message or str(rec.status)),
    }
    boot.service.close()
    print(f"RESULT {json.dumps(res)}", flush=True)
    return 0 if ok else 1


def run_start(data: Path, model: Path, cache: Path, timeout: float) -> dict[str, Any]:
    """Run :func:`start_worker` in a subprocess; wall seconds from launch to ready."""
    cmd = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--start-worker",
        str(data),
        str(model),
        str(cache),
    ]
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # our own child's process group
        proc.communicate()
        return {"skipped": f"not ready within --start-timeout {timeout:g}s (killed)"}
    wall = time.perf_counter() - t0
    lines = [ln for ln in out.splitlines() if ln.startswith("RESULT ")]
    if not lines:
        return {"error": f"worker exited {proc.returncode}: {err.strip()[-600:]}"}
    res = json.loads(lines[-1][len("RESULT ") :])
    res["process_wall_s"] = wall
    return res


def start_part(
    args: argparse.Namespace, data_path: Path, n_cells: int, measured: list[tuple[int, float]]
) -> dict[str, Any]:
    """Cold then warm start on a fresh cache folder.

    A cold start that a smaller size's cold start projects (linearly in cells) past
    ``--start-timeout`` is skipped (``--force-start`` runs it anyway, until the timeout).
    """
    res: dict[str, Any] = {}
    smaller = [(n, t) for n, t in measured if n < n_cells]
    if smaller and not args.force_start:
        n0, t0 = max(smaller)
        projected = t0 * n_cells / n0
        if projected > args.start_timeout:
            res["cold"] = {
                "skipped": f"projected ~{projected:.0f}s from the {n0:,}-cell cold start "
                f"({t0:.0f}s) > --start-timeout {args.start_timeout:g}s; --force-start "
                "runs it"
            }
            return res
    cache = args.cache_dir / "start" / data_path.stem
    shutil.rmtree(cache, ignore_errors=True)
    cache.mkdir(parents=True)
    res["cache_dir"] = str(cache)
    print(f"  cold start ({data_path.name})...", flush=True)
    res["cold"] = run_start(data_path, args.model, cache, args.start_timeout)
    if "process_wall_s" in res["cold"] and not res["cold"].get("error"):
        measured.append((n_cells, res["cold"]["process_wall_s"]))
        print(f"  warm start ({data_path.name})...", flush=True)
        res["warm"] = run_start(data_path, args.model, cache, args.start_timeout)
    if not args.keep_start_cache:
        shutil.rmtree(cache, ignore_errors=True)
    return res


def warm_on_prepared(args: argparse.Namespace, data_path: Path) -> dict[str, Any]:
    """Warm start on the callback part's prepared results cache (when no cold start ran)."""
    cache = results_dir(args.cache_dir, data_path)
    print(f"  warm start on the prepared cache ({data_path.name})...", flush=True)
    res = run_start(data_path, args.model, cache, args.start_timeout)
    res["note"] = "on the callback part's cache"
    return res


def release_app() -> None:
    """Drop the process-wide app state and service (and their datasets and results)."""
    import gc

    from dashboard import backend
    from dashboard.views.state import set_state

    set_state(None)
    backend.set_service(None)
    gc.collect()


# ============================================================================== report
def kb(n: float) -> str:
    return f"{n / 1024:,.1f}"


def print_report(res: dict[str, Any]) -> None:
    print(
        f"\nDashboard benchmark: {res['cpu_count']} CPUs, torch threads {res['torch_threads']}, "
        f"load average {res['load_before'][0]:.1f} before / {res['load_after'][0]:.1f} after"
    )
    print(
        "\nCallbacks (POST /_dash-update-component via Flask's test client: dispatch + "
        "callback + JSON + gzip), ms; request = JSON body the browser uploads; response KB as "
        "JSON / gzip on the wire; 'full' = both figures sent whole instead of the patch"
    )
    print(
        "| cells | update | median ms | p95 ms | first ms | request KB | response KB | gzip KB "
        "| full ms | full KB | full gzip KB | gzip saved |\n"
        "| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    )
    for size in res["sizes"]:
        cb = size.get("callbacks")
        if not cb:
            continue
        for r in cb["updates"]:
            full = (
                (
                    f"{r['full_ms']:.0f} | {kb(r['full_bytes'])} | {kb(r['full_gzip_bytes'])} | "
                    f"{r['full_gzip_bytes'] / max(r['response_gzip_bytes'], 1):.0f}x"
                )
                if "full_bytes" in r
                else "| | |"
            )
            print(
                f"| {cb['n_cells']:,} | {r['update']} | {r['median_ms']:.1f} | {r['p95_ms']:.1f} "
                f"| {r['first_ms']:.0f} | {kb(r['request_bytes'])} | {kb(r['response_bytes'])} | "
                f"{kb(r['response_gzip_bytes'])} | {full} |"
            )
    for size in res["sizes"]:
        cb = size.get("callbacks")
        if cb:
            notes = "; ".join(cb[k] for k in ("umap", "clusters") if cb.get(k))
            print(
                f"({cb['n_cells']:,} cells: {notes}; selection = {cb['selected_cells']:,} "
                f"cells; repeats {cb['updates'][0]['n']})"
            )
    print(
        "\nStart-up (fresh process each; cold = empty cache folder; ready = bootstrap's "
        "preparation job done), seconds"
    )
    print(
        "| cells | start | ready (wall) | process start + imports | data + model "
        "| create app | preparing | results computed |\n"
        "| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |"
    )
    for size in res["sizes"]:
        st = size.get("start")
        if not st:
            continue
        for which in ("cold", "warm"):
            r = st.get(which, {})
            label = f"{size['n_cells']:,}"
            kind = f"{which} ({r['note']})" if r.get("note") else which
            if "process_wall_s" not in r or r.get("error"):
                why = r.get("skipped") or r.get("error") or "not run"
                print(f"| {label} | {kind} | skipped: {why} | | | | | |")
                continue
            rest = r["data_and_model_s"] + r["create_app_s"] + r["prepare_wait_s"]
            print(
                f"| {label} | {kind} | {r['process_wall_s']:.1f} | "
                f"{r['process_wall_s'] - rest:.1f} | {r['data_and_model_s']:.1f} | "
                f"{r['create_app_s']:.1f} | {r['prepare_wait_s']:.1f} | {r['computed']} |"
            )
    for size in res["sizes"]:
        steps = (size.get("start") or {}).get("cold", {}).get("steps_s")
        if steps:
            parts = ", ".join(f"{k} {v:.1f}" for k, v in steps.items())
            print(f"(cold steps at {size['n_cells']:,} cells, s: {parts})")


# ================================================================================ main
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[7000, 70000])
    parser.add_argument("--repeats", type=int, default=30, help="timed calls per update")
    parser.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    parser.add_argument("--selection-fraction", type=float, default=0.1)
    parser.add_argument(
        "--umap-70k",
        choices=["jitter", "compute"],
        default="jitter",
        help="UMAP of resampled data for the callback part: the real layout jittered, or "
        "umap-learn once (cached in --cache-dir)",
    )
    parser.add_argument("--start-timeout", type=float, default=300.0, help="seconds per start")
    parser.add_argument(
        "--force-start",
        action="store_true",
        help="run a cold start even where a smaller one projects it past --start-timeout",
    )
    parser.add_argument("--skip-start", action="store_true")
    parser.add_argument("--skip-callbacks", action="store_true")
    parser.add_argument("--keep-start-cache", action="store_true")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--start-worker", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.start_worker:
        return start_worker(*args.start_worker)
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    if not 0 < args.selection_fraction <= 1:
        parser.error("--selection-fraction must be in (0, 1]")
    if not args.data.is_file():
        parser.error(f"--data {args.data}: no such file")
    if not (args.model / "model.pt").is_file():
        parser.error(f"--model {args.model}: no model.pt in that folder")
    args.data, args.model = args.data.resolve(), args.model.resolve()
    args.cache_dir = args.cache_dir.resolve()
    args.cache_dir.mkdir(parents=True, exist_ok=True)
    args.out.mkdir(parents=True, exist_ok=True)

    import torch

    n_real = n_obs(args.data)
    res: dict[str, Any] = {
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "python": platform.python_version(),
        "load_before": list(os.getloadavg()),
        "repeats": args.repeats,
        "sizes": [],
    }
    measured: list[tuple[int, float]] = []  # (cells, cold start seconds)
    out = args.out / "dashboard.json"
    with saving(res, out):
        try:
            for size in sorted(args.sizes):  # the real size first: 70k's UMAP seed needs it
                print(f"size {size}", flush=True)
                path, how = dataset_for_size(size, args.data, args.cache_dir)
                entry: dict[str, Any] = {"size": size, "data": str(path), "how": how}
                entry["n_cells"] = n_obs(path)
                res["sizes"].append(entry)
                if not args.skip_start:
                    entry["start"] = start_part(args, path, entry["n_cells"], measured)
                if not args.skip_callbacks:
                    entry["callbacks"] = callback_part(args, path, n_real)
                    release_app()
                start = entry.get("start")
                if start is not None and "warm" not in start and not args.skip_callbacks:
                    start["warm"] = warm_on_prepared(args, path)
        except BenchError as err:
            print(f"error: {err}", file=sys.stderr)
            return 1
    return reported(res, out, print_report)


if __name__ == "__main__":
    sys.exit(main())
