"""Where a CITE-seq file keeps its counts and keys: the read options of one dataset.

A model saved by scvi-tools records how its data was set up (``setup_anndata`` /
``setup_mudata`` arguments in its registry: counts layer, batch and labels keys, protein
obsm key or layer, and for MuData which modality holds each). :class:`ReadOptions` is that
record in reader terms, so a checkpoint's data opens "the way its card describes it" with no
flag, while flags (``--layer``, ``--batch-key``, ``--labels-key``, ``--protein-key``, ...)
still override each part.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from model.data import CiteSeqData, read_cite_seq

#: Defaults of the readers when nothing says otherwise.
DEFAULT_PROTEIN_OBSM_KEY = "protein_expression"
DEFAULT_RNA_MODALITY = "rna"
DEFAULT_PROTEIN_MODALITY = "protein"
#: Registry values that mean "no key" (scvi-tools registers a constant column then).
_NO_KEY = {None, "", "_scvi_batch", "_scvi_labels"}
#: Where this project's checkpoints keep the read options of their training data.
OURS = "read_options"


@dataclass(frozen=True)
class ReadOptions:
    """How to read one CITE-seq file (``None``: the reader's default).

    ``layer`` is the RNA counts layer (``None``: ``X``); ``protein_obsm_key`` the AnnData
    obsm key of the protein counts; ``protein_layer`` the protein modality's layer in a
    MuData; ``*_modality`` the MuData modality names (``key_modalities`` says in which
    modality's obs the batch / labels column is, as ``setup_mudata``'s ``modalities``).
    """

    layer: str | None = None
    batch_key: str | None = None
    labels_key: str | None = None
    protein_obsm_key: str | None = None
    protein_names_uns_key: str | None = None
    protein_layer: str | None = None
    rna_modality: str | None = None
    protein_modality: str | None = None
    batch_modality: str | None = None
    labels_modality: str | None = None

    # ------------------------------------------------------------------ building
    @classmethod
    def from_setup_args(cls, setup_args: Mapping[str, Any] | None) -> ReadOptions:
        """The read options a checkpoint's ``setup_anndata`` / ``setup_mudata`` arguments
        (its registry's ``setup_args``, or ours) describe."""
        args = dict(setup_args or {})
        if isinstance(args.get(OURS), Mapping):  # written by this project's training
            return cls.from_dict(args[OURS])
        mods = args.get("modalities") if isinstance(args.get("modalities"), Mapping) else {}
        mudata = (
            args.get("setup_method_name") == "setup_mudata" or bool(mods) or ("rna_layer" in args)
        )

        def text(value: Any) -> str | None:
            return None if value in _NO_KEY or not isinstance(value, str) else value

        keys = {
            "batch_key": text(args.get("batch_key")),
            "labels_key": text(args.get("labels_key")),
        }
        if mudata:
            return cls(
                layer=text(args.get("rna_layer")),
                protein_layer=text(args.get("protein_layer")),
                rna_modality=text(mods.get("rna_layer")),
                protein_modality=text(mods.get("protein_layer")),
                batch_modality=text(mods.get("batch_key")),
                labels_modality=text(mods.get("labels_key")),
                **keys,
            )
        return cls(
            layer=text(args.get("layer")),
            protein_obsm_key=text(args.get("protein_expression_obsm_key")),
            protein_names_uns_key=text(args.get("protein_names_uns_key")),
            **keys,
        )

    def overridden(
        self,
        *,
        layer: str | None = None,
        batch_key: str | None = None,
        labels_key: str | None = None,
        protein_key: str | None = None,
        protein_layer: str | None = None,
        rna_modality: str | None = None,
    ) -> ReadOptions:
        """These options with the given flags on top (``None``: not given, keep ours).

        ``""`` clears a part: ``batch_key=""`` is one batch, ``layer=""`` reads ``X``,
        ``labels_key=""`` no labels. ``protein_key`` names the protein counts in the file's
        own terms: the obsm key of an ``.h5ad``, the protein modality of an ``.h5mu``.
        """
        change: dict[str, str | None] = {}
        for name, value in (
            ("layer", layer),
            ("batch_key", batch_key),
            ("labels_key", labels_key),
            ("protein_layer", protein_layer),
            ("rna_modality", rna_modality),
        ):
            if value is not None:
                change[name] = value or None
        if "batch_key" in change:
            change["batch_modality"] = None
        if "labels_key" in change:
            change["labels_modality"] = None
        if protein_key is not None:
            change["protein_obsm_key"] = protein_key or None
            change["protein_modality"] = protein_key or None
        return replace(self, **change)

    # ------------------------------------------------------------------ using
    def read_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of :func:`model.data.read_cite_seq` (defaults filled in)."""
        return {
            "batch_key": self.batch_key,
            "labels_key": self.labels_key,
            "layer": self.layer,
            "protein_layer": self.protein_layer,
            "protein_obsm_key": self.protein_obsm_key or DEFAULT_PROTEIN_OBSM_KEY,
            "protein_names_uns_key": self.protein_names_uns_key,
            "rna_modality": self.rna_modality or DEFAULT_RNA_MODALITY,
            "protein_modality": self.protein_modality or DEFAULT_PROTEIN_MODALITY,
            "key_modalities": {
                k: v
                for k, v in (
                    ("batch_key", self.batch_modality),
                    ("labels_key", self.labels_modality),
                )
                if v
            },
        }

    def read(self, path: str | os.PathLike[str]) -> CiteSeqData:
        """Read ``path`` with these options."""
        return read_cite_seq(path, **self.read_kwargs())

    def to_dict(self) -> dict[str, str]:
        """The parts that are set (JSON-able; :meth:`from_dict` inverts it)."""
        return {k: v for k, v in asdict(self).items() if v is not None}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | None) -> ReadOptions:
        """Inverse of :meth:`to_dict` (unknown keys are ignored)."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in dict(d or {}).items() if k in names})

    def describe(self) -> str:
        """One line for status text, e.g. ``layer 'counts', batch key 'sample_id'``."""
        same = self.protein_obsm_key == self.protein_modality  # one --protein-key named both
        parts = [
            f"{label} {value!r}"
            for label, value in (
                ("layer", self.layer),
                ("batch key", self.batch_key),
                ("labels key", self.labels_key),
                ("protein key" if same else "protein obsm key", self.protein_obsm_key),
                ("protein layer", self.protein_layer),
                ("RNA modality", self.rna_modality),
                ("protein modality", None if same else self.protein_modality),
            )
            if value
        ]
        return ", ".join(parts) or "the readers' defaults"
