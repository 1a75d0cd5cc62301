"""Configuration dataclasses for the TotalVI module and its training loop.

Defaults follow scvi-tools' ``TOTALVI``/``TOTALVAE`` (see ``totalvi_spec.md`` §2.1, §4). The
``ModelVariant`` flags capture the numerical differences between scvi-tools versions so that a
checkpoint reproduces the version that trained it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

GeneDispersion = Literal["gene", "gene-batch", "gene-label", "gene-cell"]
ProteinDispersion = Literal["protein", "protein-batch", "protein-label"]
GeneLikelihood = Literal["nb", "zinb"]
Precision = Literal["auto", "32", "bf16-mixed", "tf32"]
LatentDistribution = Literal["normal", "ln"]
NormSetting = Literal["encoder", "decoder", "both", "none"]


@dataclass(frozen=True)
class ModelVariant:
    """Version-dependent numerics (spec §10); defaults are scvi-tools >= 1.3.1 behaviour."""

    bg_activation: Literal["exp", "softplus"] = "softplus"  # activation of the background std
    bg_beta_eps: float = 1e-8  # added to the background std (>= 1.2.2)
    encoder_input_mean_norm: bool = True  # x / (1 + mean x) before log (>= 1.3.1)
    use_efficiency: bool = True  # log_per_batch_efficiency parameter (>= 1.3.1)
    kl_weight_on_protein_rec: bool = True  # protein reconstruction multiplied by kl weight
    extra_background_penalties: bool = True  # LogNormal(0,1) on efficiency, 1e-3 softplus(-mixing)

    @classmethod
    def from_scvi_version(cls, version: str, *, bg_activation: str | None = None) -> ModelVariant:
        """Variant that reproduces scvi-tools ``version`` (e.g. ``"1.1.5"``, ``"1.4.2"``)."""
        major, minor, patch = _parse_version(version)
        v = (major, minor, patch)
        act = bg_activation or ("softplus" if v >= (1, 2, 0) else "exp")
        new = v >= (1, 3, 1)
        return cls(
            bg_activation=act,  # type: ignore[arg-type]
            bg_beta_eps=1e-8 if v >= (1, 2, 2) else 0.0,
            encoder_input_mean_norm=new,
            use_efficiency=new,
            kl_weight_on_protein_rec=new,
            extra_background_penalties=new,
        )


def _parse_version(version: str) -> tuple[int, int, int]:
    parts: list[int] = []
    for piece in str(version).split(".")[:3]:
        digits = ""
        for ch in piece:
            if not ch.isdigit():
                break
            digits += ch
        parts.append(int(digits) if digits else 0)
    while len(parts) < 3:
        parts.append(0)
    return parts[0], parts[1], parts[2]


@dataclass(frozen=True)
class TotalVIConfig:
    """Architecture of a TotalVAE; shapes come from the data (``n_genes`` ... ``n_labels``)."""

    n_genes: int
    n_proteins: int
    n_batch: int = 1
    n_labels: int = 1
    n_latent: int = 20
    n_hidden: int = 256
    n_layers_encoder: int = 2
    n_layers_decoder: int = 1
    dropout_rate_encoder: float = 0.2
    dropout_rate_decoder: float = 0.2
    gene_dispersion: GeneDispersion = "gene"
    protein_dispersion: ProteinDispersion = "protein"
    gene_likelihood: GeneLikelihood = "nb"
    latent_distribution: LatentDistribution = "normal"
    log_variational: bool = True
    encode_covariates: bool = True
    use_batch_norm: NormSetting = "both"
    use_layer_norm: NormSetting = "none"
    use_observed_lib_size: bool = True
    variant: ModelVariant = field(default_factory=ModelVariant)

    def to_dict(self) -> dict[str, Any]:
        """Plain-dict form for checkpoints (JSON-safe)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TotalVIConfig:
        """Inverse of :meth:`to_dict`; ignores unknown keys from newer versions."""
        d = dict(d)
        variant = ModelVariant(**d.pop("variant", {}))
        known = set(cls.__dataclass_fields__)
        return cls(variant=variant, **{k: v for k, v in d.items() if k in known})


@dataclass(frozen=True)
class TrainConfig:
    """Training settings; ``None`` values are derived from the data as scvi-tools does."""

    max_epochs: int | None = None  # None: min(400, round(20000 / n_cells * 400))
    lr: float = 4e-3
    weight_decay: float = 1e-6
    eps: float = 0.01
    batch_size: int = 256
    train_size: float = 0.9
    n_steps_kl_warmup: int | None = None  # None: int(0.75 * n_cells)
    n_epochs_kl_warmup: int | None = None  # used only if n_steps_kl_warmup is set to 0
    reduce_lr_on_plateau: bool = True
    lr_factor: float = 0.6
    lr_patience: int = 30
    early_stopping: bool = True
    early_stopping_patience: int = 45
    adversarial_classifier: bool | None = None  # None: on iff some protein is missing in a batch
    seed: int = 0
    device: str | None = None  # None: cuda if available, else cpu
    max_dense_bytes: int = 2 * 1024**3  # densify RNA on the device when it fits this budget
    # "bf16-mixed": the large matmuls (encoder input and hidden layers, the genes-wide
    # decoder head) run in bfloat16 during training on fp32 master weights; everything else
    # (norms, likelihoods, optimiser, validation, inference) stays float32. "auto" picks it
    # on CPUs with native bfloat16 dot products (AVX512-BF16 / AMX) and on CUDA devices
    # with bfloat16 (compute capability 8.0+), else "tf32" on CUDA (float32 tensors, TF32
    # tensor-core matmuls while training) and "32" on CPU.
    precision: Precision = "auto"

    def to_dict(self) -> dict[str, Any]:
        """Plain-dict form for checkpoints."""
        return asdict(self)
