"""How much one crafted request grows a live server's memory (issue 10: at most 1 GB).

Starts ``totalvi-explorer serve`` (basic auth, temp folders, the upload limit of
``--upload-limit-mb``, default the shipped 500 MB) as its own process, then sends each
attack once and records the server's RSS before, its peak during (sampled every 10 ms by
psutil) and after the request, with what the page then shows. Prints a Markdown table.

    .venv/bin/python bench/attack_memory.py [--upload-limit-mb 500]
"""

from __future__ import annotations

import argparse
import base64
import os
import platform
import shutil
import sys
import tempfile
import threading
import time
import zlib
from collections.abc import Callable
from pathlib import Path

import psutil

BENCH = Path(__file__).resolve().parent
# bench/dashboard.py would shadow the ``dashboard`` package: import from the repository root
sys.path[:] = [str(BENCH.parent), *(p for p in sys.path if Path(p or ".").resolve() != BENCH)]

from dashboard.testing_live import (  # noqa: E402
    ATTACKS,
    SECRET,
    Live,
    secret_h5,
    shown_text,
    start_server,
    stop_server,
)

MB = 1024**2


def peak_rss(live: Live, fn: Callable[[], str]) -> tuple[int, int, int, str]:
    """RSS before, peak during and after ``fn()``, and what ``fn`` returned."""
    proc = psutil.Process(live.proc.pid)
    before = proc.memory_info().rss
    peak = [before]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], proc.memory_info().rss)
            time.sleep(0.01)

    t = threading.Thread(target=sample, daemon=True)
    t.start()
    try:
        shown = fn()
    finally:
        done.set()
        t.join()
    return before, peak[0], proc.memory_info().rss, shown


def link_bomb(live: Live, key: str) -> str:
    prefix = b'{"view":"umap","box":' if key == "region" else b""
    token = base64.urlsafe_b64encode(zlib.compress(prefix + b"\xff" * 1_400_000_000, 9))
    out = live.callback(
        "_pages_content.children",
        {"_pages_location.pathname": "/", "_pages_location.search": f"?{key}={token.decode()}"
         "&n=200"},
        ["_pages_location.pathname"],
    )  # fmt: skip
    return f"{len(token) / MB:.1f} MB token; page built: {'response' in out}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--upload-limit-mb", type=float, default=500.0)
    args = parser.parse_args(argv)
    root = Path(tempfile.mkdtemp(prefix="tve-attack-memory-"))
    t0 = time.perf_counter()
    live = start_server(root, upload_limit_mb=args.upload_limit_mb)
    rows: list[tuple[str, int, int, int, str]] = []
    try:
        print(f"server up in {time.perf_counter() - t0:.0f} s; RSS {live.rss() / MB:.0f} MB")
        secret = secret_h5(live.secret.parent / "secret.h5", SECRET)
        good = live.data_dir / "small.h5ad"
        for name, (build, _) in ATTACKS.items():
            raw = build(good, secret, root / f"{name}.h5ad")
            send = lambda raw=raw, n=name: live.upload_message(raw, n + ".h5ad")  # noqa: E731
            rows.append((f"upload: {name} ({len(raw) / 1024:.0f} kB)", *peak_rss(live, send)))
        limit = int(args.upload_limit_mb * MB)
        body = root / "limit.h5ad"
        with open(body, "wb") as fh:  # junk of exactly the limit, written without holding it
            fh.write(b"\x89HDF\r\n\x1a\n")
            for _ in range((limit - 8) // MB):
                fh.write(os.urandom(MB))
            fh.write(os.urandom((limit - 8) % MB))

        def at_limit() -> str:
            import requests

            with open(body, "rb") as fh:
                r = requests.post(f"{live.url}/_upload/dataset", data=fh, timeout=600,
                                  headers={**live.auth, "X-Filename": "limit.h5ad"})  # fmt: skip
            done = {"upload": r.json()["upload"]}
            out = live.callback(
                "model-upload-status.children", {"model-upload-done.data": done},
                ["model-upload-done.data"],
            )  # fmt: skip
            return shown_text(out["response"]["model-upload-status"]["children"])

        rows.append(
            (f"upload at the limit ({limit / MB:.0f} MB of junk)", *peak_rss(live, at_limit))
        )
        for key in ("sel", "region"):
            rows.append((f"share link: {key}= zlib bomb (1.4 GB inflated)",
                         *peak_rss(live, lambda key=key: link_bomb(live, key))))  # fmt: skip
        alive = live.alive()
    finally:
        stop_server(live)
        shutil.rmtree(root, ignore_errors=True)  # the 500 MB body with it
    print(
        f"\n{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs; "
        f"upload limit {args.upload_limit_mb:.0f} MB; server alive after all: {alive}\n"
    )
    print("| request | RSS before MB | peak during MB | growth at peak MB | after MB | shown |")
    print("|---|---|---|---|---|---|")
    for what, before, peak, after, shown in rows:
        line = shown if len(shown) < 110 else shown[:107] + "..."
        print(f"| {what} | {before / MB:.0f} | {peak / MB:.0f} | {(peak - before) / MB:.0f} | "
              f"{after / MB:.0f} | {line} |")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
