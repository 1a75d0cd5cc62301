"""Load checkpoints saved by scvi-tools (``model.pt``, 0.15 to 1.4, scvi-hub TOTALVI models).

The state-dict keys of :class:`~model.module.TotalVAE` are scvi-tools' own, so loading is
mostly rebuilding the architecture from the saved registry and ``init_params_`` and picking
the numerics of the scvi-tools version that trained the model (spec §6, §10). The result is
a :class:`~model.checkpoint.SavedModel`, which :meth:`model.totalvi.TotalVI.load` wraps.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from model.checkpoint import SavedModel, plain_setup_args
from model.config import ModelVariant, TotalVIConfig
from model.errors import CheckpointError
from model.module import TotalVAE
from model.safe_pickle import UnsafeCheckpointError, load_checkpoint

_MODEL_KWARGS = {
    "n_hidden",
    "n_layers_encoder",
    "n_layers_decoder",
    "dropout_rate_encoder",
    "dropout_rate_decoder",
    "encode_covariates",
    "use_batch_norm",
    "use_layer_norm",
    "use_observed_lib_size",
    "log_variational",
    "gene_dispersion",
    "protein_dispersion",
    "gene_likelihood",
    "latent_distribution",
    "n_latent",
}
_IGNORED_KWARGS = {
    "protein_background_prior_mean",
    "protein_background_prior_scale",
    "empirical_protein_background_prior",
    "override_missing_proteins",
    "extra_encoder_kwargs",
    "extra_decoder_kwargs",
    "use_cuda",
}


def read_scvi_tools_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a scvi-tools ``model.pt`` without executing code; checks its top-level layout."""
    try:
        ck = load_checkpoint(path)
    except UnsafeCheckpointError as err:
        raise CheckpointError(str(err)) from None
    except Exception as err:
        reason = " ".join(str(err).split())
        msg = f"{os.fspath(path)}: not a readable checkpoint ({type(err).__name__}: {reason})"
        raise CheckpointError(msg) from None
    if not isinstance(ck, dict) or "model_state_dict" not in ck or "attr_dict" not in ck:
        keys = list(ck)[:5] if isinstance(ck, dict) else type(ck).__name__
        msg = (
            f"{os.fspath(path)}: not a TotalVI checkpoint (expected scvi-tools' "
            f"model_state_dict/attr_dict/var_names, found {keys})"
        )
        raise CheckpointError(msg)
    return ck


def from_scvi_tools_checkpoint(ck: dict[str, Any], *, source: str | Path = "") -> SavedModel:
    """The model in a scvi-tools checkpoint dict (see :func:`read_scvi_tools_checkpoint`)."""
    src = os.fspath(source)
    attr = ck["attr_dict"]
    registry = attr.get("registry_") or {}
    model_name = registry.get("model_name")
    if model_name != "TOTALVI":
        msg = f"{src}: this is a scvi-tools {model_name or 'unknown'} model, not TOTALVI"
        raise CheckpointError(msg)
    version = str(registry.get("scvi_version", "0.0.0"))
    fields = registry.get("field_registries", {})

    def stats(name: str) -> dict[str, Any]:
        return dict((fields.get(name) or {}).get("summary_stats") or {})

    def state(name: str) -> dict[str, Any]:
        return dict((fields.get(name) or {}).get("state_registry") or {})

    n_cat = stats("extra_categorical_covs").get("n_extra_categorical_covs", 0)
    n_cont = stats("extra_continuous_covs").get("n_extra_continuous_covs", 0)
    if n_cat or n_cont:
        msg = (
            f"{src}: models with extra covariates ({n_cat} categorical, {n_cont} continuous) "
            "are not supported yet"
        )
        raise CheckpointError(msg)
    if (fields.get("size_factor") or {}).get("data_registry"):
        msg = f"{src}: models trained with a size_factor_key are not supported"
        raise CheckpointError(msg)
    panel_key = (registry.get("setup_args") or {}).get("panel_key")
    if panel_key and panel_key != (registry.get("setup_args") or {}).get("batch_key"):
        msg = f"{src}: models with a separate panel_key ({panel_key!r}) are not supported"
        raise CheckpointError(msg)

    init = attr.get("init_params_") or {}
    if "non_kwargs" in init:
        params = {**init.get("non_kwargs", {}), **init.get("kwargs", {}).get("model_kwargs", {})}
    else:  # very old flat layout
        params = {k: v for k, v in init.items() if k not in ("adata", "self")}
    unknown = set(params) - _MODEL_KWARGS - _IGNORED_KWARGS
    if unknown:
        msg = f"{src}: unsupported TOTALVI arguments {sorted(unknown)}"
        raise CheckpointError(msg)
    decoder_kwargs = params.get("extra_decoder_kwargs") or {}
    variant = ModelVariant.from_scvi_version(
        version, bg_activation=decoder_kwargs.get("activation_function_bg")
    )
    sd = dict(ck["model_state_dict"])
    sd.pop("pyro_param_store", None)
    bad = [k for k, v in sd.items() if not isinstance(v, torch.Tensor)]
    if bad:
        msg = f"{src}: state dict entries are not tensors: {bad[:5]}"
        raise CheckpointError(msg)
    if variant.use_efficiency and "log_per_batch_efficiency" not in sd:
        alpha = sd.get("background_pro_alpha")
        if alpha is not None:
            sd["log_per_batch_efficiency"] = torch.zeros_like(alpha)

    var_names, protein_names = _feature_names(ck, registry, state("proteins"), src)
    batch_cats = [str(c) for c in state("batch").get("categorical_mapping", ["0"])]
    n_batch = int(stats("batch").get("n_batch", len(batch_cats)))
    kwargs = {k: params[k] for k in _MODEL_KWARGS if k in params and params[k] is not None}
    try:
        config = TotalVIConfig(
            n_genes=len(var_names),
            n_proteins=len(protein_names),
            n_batch=n_batch,
            n_labels=int(stats("labels").get("n_labels", 1)),
            variant=variant,
            **kwargs,
        )
    except TypeError as err:
        raise CheckpointError(f"{src}: {err}") from None
    mask = None
    raw_mask = state("proteins").get("protein_batch_mask")
    if raw_mask is not None and not params.get("override_missing_proteins", False):
        mask = np.stack([np.asarray(raw_mask[str(b)], dtype=bool) for b in range(n_batch)])
    lib_kwargs = {}
    if not config.use_observed_lib_size:
        lib_kwargs = {
            "library_log_means": sd["library_log_means"].numpy(),
            "library_log_vars": sd["library_log_vars"].numpy(),
        }
    module = TotalVAE(config, protein_batch_mask=mask, **lib_kwargs)
    try:
        module.load_state_dict(sd, strict=True)
    except RuntimeError as err:
        first = str(err).splitlines()[:4]
        msg = f"{src}: weights do not match the architecture in its registry: {' '.join(first)}"
        raise CheckpointError(msg) from None
    indices = {}
    for ours, theirs in (
        ("train_indices", "train_indices_"),
        ("validation_indices", "validation_indices_"),
    ):
        value = attr.get(theirs)
        indices[ours] = None if value is None else np.asarray(value, dtype=np.int64)
    setup_args = plain_setup_args(registry.get("setup_args") or {})
    setup_args["setup_method_name"] = registry.get("setup_method_name")
    return SavedModel(
        module,
        var_names=var_names,
        protein_names=protein_names,
        batch_categories=batch_cats,
        protein_batch_mask=mask,
        **indices,
        history=_history(attr.get("history_")),
        is_trained=bool(attr.get("is_trained_", True)),
        source=f"scvi-tools {version}",
        setup_args=setup_args,
    )


def _feature_names(
    ck: dict[str, Any], registry: dict[str, Any], protein_state: dict[str, Any], src: str
) -> tuple[list[str], list[str]]:
    var_names = ck.get("var_names")
    proteins = protein_state.get("column_names")
    if isinstance(var_names, dict):
        modalities = (registry.get("setup_args") or {}).get("modalities") or {}
        rna_mod = modalities.get("rna_layer", "rna")
        pro_mod = modalities.get("protein_layer", "protein")
        if rna_mod not in var_names:
            msg = f"{src}: var_names has no RNA modality {rna_mod!r} (has {list(var_names)})"
            raise CheckpointError(msg)
        genes = [str(v) for v in var_names[rna_mod]]
        if proteins is None and pro_mod in var_names:
            proteins = var_names[pro_mod]
    else:
        genes = [str(v) for v in np.asarray(var_names)]
    if proteins is None:
        msg = f"{src}: the registry lists no protein names"
        raise CheckpointError(msg)
    return genes, [str(p) for p in np.asarray(proteins)]


def _history(history: Any) -> pd.DataFrame:
    if not isinstance(history, dict):
        return pd.DataFrame()
    cols = {}
    for key in ("elbo_train", "elbo_validation", "train_loss", "train_loss_epoch", "lr-Adam"):
        frame = history.get(key)
        if isinstance(frame, pd.DataFrame) and frame.shape[1] >= 1:
            name = {"lr-Adam": "lr", "train_loss_epoch": "train_loss"}.get(key, key)
            cols[name] = frame.iloc[:, 0].astype(float).to_numpy()
    if not cols:
        return pd.DataFrame()
    n = max(len(v) for v in cols.values())
    out = pd.DataFrame(
        {k: np.pad(v, (0, n - len(v)), constant_values=np.nan) for k, v in cols.items()}
    )
    out.insert(0, "epoch", np.arange(1, n + 1))
    return out
