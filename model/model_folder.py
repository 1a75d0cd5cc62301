"""Find what a model folder holds: the checkpoint, the data saved with it, its model card.

Three layouts open the same way (no download ever happens here):

* a folder saved by scvi-tools (``model.pt``, and with ``save_anndata=True`` its
  ``adata.h5ad`` or ``mdata.h5mu``) or by this project (``model.pt``);
* an scvi-hub folder: the same plus the model card ``README.md`` (and
  ``_scvi_required_metadata.json``);
* a local copy of a Hugging Face hub download: the repository's cache folder
  (``models--<owner>--<name>/`` with ``refs/``, ``snapshots/<revision>/`` and ``blobs/``; the
  snapshot's files are links into ``blobs/``), one of its snapshot folders, or a
  ``local_dir`` download.

Every file found must lie, links resolved, inside the folder given (for a hub cache, inside
the repository's cache folder): a link that leads elsewhere is refused, never followed.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from model.errors import CheckpointError

CHECKPOINT_FILE = "model.pt"
#: Data files scvi-tools writes beside ``model.pt`` (``save_anndata=True``), in the order tried.
DATA_FILES = ("mdata.h5mu", "adata.h5ad")
CARD_FILE = "README.md"
HUB_METADATA_FILE = "_scvi_required_metadata.json"
_HUB_REPO_PREFIX = "models--"


@dataclass(frozen=True)
class ModelFolder:
    """The files of one model folder (``data`` and ``card`` are ``None`` when absent)."""

    folder: Path
    checkpoint: Path
    data: Path | None = None
    card: Path | None = None
    layout: str = "model folder"  # "model folder", "scvi-hub folder", "hub download"
    root: Path | None = None  # the folder as given (a hub cache: the repository folder)

    @property
    def name(self) -> str:
        """A short name: the hub repository (``owner/name``) or the folder's name."""
        for part in reversed((self.root or self.folder).parts):
            if part.startswith(_HUB_REPO_PREFIX):
                return part[len(_HUB_REPO_PREFIX) :].replace("--", "/")
        return self.folder.name


def locate_model(path: str | os.PathLike[str]) -> ModelFolder:
    """The :class:`ModelFolder` at ``path`` (a folder, a hub cache folder or a ``model.pt``).

    Raises :class:`~model.errors.CheckpointError` with one line when there is no
    checkpoint, or when a file's link leads outside the folder.
    """
    p = Path(path)
    if p.is_file():
        folder, bound = (
            _snapshot(p.parent)
            if p.parent.parent.name == "snapshots"
            else (
                p.parent,
                p.parent,
            )
        )
        checkpoint = p
    elif p.is_dir():
        folder, bound = _snapshot(p)
        checkpoint = folder / CHECKPOINT_FILE
        if not checkpoint.is_file():
            _no_checkpoint(p, folder)
    else:
        msg = f"{p}: not found (no such model folder or checkpoint file)"
        raise CheckpointError(msg)
    _check_inside(checkpoint, bound, p)
    data = next((folder / n for n in DATA_FILES if (folder / n).is_file()), None)
    card = folder / CARD_FILE if (folder / CARD_FILE).is_file() else None
    for found in (data, card):
        if found is not None:
            _check_inside(found, bound, p)
    hub = bound != folder or (folder / HUB_METADATA_FILE).is_file()
    layout = (
        "hub download"
        if bound != folder
        else "scvi-hub folder"
        if hub or card
        else ("model folder")
    )
    return ModelFolder(folder, checkpoint, data, card, layout, root=bound)


def _snapshot(p: Path) -> tuple[Path, Path]:
    """``(folder holding the files, folder every file must lie in)`` for a given folder."""
    if p.parent.name == "snapshots" and p.parent.parent.name.startswith(_HUB_REPO_PREFIX):
        return p, p.parent.parent  # one snapshot of a hub cache: its links lead into blobs/
    if not (p / "snapshots").is_dir():
        return p, p
    snaps = sorted(q for q in (p / "snapshots").iterdir() if q.is_dir())
    revision = ""
    ref = p / "refs" / "main"
    if ref.is_file() and ref.stat().st_size < 256:
        revision = ref.read_text(encoding="ascii", errors="replace").strip()
    chosen = next((q for q in snaps if q.name == revision), None)
    if chosen is None and len(snaps) == 1:
        chosen = snaps[0]
    if chosen is None:
        listed = ", ".join(q.name[:12] for q in snaps[:5]) or "none"
        msg = (
            f"{p}: a hub cache folder whose refs/main names no snapshot here (snapshots: "
            f"{listed}); pass the snapshot folder itself"
        )
        raise CheckpointError(msg)
    return chosen, p


def _no_checkpoint(given: Path, folder: Path) -> None:
    repos = sorted(q.name for q in given.iterdir() if q.name.startswith(_HUB_REPO_PREFIX))
    if repos:
        msg = (
            f"{given}: a hub cache holding {len(repos)} models ({', '.join(repos[:5])}); "
            "pass one model's folder"
        )
        raise CheckpointError(msg)
    if (folder / "model_params.pt").is_file():
        msg = (
            f"{given}: legacy scvi-tools save (< 0.15, model_params.pt); convert it with "
            "scvi-tools' TOTALVI.convert_legacy_save first"
        )
        raise CheckpointError(msg)
    msg = f"{given}: no {CHECKPOINT_FILE} in this folder"
    raise CheckpointError(msg)


def _check_inside(file: Path, bound: Path, given: Path) -> None:
    real, root = file.resolve(), bound.resolve()
    if real != root and root not in real.parents:
        msg = (
            f"{given}: {file.name} is a link that leads outside the model folder; refused "
            "(copy the files into the folder)"
        )
        raise CheckpointError(msg)


def find_model_folders(root: str | os.PathLike[str], *, max_depth: int = 3) -> list[ModelFolder]:
    """The model folders under ``root`` (not following links out of it), sorted by path.

    A hub cache repository (``models--owner--name/``) is listed once, as the repository,
    not as each snapshot; its ``blobs/`` are not searched. Folders whose files lead outside
    ``root`` are left out.
    """
    base = Path(root)
    if not base.is_dir():
        return []
    found: dict[Path, ModelFolder] = {}
    for here, dirs, files in os.walk(base):
        rel = Path(here).relative_to(base)
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d != "blobs")
        if len(rel.parts) >= max_depth + 2 or (len(rel.parts) >= max_depth and not _in_hub(rel)):
            dirs[:] = []
        if CHECKPOINT_FILE not in files:
            continue
        where = Path(here)
        if where.parent.name == "snapshots" and where.parent.parent.name.startswith(
            _HUB_REPO_PREFIX
        ):
            where = where.parent.parent
        if where in found:
            continue
        try:
            folder = locate_model(where)
            _check_inside(folder.checkpoint, base, base)
        except CheckpointError:
            continue
        found[where] = folder
    return [found[k] for k in sorted(found)]


def _in_hub(rel: Path) -> bool:
    return any(part.startswith(_HUB_REPO_PREFIX) for part in rel.parts)
