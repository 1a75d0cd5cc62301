"""Copies of a model folder's data as scvi-hub ships it, or under other names (for tests).

:func:`minified_copy` writes what scvi-tools' ``minify_mudata`` / ``minify_adata`` leave
(``uns["_scvi_adata_minify_type"] = "latent_posterior_parameters"``, the latent posterior in
``obsm["_scvi_latent_qzm"]`` / ``obsm["_scvi_latent_qzv"]`` (a *variance*, as scvi-tools'
``get_latent_representation(return_dist=True)`` gives), the RNA totals in
``obs["_scvi_observed_lib_size"]``, and every count matrix emptied to a sparse all-zero one).
:func:`renamed_copy` writes the same cells under other keys (batch column, counts layer,
protein modality), so flags must name them.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import mudata
import numpy as np
import scipy.sparse as sp

from model.data import MINIFY_UNS_KEY
from model.model_folder import CARD_FILE, CHECKPOINT_FILE
from model.read_options import ReadOptions
from model.totalvi import TotalVI

MINIFIED_TYPE = "latent_posterior_parameters"
_DATA_FILE = "mdata.h5mu"


def minified_copy(
    folder: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    batch_key: str = "sample_id",
    layer: str = "counts",
) -> Path:
    """A minified copy of an scvi-tools MuData model folder (``model.pt`` + ``mdata.h5mu``).

    ``model.pt`` and ``README.md`` are copied as they are; ``mdata.h5mu`` gets the latent
    posterior computed by our model of ``model.pt`` on the original counts (``layer`` of
    modality ``rna``, batches from ``batch_key``), and all-zero sparse counts in every
    modality's ``X`` and layers. Returns ``out``.
    """
    src, dst = Path(folder), Path(out)
    dst.mkdir(parents=True, exist_ok=True)
    model = TotalVI.load(src / CHECKPOINT_FILE)
    options = ReadOptions.from_setup_args(model.setup_args).overridden(
        batch_key=batch_key, layer=layer
    )
    data = options.read(src / _DATA_FILE)
    qzm, qzv = model.get_latent_representation(data, return_dist=True)
    mdata = mudata.read_h5mu(src / _DATA_FILE)
    lib = np.asarray(data.rna.sum(axis=1), dtype=np.float32).ravel()
    order = mdata.obs_names.get_indexer(data.obs_names)
    back = np.argsort(order)  # the posterior in the file's cell order
    for mod in mdata.mod.values():
        empty = sp.csr_matrix(mod.shape, dtype=np.float32)
        mod.X = empty
        for name in list(mod.layers):
            mod.layers[name] = empty.copy()
    mdata.obsm["_scvi_latent_qzm"] = np.asarray(qzm, dtype=np.float32)[back]
    mdata.obsm["_scvi_latent_qzv"] = np.asarray(qzv, dtype=np.float32)[back]
    mdata.obs["_scvi_observed_lib_size"] = lib[back]
    mdata.uns[MINIFY_UNS_KEY] = MINIFIED_TYPE
    mdata.write_h5mu(dst / _DATA_FILE)
    for name in (CHECKPOINT_FILE, CARD_FILE):
        if (src / name).is_file():
            shutil.copy2(src / name, dst / name)
    return dst


def renamed_copy(
    folder: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    batch_key: tuple[str, str] = ("sample_id", "donor"),
    layer: tuple[str, str] = ("counts", "raw"),
    protein_modality: tuple[str, str] = ("protein", "adt"),
) -> Path:
    """The ``mdata.h5mu`` of ``folder`` written to ``out/mdata.h5mu`` under other names
    (each pair: ``(old, new)``): the RNA modality's obs column, its counts layer and the
    protein modality; the same cells in the same order. Returns the new file's path."""
    src, dst = Path(folder), Path(out)
    dst.mkdir(parents=True, exist_ok=True)
    mdata = mudata.read_h5mu(src / _DATA_FILE)
    mods = dict(mdata.mod)
    rna = mods["rna"]
    rna.obs = rna.obs.rename(columns={batch_key[0]: batch_key[1]})
    rna.layers[layer[1]] = rna.layers[layer[0]]
    del rna.layers[layer[0]]
    mods[protein_modality[1]] = mods.pop(protein_modality[0])
    for mod in mods.values():  # no copy of the old names left in the other modalities
        mod.obs = mod.obs.drop(columns=[batch_key[0]], errors="ignore")
    renamed = mudata.MuData(mods)
    renamed.write_h5mu(dst / _DATA_FILE)
    return dst / _DATA_FILE
