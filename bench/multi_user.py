"""Two users on one ``serve``: each works in their own workspace, and results that are the
same are computed once.

The script trains a second model for 2 epochs on a subset of the embedded PBMC data, starts
``totalvi-explorer serve`` on 127.0.0.1 with two basic-auth users and an empty cache (the
embedded model is the server's default), then talks to it only over HTTP, as the browser
does (Dash callbacks):

1. Bob loads the 2-epoch model on the Model page while Alice keeps the embedded one; Alice's
   status and Model page never show Bob's job.
2. Both colour by a gene on Explore: each UMAP has their own model's cells and colour.
3. Alice's selection (kept on the server) is in her page and not in Bob's; Bob cannot read
   Alice's job by its id.
4. Bob opens Alice's share link (``pair=``): his workspace switches to her model, whose
   results the cache already holds: the UMAP is not computed a second time.

It prints a table and, as its last line, ``isolated: yes`` or ``isolated: no (<reason>)``.
``--quick`` uses a smaller subset for Bob (the run takes about 3 minutes on 2 cores).

    python bench/multi_user.py [--quick] [--keep DIR]
"""

from __future__ import annotations

import argparse
import base64
import json
import re
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _bench import DEFAULT_DATA as EMBEDDED_DATA
from _bench import DEFAULT_MODEL as EMBEDDED_MODEL

from dashboard import ids
from dashboard import testing_live as tl

GENE = "LYZ"


def make_bob_model(root: Path, n_cells: int) -> tuple[Path, Path, float]:
    """A subset of the embedded data and a model trained on it for 2 epochs (seconds)."""
    import anndata as ad
    import numpy as np

    from model import TotalVI, read_cite_seq

    t0 = time.perf_counter()
    full = ad.read_h5ad(EMBEDDED_DATA)
    keep = np.sort(np.random.default_rng(0).choice(full.n_obs, n_cells, replace=False))
    data = root / "data" / "bob_subset.h5ad"
    data.parent.mkdir(parents=True, exist_ok=True)
    full[keep].copy().write_h5ad(data)
    model = TotalVI(read_cite_seq(data, batch_key="batch"), seed=0)
    model.train(max_epochs=2, device="cpu", early_stopping=False)
    folder = root / "models" / "bob-2-epochs"
    model.save(folder)
    return data, folder, time.perf_counter() - t0


def umap(live: tl.Live, feature: str) -> tuple[int, str]:
    """Cells the user's Explore UMAP draws and its colour bar title."""
    values = {
        f"{ids.EXPLORE_UMAP}.id": ids.EXPLORE_UMAP,
        f"{ids.EXPLORE_COLOR}.value": feature,
        f"{ids.EXPLORE_LAYER}.value": "raw",
    }
    out = live.fire(f"{ids.EXPLORE_UMAP}.id", values)["response"]
    fig = out[ids.EXPLORE_UMAP]["figure"]
    n, title = 0, ""
    for trace in fig.get("data", []):
        x = trace.get("x")
        if isinstance(x, dict) and "bdata" in x:
            n += len(base64.b64decode(x["bdata"])) // 4
        elif isinstance(x, list):
            n += len(x)
        bar = (trace.get("marker") or {}).get("colorbar") or {}
        title = title or str((bar.get("title") or {}).get("text") or "").replace("<br>", " ")
    return n, title


def layout_store(live: tl.Live, store: str) -> Any:
    return tl.store_data(live.get("/_dash-layout").json(), store)


def wait_pair(live: tl.Live, not_pair: str | None, timeout: float = 900) -> tuple[str, float]:
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < timeout:
        pair, _ = live.status()
        if pair and pair != not_pair:
            return pair, time.perf_counter() - t0
        time.sleep(0.5)
    msg = f"{live.user}'s workspace never switched"
    raise TimeoutError(msg)


def ready_seconds(log: str, pair: str) -> list[dict[str, float]]:
    """Seconds per preparation step of each time ``pair`` became active (server log)."""
    out = []
    for m in re.finditer(rf"active pair {re.escape(pair)} ready \((\{{.*?\}})\)", log):
        out.append(json.loads(m.group(1).replace("'", '"')))
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="a smaller subset for Bob's model")
    p.add_argument("--keep", type=Path, help="folder to keep the run in (default: a temp dir)")
    args = p.parse_args(argv)
    root = args.keep or Path(tempfile.mkdtemp(prefix="multi-user-"))
    problems: list[str] = []
    rows: list[tuple[str, str]] = []

    def check(ok: bool, what: str) -> None:
        if not ok:
            problems.append(what)

    data, folder, train_s = make_bob_model(root, 1500 if args.quick else 3000)
    rows.append(("Bob's model trained (2 epochs)", f"{train_s:.1f} s"))
    t0 = time.perf_counter()
    live = tl.start_server(
        root,
        data=EMBEDDED_DATA,
        model=EMBEDDED_MODEL,
        users={tl.USER: tl.PASSWORD, tl.OTHER_USER: tl.OTHER_PASSWORD},
        timeout=900,
    )
    try:
        rows.append(
            ("serve up, default prepared (empty cache)", f"{time.perf_counter() - t0:.1f} s")
        )
        alice, bob = live.as_user(tl.USER), live.as_user(tl.OTHER_USER)
        default, _ = alice.status()
        check(bob.status()[0] == default, "the users start on different models")

        values = {
            f"{ids.MODEL_LOAD}.n_clicks": 1,
            f"{ids.MODEL_DATASET}.value": data.name,
            f"{ids.MODEL_BATCH_KEY}.value": "batch",
            f"{ids.MODEL_CHECKPOINT}.value": str(folder),
            f"{ids.MODEL_OWN_DATA}.value": [],
        }
        bob.fire(f"{ids.MODEL_LOAD}.n_clicks", values)
        seen_by_alice = [alice.status(), alice.poll(ids.MODEL_INTERVAL)]
        b_pair, b_seconds = wait_pair(bob, default)
        rows.append(("Bob's load + preparation", f"{b_seconds:.1f} s"))
        check(all(s[0] == default for s in seen_by_alice[:1]), "Alice's model moved")
        check("bob" not in seen_by_alice[0][1].lower(), "Alice's status shows Bob's job")
        check("Loading" not in seen_by_alice[1], "Alice's Model page shows Bob's job")
        check(alice.status()[0] == default, "Alice's model changed with Bob's")

        a_n, a_title = umap(alice, f"gene:{GENE}")
        b_n, b_title = umap(bob, f"gene:{GENE}")
        a_model, b_model = alice.status()[1], bob.status()[1]
        rows.append(("Alice: model, cells, colour", f"{a_model} · {a_n:,} · {a_title}"))
        rows.append(("Bob: model, cells, colour", f"{b_model} · {b_n:,} · {b_title}"))
        check(a_n == 6855 and GENE in a_title, "Alice's UMAP is not her model's")
        check(b_n == (1500 if args.quick else 3000) and GENE in b_title, "Bob's UMAP is wrong")
        check("pbmc10k" in a_model and "bob-2-epochs" in b_model, "a status names the wrong model")

        selection = {"cells": [0, 1, 2, 3], "dataset": default.split("-")[0], "source": "lasso"}
        saver = f"{ids.SELECTION_STORE}.data"
        view = {saver: selection, f"{ids.SAVED_SELECTIONS_STORE}.data": {}}
        alice.callback(f"{ids.WORKSPACE_SINK}.children", view, [saver])
        a_sel, b_sel = (
            layout_store(alice, ids.SELECTION_STORE),
            layout_store(bob, ids.SELECTION_STORE),
        )
        rows.append(
            (
                "selection kept for Alice / seen by Bob",
                f"{a_sel is not None} / {b_sel is not None}",
            )
        )
        check(a_sel == selection and b_sel is None, "the selection leaked or was lost")

        jobs = [json.loads(p.read_text()) for p in (live.cache_dir / "jobs").glob("*.json")]
        owners = sorted({str(j.get("owner")) for j in jobs})
        rows.append(("job owners on record", ", ".join(owners)))
        bobs = [j["id"] for j in jobs if j.get("owner") == tl.OTHER_USER]
        check(bool(bobs), "Bob's jobs are not recorded as his")
        if bobs:
            forged = {f"{ids.METRICS_JOB.interval}.n_intervals": 1,
                      f"{ids.METRICS_JOB.store}.data": {"job": bobs[0]}}  # fmt: skip
            text = tl.response_text(alice.fire(f"{ids.METRICS_JOB.interval}.n_intervals", forged))
            leaked = "Loading" in text or "%" in text or "done" in text.lower()
            rows.append(("Alice polls Bob's job id", "shows it" if leaked else "unknown to her"))
            check(not leaked, "Alice can read Bob's job")

        t1 = time.perf_counter()
        link = {
            "_pages_location.pathname": "/",
            "_pages_location.search": f"?pair={default}",
            f"{ids.MODEL_VERSION_STORE}.data": {"pair": b_pair},
            f"{ids.COLOR_STORE}.data": {"feature": f"gene:{GENE}", "layer": "raw"},
        }
        bob.fire("_pages_location.pathname", link)
        back, _ = wait_pair(bob, b_pair)
        shared_s = time.perf_counter() - t1
        check(back == default, "Bob's workspace did not open Alice's link")
        prepared = ready_seconds(live.log_text(), default)
        first = prepared[0].get("UMAP", float("nan")) if prepared else float("nan")
        again = prepared[-1].get("UMAP", float("nan")) if len(prepared) > 1 else float("nan")
        rows.append(("Bob opens Alice's link: switch", f"{shared_s:.1f} s"))
        rows.append(("UMAP of the shared model: first / again", f"{first:.2f} s / {again:.3f} s"))
        check(len(prepared) >= 2 and again < 0.5, "the shared model's UMAP was computed again")
        check(alice.status()[0] == default, "Alice's workspace moved")
    finally:
        tl.stop_server(live)

    width = max(len(k) for k, _ in rows)
    print(f"| {'what':<{width}} | value |")
    print(f"|{'-' * (width + 2)}|-------|")
    for k, v in rows:
        print(f"| {k:<{width}} | {v} |")
    print(f"isolated: {'yes' if not problems else 'no (' + '; '.join(problems) + ')'}")
    return 0 if not problems else 1


if __name__ == "__main__":
    sys.exit(main())
