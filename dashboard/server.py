"""Start the dashboard: open the data, load the model, prepare its results, serve.

``totalvi-explorer`` (no arguments) runs :func:`serve` on the embedded default (PBMC data
and its trained checkpoint). The server comes up at once; the model's results (latent space,
UMAP, clusters, cell types, denoised values) are prepared by a background job whose progress
is printed here and shown in the page's status bar. They are cached on disk, so later
starts find them and are ready in seconds.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from dashboard.backend import warm_up
from dashboard.backend.settings import ServeOptions, Settings, load_settings

if TYPE_CHECKING:
    from dash import Dash

    from dashboard.backend.refs import Pair
    from dashboard.backend.service import AnalysisService
    from dashboard.views.state import ActiveState

log = logging.getLogger(__name__)
ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT / "data" / "pbmc10k.h5ad"
DEFAULT_MODEL = ROOT / "data" / "models" / "pbmc10k"
#: Loggers whose INFO lines (jobs queued, their progress, how they ended; model switches)
#: the server prints.
JOB_LOGGERS = ("dashboard.backend.jobs", "dashboard.views.switching", "dashboard.views.state")


@dataclass
class Bootstrap:
    """What :func:`bootstrap` set up: the service, the app state, the pair being prepared
    and the preparation job (``None`` when there is no model to show yet)."""

    service: AnalysisService
    state: ActiveState
    pair: Pair | None
    job: str | None
    message: str = ""


def bootstrap(
    data: str | Path | None = None,
    model: str | Path | None = None,
    *,
    flags: Mapping[str, str] | None = None,
    settings: Settings | None = None,
    warm: bool = True,
    out: TextIO | None = sys.stdout,
) -> Bootstrap:
    """Open the model folder with its data and start preparing their results.

    ``model`` (default: the embedded model) opens as its checkpoint was set up: the counts
    layer, batch and labels keys, protein key and modalities come from its registry, and
    ``flags`` (``layer``, ``batch_key``, ... as the command line's read flags) override
    them. ``data`` (default: the data saved in the model's folder; with neither, the
    embedded data) is checked against the model. A missing or unusable checkpoint is not
    fatal when there is data to show: the app then starts without a model and the Model
    page offers to train or load one. Data that cannot be read raises the backend's
    :class:`~dashboard.backend.errors.DatasetNotFound` (one clear line).
    """
    from dashboard.backend.errors import BackendError, DatasetNotFound
    from dashboard.backend.service import AnalysisService
    from dashboard.views.state import ActiveState
    from model.read_options import ReadOptions

    if model is None:
        model = DEFAULT_MODEL
        data = DEFAULT_DATA if data is None else data
    service = AnalysisService(settings if settings is not None else load_settings())
    state = ActiveState(service, warm=warm)
    t0 = time.perf_counter()
    try:
        pair = service.open_model(model, data=data, flags=flags)
        dataset, error = pair.dataset, None
    except DatasetNotFound:
        service.close()
        raise
    except BackendError as err:
        if data is None:
            service.close()
            raise
        pair, error = None, err
        fallback = ReadOptions(batch_key="batch").overridden(**dict(flags or {}))
        try:
            dataset = service.open_dataset(data, options=fallback)
        except DatasetNotFound:
            if fallback.batch_key != "batch" or "batch_key" in (flags or {}):
                raise
            dataset = service.open_dataset(data, options=replace(fallback, batch_key=None))
    state.set_dataset(dataset)
    d = service.dataset(dataset)
    _say(
        out,
        f"data   {dataset.path}: {d.n_cells:,} cells, {d.n_genes:,} genes, "
        f"{d.n_proteins} proteins, {d.n_batch} batch(es) ({dataset.options.describe()}; "
        f"{time.perf_counter() - t0:.1f}s)",
    )
    if pair is None:
        message = (
            f"no model loaded ({error}); train or load one on the Model page, or run "
            f"`totalvi-explorer train {data} --out {model}` first"
        )
        _say(out, f"model  {message}")
        return Bootstrap(service, state, None, None, message)
    _say(out, f"model  {model} ({pair.model.name})")
    job = state.prepare(pair)
    return Bootstrap(service, state, pair, job)


def follow_progress(
    service: AnalysisService, job: str, *, out: TextIO | None = sys.stdout, poll: float = 0.25
) -> float:
    """Wait for the start-up preparation and print how it ended (its steps are in the
    server log, as every job's are); returns the seconds it took."""
    t0 = time.perf_counter()
    while True:
        info = service.job(job)
        status = str(info.status)
        if info.status.finished:
            seconds = time.perf_counter() - t0
            if status == "done":
                _say(out, f"ready  results prepared in {seconds:.1f}s")
            else:
                _say(out, f"error  preparing the model failed: {info.error or info.message}")
            return seconds
        time.sleep(poll)


def start_layout_warm_up(out: TextIO | None = sys.stdout, *, nice: int = 0) -> threading.Thread:
    """Compile umap-learn's and pynndescent's kernels in a daemon thread
    (:func:`~dashboard.backend.warm_up.start_in_background`, ``nice`` as the job threads)
    and say when done."""
    return warm_up.start_in_background(
        lambda seconds: _say(out, f"warm   layout kernels compiled in {seconds:.1f}s"),
        nice=nice,
    )


def serve(
    data: str | Path | None = None,
    model: str | Path | None = None,
    *,
    host: str = ServeOptions.host,
    port: int = ServeOptions.port,
    flags: Mapping[str, str] | None = None,
    debug: bool = False,
    settings: Settings | None = None,
    production: bool = False,
    threads: int = ServeOptions.threads,
    trusted_proxy: str | None = None,
    on_start: Callable[[Any], None] | None = None,
    out: TextIO | None = sys.stdout,
) -> int:
    """Bootstrap, print progress in the background, and serve (blocks).

    ``production``: waitress with ``threads`` worker threads and Dash debug off (what
    ``totalvi-explorer serve`` runs); otherwise Dash's development server. ``on_start``
    gets the waitress server once it listens (``server.close()`` stops it; tests use it).
    """
    from dashboard.app import create_app

    configure_logging()
    t0 = time.perf_counter()
    boot = bootstrap(data, model, flags=flags, settings=settings, out=out)
    try:
        app = create_app(boot.service, state=boot.state)
    except Exception:
        boot.service.close()
        raise
    if boot.service.settings.warm_up_layout:
        start_layout_warm_up(out, nice=boot.service.settings.job_nice)
    start_precompress(app)
    if boot.job is not None:
        threading.Thread(
            target=follow_progress, args=(boot.service, boot.job), kwargs={"out": out}, daemon=True
        ).start()
    auth = " with basic auth" if boot.service.settings.auth_file is not None else ""
    try:
        if production:
            server = _waitress_server(
                app, host, port, threads, trusted_proxy,
                max_body=boot.service.settings.max_upload_bytes + 1024**2,
            )  # fmt: skip
            port = server.effective_port
            _say(
                out,
                f"serve  http://{host}:{port}/  (waitress, {threads} threads{auth}; up in "
                f"{time.perf_counter() - t0:.1f}s; Ctrl+C stops)",
            )
            if on_start is not None:
                on_start(server)
            server.run()
        else:
            _say(
                out,
                f"serve  http://{host}:{port}/  (Dash development server{auth}; up in "
                f"{time.perf_counter() - t0:.1f}s; Ctrl+C stops)",
            )
            app.run(host=host, port=port, debug=debug, use_reloader=False)
    finally:
        boot.service.close()
    return 0


def configure_logging() -> None:
    """The server's log: warnings of every library, no line per request, and one line per
    job event (:data:`JOB_LOGGERS`: queued, progress, end; model switches)."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # no line per status poll
    for name in JOB_LOGGERS:  # what each job does, whichever page started it
        logging.getLogger(name).setLevel(logging.INFO)


def _waitress_server(
    app: Dash,
    host: str,
    port: int,
    threads: int,
    trusted_proxy: str | None,
    *,
    max_body: int = 1024**3,
) -> Any:
    """A waitress server over the app (not yet running); no access log, so no request
    headers (credentials) are ever written anywhere.

    Waitress buffers a request body larger than 512 kB in a temporary file, not in memory,
    and refuses one over ``max_body`` bytes (the upload limit plus its headers) unread.
    """
    from waitress import create_server

    kwargs: dict[str, Any] = {"max_request_body_size": int(max_body)}
    if trusted_proxy:
        kwargs["trusted_proxy"] = trusted_proxy
        kwargs["trusted_proxy_headers"] = {
            "x-forwarded-for",
            "x-forwarded-host",
            "x-forwarded-proto",
            "x-forwarded-port",
        }
        kwargs["clear_untrusted_proxy_headers"] = True
    try:
        return create_server(
            app.server, host=host, port=port, threads=threads, ident="totalvi-explorer", **kwargs
        )
    except OSError as err:
        from dashboard.backend.errors import BackendError

        msg = f"cannot listen on {host}:{port} ({err.strerror or err})"
        raise BackendError(msg) from None


def make_app(boot: Bootstrap) -> Dash:
    """The Dash app of a bootstrap (for WSGI servers: ``make_app(bootstrap(...)).server``)."""
    from dashboard.app import create_app

    app = create_app(boot.service, state=boot.state)
    start_precompress(app)
    return app


def start_precompress(app: Dash) -> threading.Thread:
    """Compress the page's scripts in a daemon thread
    (:func:`~dashboard.app.precompress_scripts`), so the first visitor does not wait for
    plotly.js to be compressed; a failure is logged (the scripts are then compressed on
    first request, as before)."""
    from dashboard.app import precompress_scripts

    def run() -> None:
        try:
            precompress_scripts(app)
        except Exception:
            log.exception("compressing the page scripts failed")

    thread = threading.Thread(target=run, name="precompress-scripts", daemon=True)
    thread.start()
    return thread


def _say(out: TextIO | None, line: str) -> None:
    if out is not None:
        print(line, file=out, flush=True)
