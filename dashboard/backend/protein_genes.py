"""Which gene encodes each measured protein: the antibody-to-gene alias table and the match.

CITE-seq panels name antibodies by CD number or common name (``CD8a``, ``CD56``, ``PD-1``),
not by the HGNC symbol of the gene (``CD8A``, ``NCAM1``, ``PDCD1``). :data:`PROTEIN_GENES`
maps the short antibody names (upper case, as :func:`alias_key` writes them) of common
TotalSeq / CITE-seq panels to the symbols of the genes coding the epitope's protein (HGNC);
a protein not in the table matches the gene of the same name (case ignored), the name read
without its antibody suffix (``_TotalSeqB``, ...) and without scvi-tools' ``_protein`` DE
suffix. Only genes the model has are kept (:func:`match_proteins_to_genes`).

Multi-chain epitopes list every chain's gene (CD3 -> CD3E, CD3D, CD3G): each gene present
is its own pair. Isoform-specific antibodies (CD45RA / CD45RO) map to their gene (PTPRC),
whose RNA does not tell the isoforms apart.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from dashboard.backend.names import short_protein_name

#: Antibody (upper-case short name) -> the genes coding its target, most specific first.
PROTEIN_GENES: dict[str, tuple[str, ...]] = {
    "CD3": ("CD3E", "CD3D", "CD3G"),  # the CD3 complex (TotalSeq clone UCHT1: CD3ε)
    "CD8": ("CD8A", "CD8B"),
    "CD8A": ("CD8A",),
    "CD8B": ("CD8B",),
    "CD16": ("FCGR3A", "FCGR3B"),  # FcγRIIIa (NK, monocytes) and IIIb (neutrophils)
    "CD56": ("NCAM1",),
    "CD15": ("FUT4",),  # the Lewis-x glycan; FUT4 makes it
    "CD45": ("PTPRC",),
    "CD45RA": ("PTPRC",),
    "CD45RB": ("PTPRC",),
    "CD45RO": ("PTPRC",),
    "PD-1": ("PDCD1",),
    "PD1": ("PDCD1",),
    "PD-L1": ("CD274",),
    "CD127": ("IL7R",),
    "CD25": ("IL2RA",),
    "CD122": ("IL2RB",),
    "CD132": ("IL2RG",),
    "TIGIT": ("TIGIT",),
    "CD14": ("CD14",),
    "CD19": ("CD19",),
    "CD4": ("CD4",),
    "CD11B": ("ITGAM",),
    "CD11C": ("ITGAX",),
    "CD18": ("ITGB2",),
    "CD29": ("ITGB1",),
    "CD49D": ("ITGA4",),
    "CD20": ("MS4A1",),
    "CD21": ("CR2",),
    "CD32": ("FCGR2A", "FCGR2B"),
    "CD64": ("FCGR1A",),
    "CD62L": ("SELL",),
    "CD197": ("CCR7",),
    "CCR7": ("CCR7",),
    "CD195": ("CCR5",),
    "CD194": ("CCR4",),
    "CD196": ("CCR6",),
    "CD183": ("CXCR3",),
    "CD185": ("CXCR5",),
    "CD161": ("KLRB1",),
    "CD94": ("KLRD1",),
    "NKG2D": ("KLRK1",),
    "CD314": ("KLRK1",),
    "CD335": ("NCR1",),
    "CD57": ("B3GAT1",),  # the HNK-1 glycan; B3GAT1 makes it
    "CD69": ("CD69",),
    "CD38": ("CD38",),
    "CD27": ("CD27",),
    "CD28": ("CD28",),
    "CD2": ("CD2",),
    "CD5": ("CD5",),
    "CD7": ("CD7",),
    "CD1C": ("CD1C",),
    "CD141": ("THBD",),
    "CD303": ("CLEC4C",),
    "CD123": ("IL3RA",),
    "HLA-DR": ("HLA-DRA", "HLA-DRB1"),
    "CD279": ("PDCD1",),
    "CD152": ("CTLA4",),
    "CTLA-4": ("CTLA4",),
    "CD223": ("LAG3",),
    "LAG-3": ("LAG3",),
    "TIM-3": ("HAVCR2",),
    "CD366": ("HAVCR2",),
    "CD244": ("CD244",),
    "CD34": ("CD34",),
    "CD33": ("CD33",),
    "CD36": ("CD36",),
    "CD86": ("CD86",),
    "CD80": ("CD80",),
    "CD40": ("CD40",),
    "CD44": ("CD44",),
    "CD54": ("ICAM1",),
    "CD71": ("TFRC",),
    "CD95": ("FAS",),
    "CD137": ("TNFRSF9",),
    "CD134": ("TNFRSF4",),
    "OX40": ("TNFRSF4",),
    "CD278": ("ICOS",),
    "ICOS": ("ICOS",),
    "IGD": ("IGHD",),
    "IGM": ("IGHM",),
    "TCRAB": ("TRAC",),
    "TCRGD": ("TRDC",),
}

#: Suffixes dropped before a protein name is looked up (antibody tags, scvi-tools' DE tag).
EXTRA_SUFFIXES = ("_protein", "_PROT", "-protein")


@dataclass(frozen=True)
class ProteinGene:
    """One protein and a gene coding it, with how they were matched."""

    protein: str  #: the model's protein name (``"CD8a_TotalSeqB"``)
    gene: str  #: the model's gene name (``"CD8A"``)
    how: str  #: ``"alias"`` (from :data:`PROTEIN_GENES`) or ``"same name"``


def alias_key(protein: str) -> str:
    """The protein's name as the alias table spells it: antibody and ``_protein`` suffixes
    dropped, upper case (``"CD8a_TotalSeqB"`` -> ``"CD8A"``, ``"PD-1_TotalSeqB"`` ->
    ``"PD-1"``)."""
    name = short_protein_name(str(protein))
    for suffix in EXTRA_SUFFIXES:
        if name.endswith(suffix):
            name = name[: -len(suffix)]
    return short_protein_name(name).strip().upper()


def match_proteins_to_genes(proteins: Sequence[str], genes: Iterable[str]) -> list[ProteinGene]:
    """Every (protein, gene) pair whose gene the model has: the alias table's genes first
    (in its order), else the gene of the same name (case ignored); in the proteins' order.

    A gene is compared case-insensitively with the symbols, and the model's own spelling is
    kept (``"Cd4"`` in mouse data matches ``CD4``).
    """
    by_upper: dict[str, str] = {}
    for g in genes:
        by_upper.setdefault(str(g).upper(), str(g))
    out: list[ProteinGene] = []
    for protein in proteins:
        key = alias_key(protein)
        aliases = PROTEIN_GENES.get(key)
        if aliases is not None:
            found = [by_upper[a] for a in aliases if a in by_upper]
            out.extend(ProteinGene(str(protein), g, "alias") for g in found)
            if found:
                continue
        if key in by_upper:
            out.append(ProteinGene(str(protein), by_upper[key], "same name"))
    return out
