"""The scale of model-derived protein values: measured (with capture efficiency) or not.

Since scvi-tools 1.3.1 TOTALVI learns a capture efficiency per batch and protein and trains
on the likelihood of ``rate x efficiency``; its posterior-predictive samples and denoised
values leave the efficiency out (scvi-tools issue #4022), so they sit on another scale than
the counts (about 2.5x the observed mean on a converged PBMC model). Ours default to the
measured scale; ``"efficiency-free"`` is the switch that reproduces scvi-tools 1.4.2 exactly.
"""

from __future__ import annotations

from typing import Literal, get_args

ProteinScale = Literal["measured", "efficiency-free"]
MEASURED: ProteinScale = "measured"
EFFICIENCY_FREE: ProteinScale = "efficiency-free"
PROTEIN_SCALES: tuple[str, ...] = get_args(ProteinScale)

#: What each scale means, in the words the pages and exports use.
SCALE_DESCRIPTIONS: dict[str, str] = {
    MEASURED: "measured scale (rate x the batch's learned capture efficiency, as the counts)",
    EFFICIENCY_FREE: "efficiency-free rate (capture efficiency left out, as scvi-tools 1.4.2)",
}
SCALE_SHORT: dict[str, str] = {MEASURED: "measured scale", EFFICIENCY_FREE: "efficiency-free"}
#: The scale of DE's protein rows: efficiency-free rates, as scvi-tools' DE (the measured
#: scale would add the batches' capture differences to a fold change across batches).
DE_PROTEIN_SCALE = (
    "Protein rows compare efficiency-free rates, as scvi-tools' DE: a batch's capture "
    "efficiency cancels in a fold change within the batch and would be a batch effect "
    "across batches."
)


def check_protein_scale(value: str) -> ProteinScale:
    """``value`` if it names a scale, else ValueError in one line naming the choices."""
    if value not in PROTEIN_SCALES:
        msg = f"protein_scale must be one of {', '.join(PROTEIN_SCALES)}; got {value!r}"
        raise ValueError(msg)
    return value  # type: ignore[return-value]


def is_measured(value: str) -> bool:
    """Whether ``value`` (checked) asks for the measured scale."""
    return check_protein_scale(value) == MEASURED
