"""Model QC on the cells, as the pages show it: the per-cell quantities a cell view can be
coloured by (feature kind ``qc``, :data:`QC`), and the posterior predictive check of one
gene or protein that Lookup draws (:func:`predictive_check`).

The colour pickers list the quantities under "Model QC" (:func:`qc_entries`, read by
:func:`dashboard.views.features.feature_catalog`); :mod:`dashboard.views.colours` reads their
values with :func:`qc_values`. The cell-wise CV ratio needs posterior predictive draws of
every gene in every cell (a minute or more on a few thousand cells): its first use starts a
background job and says so; the colouring works once it is done.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from dashboard.backend.errors import BackendError, InvalidSelection

if TYPE_CHECKING:
    from dashboard.backend.cell_qc import FeatureCheck
    from dashboard.backend.refs import Pair
    from dashboard.backend.service import AnalysisService

#: The feature kind of the per-cell QC quantities (``"qc:recon_rna"``).
QC_KIND = "qc"
#: The group the colour pickers list them under (each label starts with it).
QC_GROUP = "Model QC"


@dataclass(frozen=True)
class QCQuantity:
    """A per-cell QC quantity: its dropdown ``label``, colour-bar ``title``, the ``note``
    shown under a view coloured by it, and whether it needs the counts."""

    label: str
    title: str
    note: str
    needs_counts: bool


#: Every per-cell QC quantity, by name (the names of the backend's ``cell_qc``).
QC: dict[str, QCQuantity] = {
    "recon_rna": QCQuantity(
        "Reconstruction error, RNA",
        "RNA reconstruction error (NLL)",
        "Reconstruction error: the negative log-likelihood of the cell's RNA counts under "
        "the model's decoder (higher: the model explains the cell worse; it grows with the "
        "cell's total counts).",
        True,
    ),
    "recon_protein": QCQuantity(
        "Reconstruction error, protein",
        "Protein reconstruction error (NLL)",
        "Reconstruction error: the negative log-likelihood of the cell's measured protein "
        "counts under the model's decoder (higher: explained worse).",
        True,
    ),
    "latent_uncertainty": QCQuantity(
        "Latent uncertainty",
        "Latent uncertainty (mean posterior variance of z)",
        "Latent uncertainty: the mean variance of the cell's posterior q(z | x) over the "
        "latent dimensions (higher: the model is less sure where the cell belongs).",
        False,
    ),
    "protein_background": QCQuantity(
        "Protein background level",
        "Protein background (mean log rate)",
        "Protein background: the mean over measured proteins of the log background rate "
        "the model infers for the cell (ambient antibody level; measured scale).",
        False,
    ),
    "cv_ratio_rna": QCQuantity(
        "Cell-wise CV ratio, RNA",
        "RNA CV ratio, model / observed (log2)",
        "Cell-wise CV ratio: log2 of the CV across genes of the model's posterior "
        "predictive counts over that of the observed counts (0: the model reproduces the "
        "cell's variability; the model card's cell-wise CV, per cell).",
        True,
    ),
    "cv_ratio_protein": QCQuantity(
        "Cell-wise CV ratio, protein",
        "Protein CV ratio, model / observed (log2)",
        "Cell-wise CV ratio: log2 of the CV across proteins of the model's posterior "
        "predictive counts over that of the observed counts (0: as variable as observed).",
        True,
    ),
}

#: The background job computing the CV ratios of a pair (by pair id), so a second pick
#: while it runs starts no second one.
_cv_jobs: dict[str, str] = {}
_cv_lock = threading.Lock()


def qc_entries(*, minified: bool) -> list[tuple[str, str]]:
    """``(value, label)`` of the quantities a dataset can be coloured by (minified data,
    without counts, only those that need none), labels under :data:`QC_GROUP`."""
    return [
        (f"{QC_KIND}:{name}", f"{QC_GROUP}: {q.label}")
        for name, q in QC.items()
        if not (minified and q.needs_counts)
    ]


def quantity(name: str) -> QCQuantity:
    """The quantity ``name``; :class:`InvalidSelection` (one line) for an unknown one."""
    found = QC.get(str(name))
    if found is None:
        msg = f"unknown model QC quantity {str(name)[:40]!r}; choose one of {list(QC)}"
        raise InvalidSelection(msg)
    return found


def qc_title(name: str) -> str:
    """The colour-bar title of quantity ``name``."""
    return quantity(name).title


def qc_note(name: str) -> str:
    """What quantity ``name`` is, in one or two sentences (shown under the view)."""
    return quantity(name).note


class CVNotReady(BackendError):
    """The cell-wise CV ratios are being computed as a background job."""


def qc_values(service: AnalysisService, pair: Pair, name: str) -> np.ndarray:
    """Per-cell values (float32, NaN where undefined) of quantity ``name``.

    The CV ratios come from the cache; when they are not there yet a background job
    computes them and :class:`CVNotReady` says so in one line (colour by them again once it
    is done)."""
    quantity(name)
    if name.startswith("cv_ratio_") and not service.has_cell_cv(pair):
        _start_cv_job(service, pair)
        msg = (
            "The cell-wise CV ratio needs posterior predictive counts of every gene in every "
            "cell: computing them as a background job (about a minute per few thousand "
            "cells). Colour by it again when it is done."
        )
        raise CVNotReady(msg)
    return np.asarray(service.cell_qc(pair, name), dtype=np.float32)


def _start_cv_job(service: AnalysisService, pair: Pair) -> None:
    """Submit the CV job of ``pair`` unless one is queued or running."""
    with _cv_lock:
        job = _cv_jobs.get(pair.id)
        if job is not None:
            try:
                if str(service.job(job).status) in {"queued", "running"}:
                    return
            except BackendError:  # forgotten: start another
                pass
        _cv_jobs[pair.id] = service.submit("cell_cv", pair)


@dataclass(frozen=True)
class CheckView:
    """The posterior predictive check of one feature, figure-ready: bin centres and widths
    (on ``log1p(count)`` when ``log_bins``), cells per bin observed and predicted, tick
    positions and labels of the count axis, and the summary line."""

    centres: np.ndarray
    widths: np.ndarray
    observed: np.ndarray
    predicted: np.ndarray
    log_bins: bool
    tickvals: list[float]
    ticktext: list[str]
    summary: str
    n_cells: int


def predictive_check(service: AnalysisService, pair: Pair, feature: str) -> CheckView:
    """The check of ``feature`` (``"gene:<name>"``/``"protein:<name>"``, checked by the
    backend) as :class:`CheckView`."""
    return check_view(service.feature_check(pair, str(feature)))


def check_view(check: FeatureCheck) -> CheckView:
    """:class:`CheckView` of a backend :class:`~dashboard.backend.cell_qc.FeatureCheck`."""
    edges = np.asarray(check.edges, dtype=np.float64)
    if check.log_bins:
        pos = np.log1p(edges)
        top = edges[-1]
        ticks = [t for t in (0, 1, 3, 10, 30, 100, 300, 1000, 3000, 10000, 30000) if t <= top]
        tickvals = [float(np.log1p(t)) for t in ticks]
        ticktext = [f"{t:,}" for t in ticks]
    else:
        pos = edges - 0.5  # one bin per count, centred on it
        n = len(edges) - 1
        step = max(1, int(np.ceil(n / 12)))
        tickvals = [float(k) for k in range(0, n, step)]
        ticktext = [str(k) for k in range(0, n, step)]
    return CheckView(
        centres=(pos[:-1] + pos[1:]) / 2,
        widths=np.diff(pos),
        observed=np.asarray(check.observed),
        predicted=np.asarray(check.predicted),
        log_bins=check.log_bins,
        tickvals=tickvals,
        ticktext=ticktext,
        summary=check_summary(check),
        n_cells=check.n_cells,
    )


def check_summary(check: FeatureCheck) -> str:
    """One line: zero fractions, coverage of the 50% and 90% intervals, and what it is
    computed on."""
    cov = check.coverage
    sample = (
        f"{check.n_cells:,} of {check.n_measured:,} cells (a seeded sample)"
        if check.n_measured > check.n_cells
        else f"{check.n_cells:,} cells"
    )
    return (
        f"Zero fraction: observed {_pct(check.zero_observed)}, model "
        f"{_pct(check.zero_predicted)}. Calibration coverage (share of cells whose count lies "
        f"in the model's central interval; ideal = nominal): 50%: {_pct(cov.get('50%'))}, "
        f"90%: {_pct(cov.get('90%'))}. From {check.n_samples} posterior predictive draws per "
        f"cell over {sample}."
    )


def _pct(value: Any) -> str:
    """``0.123`` → ``"12.3%"``; NaN or ``None`` → ``"–"``."""
    if value is None or not np.isfinite(value):
        return "–"
    return f"{100 * float(value):.1f}%"
