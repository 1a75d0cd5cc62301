"""Training a TotalVI on a registered dataset, saved atomically and registered with it.

A checkpoint is written only after training succeeds: an existing ``out_dir`` is overwritten
in place (its earlier checkpoint stays until then); a new one is written as a hidden sibling
folder (:func:`staging_folder`) and renamed into place, so it never exists half-written.
:func:`discard_partial_checkpoint` removes what an interrupted save left.
:func:`train_in_process` is the body of a training job in another process.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dashboard.backend.registry import Registry
from model.read_options import OURS

if TYPE_CHECKING:
    from dashboard.backend.jobs import JobContext
    from dashboard.backend.refs import DatasetRef, Pair
    from dashboard.backend.results import ProgressFn
    from dashboard.backend.settings import Settings
    from model.totalvi import TotalVI


class Training:
    """Trains models on the registry's datasets and registers the new pairs.

    Parameters
    ----------
    settings
        Seed and device.
    registry
        Where the dataset is read and the trained model registered.
    """

    def __init__(self, settings: Settings, registry: Registry) -> None:
        self.settings = settings
        self.registry = registry

    def train(
        self,
        dataset: DatasetRef,
        *,
        out_dir: str | os.PathLike[str],
        max_epochs: int | None = None,
        n_latent: int = 20,
        seed: int | None = None,
        module_kwargs: dict[str, Any] | None = None,
        progress: ProgressFn | None = None,
        should_stop: Callable[[], bool] | None = None,
        **train_overrides: Any,
    ) -> Pair:
        """Train a TotalVI on ``dataset``, save it to ``out_dir``, register the pair.

        The checkpoint is written only after training succeeds (atomically), so a failed or
        cancelled run leaves an earlier checkpoint in ``out_dir`` untouched; a new
        ``out_dir`` is written as a hidden sibling folder and renamed into place, so it never
        exists half-written. Cancellation (``should_stop``) raises
        ``model.train.TrainingCancelled``.
        """
        from model.totalvi import TotalVI  # torch

        data = self.registry.dataset(dataset)
        seed = self.settings.seed if seed is None else seed
        model = TotalVI(data, n_latent=n_latent, seed=seed, **(module_kwargs or {}))
        model.setup_args[OURS] = dataset.options.to_dict()  # how to read its data again
        overrides = dict(train_overrides)
        overrides["seed"] = seed
        if max_epochs is not None:
            overrides["max_epochs"] = max_epochs
        if self.settings.device is not None:
            overrides.setdefault("device", self.settings.device)

        def on_epoch(p: Any) -> None:
            if progress is not None:
                progress(
                    p.fraction,
                    f"epoch {p.epoch}/{p.max_epochs}  ELBO train {p.elbo_train:.1f}  "
                    f"validation {p.elbo_validation:.1f}",
                )

        model.train(progress=on_epoch, should_stop=should_stop, **overrides)
        out = save_checkpoint(model, out_dir)
        return self.registry.add_model(dataset, model, path=str(out), name=out.name)


def save_checkpoint(model: TotalVI, out_dir: str | os.PathLike[str]) -> Path:
    """Save a trained ``model`` to ``out_dir``; returns it. An existing folder's checkpoint
    is replaced; a new folder is written as a hidden sibling and renamed into place, so it
    never exists half-written."""
    out = Path(out_dir)
    if out.exists():
        model.save(out, overwrite=True)
        return out
    staging = staging_folder(out)
    discard_partial_checkpoint(out)  # a staging folder left by an earlier crash
    model.save(staging)
    try:
        staging.rename(out)
    except OSError:  # ``out`` appeared meanwhile: replace its checkpoint instead
        model.save(out, overwrite=True)
        discard_partial_checkpoint(out)
    return out


def train_in_process(
    ctx: JobContext, settings: Settings, dataset: DatasetRef, kwargs: dict[str, Any]
) -> dict[str, Any]:
    """Body of a training job in another process (a spawned child or a Celery worker):
    rebuild a registry and trainer from ``settings``, reread the dataset from its path,
    train, save (atomically) and return the new pair as a dict (the job's ``result``); what
    was loaded is dropped with them."""
    training = Training(settings, Registry(settings))
    ctx.progress(0.0, "reading the dataset")
    training.registry.dataset(dataset)
    ctx.check()
    pair = training.train(
        dataset,
        progress=lambda f, m: ctx.progress(0.02 + 0.98 * f, m),
        should_stop=ctx.cancelled,
        **kwargs,
    )
    return pair.to_dict()


def staging_folder(out: Path) -> Path:
    """Hidden sibling of ``out`` where a new checkpoint is written before it is renamed."""
    return out.parent / f".{out.name}.partial-{os.getpid()}"


def discard_partial_checkpoint(out_dir: str | os.PathLike[str]) -> None:
    """Remove what an interrupted save left for ``out_dir``: its staging folders, and
    temporary files in ``out_dir`` itself (which is removed when that leaves it empty)."""
    out = Path(out_dir)
    if out.parent.is_dir():
        for staging in out.parent.glob(f".{out.name}.partial-*"):
            shutil.rmtree(staging, ignore_errors=True)
    if out.is_dir():
        for tmp in out.glob(".model.*.tmp"):
            tmp.unlink(missing_ok=True)
        if not any(out.iterdir()):
            out.rmdir()
