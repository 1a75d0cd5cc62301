"""The TotalVI training loop: Adam, step-based KL warm-up, LR plateau schedule, early stopping.

Settings follow scvi-tools' ``TOTALVI.train`` (spec §4). The data live on the device as whole
tensors and minibatches are index gathers, so there is no DataLoader in the hot loop.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, NamedTuple

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch
import torch.nn.functional as F

from model.config import TrainConfig
from model.distributions import NonZeroCounts
from model.module import TotalVAE
from model.nn import Classifier, one_hot, set_compute_dtype
from model.streams import Stream

if TYPE_CHECKING:
    from model.data import CiteSeqData


class TrainingCancelled(RuntimeError):
    """Raised inside :func:`train_module` when ``should_stop`` asks to stop."""


@dataclass(frozen=True)
class TrainProgress:
    """What a UI needs after each epoch."""

    epoch: int
    max_epochs: int
    elbo_train: float
    elbo_validation: float
    kl_weight: float
    lr: float
    seconds: float

    @property
    def fraction(self) -> float:
        """Share of the epoch budget done (early stopping may end sooner)."""
        return self.epoch / max(self.max_epochs, 1)


@dataclass
class TrainResult:
    """Per-epoch history and how training ended."""

    history: pd.DataFrame
    epochs: int
    stopped_early: bool
    seconds: float
    device: str
    precision: str = "32"
    extra: dict[str, float] = field(default_factory=dict)


def max_epochs_heuristic(n_cells: int) -> int:
    """scvi-tools' default: ``max(1, min(round(20000 / n * 400), 400))``."""
    return max(1, min(round(20000 / n_cells * 400), 400))


def split_indices(
    n_cells: int, *, train_size: float = 0.9, seed: int = 0, batch_size: int = 256
) -> tuple[np.ndarray, np.ndarray]:
    """Train/validation positions as scvi-tools' DataSplitter draws them (spec §4)."""
    if not 0 < train_size <= 1:
        msg = f"train_size must be in (0, 1], got {train_size}"
        raise ValueError(msg)
    n_train = math.ceil(train_size * n_cells)
    n_val = n_cells - n_train
    if n_train % batch_size in (1, 2):  # avoid a 1-2 cell last batch (BatchNorm)
        n_val += n_train % batch_size
        n_train -= n_train % batch_size
    perm = np.random.RandomState(seed).permutation(n_cells)
    return np.sort(perm[n_val : n_val + n_train]), np.sort(perm[:n_val])


def kl_weight_at(step: int, n_steps: int) -> float:
    """Linear KL warm-up from 0 to 1 over ``n_steps`` optimiser steps."""
    return 1.0 if n_steps <= 0 else min(1.0, step / n_steps)


def resolve_device(device: str | None) -> torch.device:
    """``cuda`` when available unless a device is named."""
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(device)


def cpu_has_native_bf16() -> bool:
    """True when the CPU has bfloat16 dot-product instructions (AVX512-BF16 or AMX)."""
    cpu = getattr(torch, "cpu", None)
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(bool(getattr(cpu, name, lambda: False)()) for name in checks)


def cuda_has_bf16(device: torch.device) -> bool:
    """True when the CUDA ``device`` computes bfloat16 matmuls natively (compute capability
    8.0 or later: A100, H100, H200, ...)."""
    if device.type != "cuda" or not torch.cuda.is_available():
        return False
    return torch.cuda.get_device_capability(device)[0] >= 8


def resolve_precision(precision: str, device: torch.device) -> str:
    """``"32"``, ``"bf16-mixed"`` or ``"tf32"`` for ``precision`` on ``device``.

    ``"auto"``: bf16-mixed where bfloat16 matmuls are native (CPUs with AVX512-BF16 / AMX,
    CUDA devices of compute capability 8.0+), where they are several times faster; on other
    CUDA devices ``"tf32"`` (float32 tensors, TensorFloat-32 matmuls while training); float32
    on other CPUs. ``"tf32"`` means nothing on a CPU and resolves to ``"32"`` there.
    """
    if precision not in ("auto", "32", "bf16-mixed", "tf32"):
        msg = f"precision must be 'auto', '32', 'bf16-mixed' or 'tf32', got {precision!r}"
        raise ValueError(msg)
    if precision == "auto":
        if device.type == "cuda":
            return "bf16-mixed" if cuda_has_bf16(device) else "tf32"
        return "bf16-mixed" if device.type == "cpu" and cpu_has_native_bf16() else "32"
    if precision == "tf32" and device.type != "cuda":
        return "32"
    return precision


@contextlib.contextmanager
def matmul_precision(precision: str) -> Iterator[None]:
    """Within the block, CUDA float32 matmuls and convolutions use TF32 tensor cores when
    ``precision`` is ``"tf32"``; the global flags are restored after (inference stays
    full float32)."""
    if precision != "tf32":
        yield
        return
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


class Minibatch(NamedTuple):
    """Rows of the training data: counts, batch codes and what the model reuses.

    ``x`` is ``None`` when the holder keeps the encoder input instead of dense counts (an
    NB model then reads only ``encoder_input``, ``library`` and the non-zeros).
    """

    x: torch.Tensor | None
    y: torch.Tensor
    batch: torch.Tensor
    lgamma_x_plus_1_sum: torch.Tensor
    nonzero: NonZeroCounts
    encoder_input: torch.Tensor | None = None
    library: torch.Tensor | None = None

    def model_inputs(self) -> dict[str, object]:
        """Keyword arguments of ``TotalVAE.forward`` besides the counts and batch."""
        return {
            "nonzero": self.nonzero,
            "encoder_input": self.encoder_input,
            "library": self.library,
        }


class DeviceData:
    """RNA, protein and batch tensors held on the device for index-gather minibatches.

    RNA is kept dense when it fits ``max_dense_bytes`` (else as a host CSR matrix whose rows
    are densified per minibatch); its non-zero structure is kept as well, so a minibatch
    comes with its non-zeros for the NB likelihood instead of a search through the dense rows.

    With ``encoder_input`` (the module's :meth:`~model.module.TotalVAE.encoder_input`), the
    dense case stores what the encoder reads and each cell's total count instead of
    recomputing them every step (normalising the counts is a handful of passes over a
    ``256 x genes`` block per step); the dense counts themselves are then dropped unless
    ``keep_x`` (a ZINB likelihood reads them).
    """

    def __init__(
        self,
        rna: sp.csr_matrix | np.ndarray,
        protein: np.ndarray,
        batch: np.ndarray,
        device: torch.device,
        max_dense_bytes: int = 2 * 1024**3,
        *,
        encoder_input: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
        keep_x: bool = True,
    ) -> None:
        self.device = device
        n, g = rna.shape
        csr = sp.csr_matrix(rna, dtype=np.float32)
        self._dense = n * g * 4 <= max_dense_bytes
        self.y = torch.as_tensor(np.asarray(protein, dtype=np.float32), device=device)
        self.enc = self.library = None
        if self._dense:
            self.x = torch.as_tensor(csr.toarray(), device=device)
            if encoder_input is not None:
                with torch.no_grad():
                    self.enc = encoder_input(self.x, self.y).contiguous()
                self.library = self.x.sum(1, keepdim=True)
                if not keep_x:
                    self.x = None
            self._csr = None
            self._indptr = torch.as_tensor(csr.indptr.astype(np.int64), device=device)
            self._indices = torch.as_tensor(csr.indices.astype(np.int32), device=device)
            self._values = torch.as_tensor(csr.data, device=device)
        else:
            self.x = None
            self._csr = csr
        self.batch = torch.as_tensor(np.asarray(batch, dtype=np.int64), device=device).view(-1, 1)
        self.lgamma_x1 = self._lgamma_x_plus_1_sum(csr)

    @classmethod
    def for_module(
        cls,
        module: TotalVAE,
        data: CiteSeqData,
        device: torch.device,
        max_dense_bytes: int = 2 * 1024**3,
    ) -> DeviceData:
        """The training data of ``data`` for ``module``: its encoder input stored per cell,
        dense counts kept only for a ZINB likelihood (the one that reads them)."""
        return cls(
            data.rna,
            data.protein,
            data.batch,
            device,
            max_dense_bytes,
            encoder_input=module.encoder_input,
            keep_x=module.config.gene_likelihood == "zinb",
        )

    def _lgamma_x_plus_1_sum(self, m: sp.csr_matrix) -> torch.Tensor:
        from scipy.special import gammaln

        vals = gammaln(m.data.astype(np.float64) + 1)
        per_cell = np.add.reduceat(vals, m.indptr[:-1]) if vals.size else np.zeros(m.shape[0])
        per_cell[np.diff(m.indptr) == 0] = 0.0
        return torch.as_tensor(per_cell, dtype=torch.float32, device=self.device)

    def _nonzero_rows(self, idx: torch.Tensor) -> NonZeroCounts:
        """Non-zeros of rows ``idx`` from the stored CSR arrays (minibatch row numbers)."""
        starts = self._indptr[idx]
        counts = self._indptr[idx + 1] - starts
        total = int(counts.sum())
        rows = torch.repeat_interleave(
            torch.arange(len(idx), device=self.device), counts, output_size=total
        )
        first_out = torch.cumsum(counts, 0) - counts  # where each row starts in the output
        pos = torch.arange(total, device=self.device) + (starts - first_out)[rows]
        return NonZeroCounts(rows, self._indices[pos], self._values[pos])

    def get(self, idx: torch.Tensor) -> Minibatch:
        """Rows ``idx`` with their sum of lgamma(x+1) and non-zeros."""
        if self._dense:
            x = None if self.x is None else self.x[idx]
            nonzero = self._nonzero_rows(idx)
            if self.enc is not None:
                return Minibatch(
                    x,
                    self.y[idx],
                    self.batch[idx],
                    self.lgamma_x1[idx],
                    nonzero,
                    self.enc[idx],
                    self.library[idx],
                )
        else:
            sub = self._csr[idx.cpu().numpy()]
            x = torch.as_tensor(sub.toarray(), device=self.device)
            rows = np.repeat(np.arange(sub.shape[0]), np.diff(sub.indptr))
            nonzero = NonZeroCounts(
                torch.as_tensor(rows, device=self.device),
                torch.as_tensor(sub.indices.astype(np.int32), device=self.device),
                torch.as_tensor(sub.data, device=self.device),
            )
        return Minibatch(x, self.y[idx], self.batch[idx], self.lgamma_x1[idx], nonzero)


def _adversarial_loss(
    classifier: Classifier, z: torch.Tensor, batch: torch.Tensor, n_batch: int, *, fool: bool
) -> torch.Tensor:
    logp = F.log_softmax(classifier(z), dim=-1)
    target = one_hot(batch, n_batch)
    if fool:
        target = (1 - target) / (n_batch - 1)
    return -(logp * target).sum(-1).mean()


@torch.no_grad()
def evaluate_elbo(
    module: TotalVAE, data: DeviceData, indices: np.ndarray, batch_size: int = 1024
) -> dict[str, float]:
    """Mean per-cell negative ELBO and its parts on ``indices`` (eval mode)."""
    was_training = module.training
    module.eval()
    totals = {"elbo": 0.0, "rec_gene": 0.0, "rec_protein": 0.0, "kl_z": 0.0, "kl_back": 0.0}
    idx_all = torch.as_tensor(indices, device=data.device)
    for start in range(0, len(indices), batch_size):
        idx = idx_all[start : start + batch_size]
        mb = data.get(idx)
        _, _, out = module(mb.x, mb.y, mb.batch, 1.0, mb.lgamma_x_plus_1_sum, **mb.model_inputs())
        totals["elbo"] += out.elbo_per_cell().sum().item()
        totals["rec_gene"] += out.rec_gene.sum().item()
        totals["rec_protein"] += out.rec_protein.sum().item()
        totals["kl_z"] += out.kl_z.sum().item()
        totals["kl_back"] += out.kl_back.sum().item()
    module.train(was_training)
    n = max(len(indices), 1)
    return {k: v / n for k, v in totals.items()}


def train_module(
    module: TotalVAE,
    data: DeviceData,
    train_idx: np.ndarray,
    val_idx: np.ndarray,
    cfg: TrainConfig,
    *,
    n_cells_total: int,
    use_adversarial: bool,
    progress: Callable[[TrainProgress], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> TrainResult:
    """Train ``module`` in place and return its per-epoch history.

    Raises :class:`TrainingCancelled` when ``should_stop()`` turns true (checked every step);
    the module then keeps the weights of the last finished step.
    """
    device = data.device
    precision = resolve_precision(cfg.precision, device)
    module.to(device).train()
    set_compute_dtype(module, torch.bfloat16 if precision == "bf16-mixed" else None)
    flags = contextlib.ExitStack()
    flags.enter_context(matmul_precision(precision))
    try:
        gen = torch.Generator(device="cpu").manual_seed(cfg.seed)
        # the draws of the steps (latent samples, dropout), on a stream of their own: a
        # pass on another thread does not change them (:mod:`model.streams`)
        stream = Stream(cfg.seed, device)
        max_epochs = cfg.max_epochs or max_epochs_heuristic(n_cells_total)
        n_steps_warmup = (
            int(0.75 * n_cells_total) if cfg.n_steps_kl_warmup is None else cfg.n_steps_kl_warmup
        )
        steps_per_epoch = math.ceil(len(train_idx) / cfg.batch_size)
        if n_steps_warmup == 0 and cfg.n_epochs_kl_warmup:
            n_steps_warmup = cfg.n_epochs_kl_warmup * steps_per_epoch
        params = [p for p in module.parameters() if p.requires_grad]
        opt = torch.optim.Adam(
            params, lr=cfg.lr, eps=cfg.eps, weight_decay=cfg.weight_decay, fused=True
        )
        sched = torch.optim.lr_scheduler.ReduceLROnPlateau(
            opt,
            mode="min",
            factor=cfg.lr_factor,
            patience=cfg.lr_patience,
            threshold=0.0,
            threshold_mode="abs",
            min_lr=0.0,
        )
        n_batch = module.config.n_batch
        classifier = None
        if use_adversarial and n_batch > 1:
            with stream.turn():  # its initial weights: the stream's first draws
                classifier = Classifier(module.config.n_latent, n_batch).to(device).train()
            opt_cls = torch.optim.Adam(
                classifier.parameters(), lr=1e-3, eps=0.01, weight_decay=cfg.weight_decay
            )
        train_t = torch.as_tensor(np.asarray(train_idx), dtype=torch.long)
        rows: list[dict[str, float]] = []
        best, bad_epochs, stopped_early, step = math.inf, 0, False, 0
        t0 = time.perf_counter()
        for epoch in range(1, max_epochs + 1):
            t_epoch = time.perf_counter()
            perm = train_t[torch.randperm(len(train_t), generator=gen)].to(device)
            elbo_sum, loss_sum, n_seen = 0.0, 0.0, 0
            for start in range(0, len(perm), cfg.batch_size):
                if should_stop is not None and should_stop():
                    raise TrainingCancelled(f"training cancelled at epoch {epoch}")
                with stream.turn():
                    idx = perm[start : start + cfg.batch_size]
                    mb = data.get(idx)
                    b = mb.batch
                    kl_w = kl_weight_at(step, n_steps_warmup)
                    inf, _, out = module(
                        mb.x, mb.y, b, kl_w, mb.lgamma_x_plus_1_sum, **mb.model_inputs()
                    )
                    loss = out.loss
                    if classifier is not None:
                        kappa = 1.0 - kl_w
                        loss = loss + kappa * _adversarial_loss(
                            classifier, inf.z, b, n_batch, fool=True
                        )
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                    step += 1
                    if classifier is not None:
                        kappa = 1.0 - kl_w
                        cls_loss = kappa * _adversarial_loss(
                            classifier, inf.z.detach(), b, n_batch, fool=False
                        )
                        opt_cls.zero_grad(set_to_none=True)
                        cls_loss.backward()
                        opt_cls.step()
                        step += 1  # Lightning counts both optimisers' steps
                    with torch.no_grad():
                        elbo_sum += out.elbo_per_cell().sum().item()
                        loss_sum += out.loss.item() * len(idx)
                        n_seen += len(idx)
            with stream.turn():
                val = evaluate_elbo(module, data, val_idx) if len(val_idx) else None
            elbo_val = val["elbo"] if val else math.nan
            lr = opt.param_groups[0]["lr"]
            row = {
                "epoch": epoch,
                "elbo_train": elbo_sum / max(n_seen, 1),
                "train_loss": loss_sum / max(n_seen, 1),
                "elbo_validation": elbo_val,
                "reconstruction_loss_validation": (val["rec_gene"] + val["rec_protein"])
                if val
                else math.nan,
                "kl_local_validation": (val["kl_z"] + val["kl_back"]) if val else math.nan,
                "kl_weight": kl_weight_at(step, n_steps_warmup),
                "lr": lr,
                "seconds": time.perf_counter() - t_epoch,
            }
            rows.append(row)
            if progress is not None:
                progress(
                    TrainProgress(
                        epoch,
                        max_epochs,
                        row["elbo_train"],
                        elbo_val,
                        row["kl_weight"],
                        lr,
                        time.perf_counter() - t0,
                    )
                )
            if val is None:
                continue
            if cfg.reduce_lr_on_plateau:
                sched.step(elbo_val)
            if elbo_val < best:
                best, bad_epochs = elbo_val, 0
            else:
                bad_epochs += 1
            if cfg.early_stopping and bad_epochs >= cfg.early_stopping_patience:
                stopped_early = True
                break
        module.eval()
        result = TrainResult(
            history=pd.DataFrame(rows),
            epochs=len(rows),
            stopped_early=stopped_early,
            seconds=time.perf_counter() - t0,
            device=str(device),
        )
    finally:
        set_compute_dtype(module, None)  # inference and later use are float32
        flags.close()  # TF32 off again
    result.precision = precision
    return result
