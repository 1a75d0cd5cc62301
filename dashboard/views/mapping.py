"""Mapping new data onto the active model (the Model page's "Map new data" card): what a
query file holds beside the model, and the mapping job as the workspace's model switch.

Mapping runs :meth:`~dashboard.backend.service.AnalysisService.map_query` on the active pair
in a background job; when it is done the combined (reference + query) pair is prepared like
a newly trained model and the app switches to it. A failed or cancelled mapping leaves the
active pair as it was.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from dashboard.backend.errors import InvalidSelection
from dashboard.backend.mapping import (
    CONFIDENCE_COLUMN,
    DATASET_COLUMN,
    LABEL_COLUMN,
    check_genes,
    is_rna_only,
)
from dashboard.views.model import MAX_EPOCHS_RANGE, batch_key, dataset_path, whole_number
from dashboard.views.state import get_state

if TYPE_CHECKING:
    from dashboard.backend.jobs import JobContext
    from dashboard.backend.mapping import QueryMapResult
    from dashboard.backend.refs import Pair
    from dashboard.backend.service import AnalysisService

#: Epochs shown in the form: 100, as measured in bench/RESULTS.md (scvi-tools' scArches
#: tutorial uses 200; longer query training drifts label transfer on small references).
DEFAULT_EPOCHS = 100

# genes of the files read for the form, so Start can refuse a mismatch at once
_genes: dict[str, tuple[float, pd.Index]] = {}
_genes_lock = threading.Lock()


def query_summary(service: AnalysisService, pair: Pair | None, data: Any) -> str:
    """One line on a query file: its size, and how many of the active model's genes and
    proteins it has (remembered, so a Start can refuse a gene mismatch at once)."""
    proteins = "no proteins" if is_rna_only(data) else f"{data.n_proteins:,} proteins"
    info = f"{data.n_cells:,} cells × {data.n_genes:,} genes × {proteins}"
    if pair is not None:
        model = service.model(pair)
        genes = int(pd.Index(model.var_names).isin(data.var_names).sum())
        info += f"; {genes:,} of the model's {len(model.var_names):,} genes"
        if not is_rna_only(data):
            prots = int(pd.Index(model.protein_names).isin(data.protein_names).sum())
            info += f" and {prots} of its {len(model.protein_names)} proteins"
    return info


def remember_genes(path: str, genes: pd.Index) -> None:
    """Keep the genes of a query file read for the form (the 8 newest files)."""
    try:
        mtime = Path(path).stat().st_mtime
    except OSError:
        return
    with _genes_lock:
        _genes[str(path)] = (mtime, genes)
        while len(_genes) > 8:
            _genes.pop(next(iter(_genes)))


def _known_genes(path: str) -> pd.Index | None:
    with _genes_lock:
        item = _genes.get(str(path))
    try:
        if item is not None and Path(path).stat().st_mtime == item[0]:
            return item[1]
    except OSError:
        return None
    return None


def parse_epochs(value: Any) -> int:
    """The epochs field as a whole number in :data:`MAX_EPOCHS_RANGE` (readable error)."""
    return whole_number(value, *MAX_EPOCHS_RANGE, "Max epochs")


def start(
    service: AnalysisService, pair: Pair, path: str | None, key: str | None, max_epochs: Any
) -> str:
    """Check the form and start mapping the file ``path`` (batch key ``key``, a dropdown
    value) onto ``pair``; returns its path. Problems raise one readable line (nothing
    starts); a gene mismatch is refused before any work when the file was read before."""
    if not path:
        msg = "Choose or upload the new data first."
        raise InvalidSelection(msg)
    epochs = parse_epochs(max_epochs)
    path = dataset_path(service, path)
    genes = _known_genes(path)
    if genes is not None:  # refuse a gene mismatch before any work
        check_genes(service.model(pair), genes, min_gene_fraction=_min_gene_fraction())
    mapping_job(service, pair, path, batch_key=batch_key(key), max_epochs=epochs)
    return path


def _min_gene_fraction() -> float:
    from model.mapping import MIN_GENE_FRACTION  # torch loads on first use, not with the page

    return MIN_GENE_FRACTION


def mapping_job(
    service: AnalysisService, pair: Pair, path: str, *, batch_key: str | None, max_epochs: int
) -> str:
    """Start, as the server's model switch: read the query with its batch key, map it onto
    ``pair``'s model; the combined pair is then prepared and made active."""

    def run(ctx: JobContext) -> QueryMapResult:
        ctx.progress(0.0, "reading the query")
        query = service.open_query(path, batch_key=batch_key, untrusted=True)
        ctx.check()
        return service.map_query(
            pair,
            query,
            max_epochs=max_epochs,
            progress=lambda f, m: ctx.progress(0.03 + 0.97 * f, m),
            should_stop=ctx.cancelled,
        )

    def submit() -> str:
        return service.submit_local(
            "map_query",
            run,
            params={
                "pair": pair.to_dict(),
                "path": path,
                "batch_key": batch_key,
                "max_epochs": max_epochs,
            },
            result_json=lambda result: result.to_dict(),
        )

    def to_pair(result: QueryMapResult) -> tuple[Pair, str]:
        hint = (
            f"On Explore, colour by {DATASET_COLUMN}, batch, {LABEL_COLUMN} or "
            f"{CONFIDENCE_COLUMN}."
        )
        return result.pair, f"{summary(result)} {hint}"

    return get_state().switch.start("map", submit, name=Path(path).name, to_pair=to_pair)


def summary(result: QueryMapResult) -> str:
    """One line about a finished mapping."""
    info = result.info
    parts = [
        f"Mapped {result.n_query:,} new cells onto {result.n_reference:,} reference cells "
        f"({info.get('epochs', 0)} epochs)"
    ]
    if info.get("n_genes_missing"):
        parts.append(f"{info['n_genes_missing']:,} model genes missing (zeros)")
    if info.get("n_proteins_missing"):
        parts.append(f"{info['n_proteins_missing']} proteins predicted")
    if info.get("renamed_batches"):
        renamed = ", ".join(f"{a} → {b}" for a, b in info["renamed_batches"].items())
        parts.append(f"batches renamed: {renamed}")
    parts.append(f"mean label confidence {result.mean_confidence:.2f}")
    return "; ".join(parts) + "."
