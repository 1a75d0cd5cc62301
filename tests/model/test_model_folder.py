"""Model folders as scvi-tools, scvi-hub and a Hugging Face hub download leave them, and the
read options a checkpoint's registry gives (the seed's ``setup_mudata`` scenario)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from model.errors import CheckpointError, CiteSeqDataError
from model.model_folder import find_model_folders, locate_model
from model.read_options import ReadOptions
from model.totalvi import TotalVI

SEEDLIKE = "scvi_tools_1.4.2_mudata_seedlike_800"
PBMC300 = "scvi_tools_1.4.2_pbmc300x1000"
SEED_SETUP = {
    "rna_layer": "counts",
    "protein_layer": None,
    "batch_key": "sample_id",
    "panel_key": None,
    "modalities": {"rna_layer": "rna", "protein_layer": "protein", "batch_key": "rna"},
    "setup_method_name": "setup_mudata",
}


def hub_download(src: Path, cache: Path, repo: str = "scvi-tools/seedlike") -> Path:
    """The layout ``huggingface_hub.snapshot_download(cache_dir=cache)`` leaves: files in
    ``blobs/<hash>``, the snapshot's names as relative links into them, ``refs/main``."""
    owner, name = repo.split("/")
    root = cache / f"models--{owner}--{name}"
    revision = "0123456789abcdef0123456789abcdef01234567"
    snap = root / "snapshots" / revision
    (root / "blobs").mkdir(parents=True)
    snap.mkdir(parents=True)
    (root / "refs").mkdir()
    (root / "refs" / "main").write_text(revision)
    for i, f in enumerate(sorted(src.iterdir())):
        blob = root / "blobs" / f"{i:040x}"
        shutil.copyfile(f, blob)
        (snap / f.name).symlink_to(os.path.relpath(blob, snap))
    return root


# ----------------------------------------------------------------------- read options
def test_registry_of_setup_mudata_gives_the_seed_keys() -> None:
    o = ReadOptions.from_setup_args(SEED_SETUP)
    assert (o.layer, o.batch_key, o.labels_key) == ("counts", "sample_id", None)
    assert (o.rna_modality, o.protein_modality, o.batch_modality) == ("rna", "protein", "rna")
    kw = o.read_kwargs()
    assert kw["layer"] == "counts" and kw["key_modalities"] == {"batch_key": "rna"}


def test_registry_of_setup_anndata_and_constant_keys() -> None:
    o = ReadOptions.from_setup_args(
        {
            "layer": None,
            "batch_key": "batch",
            "labels_key": "_scvi_labels",  # scvi-tools' constant column: no labels
            "protein_expression_obsm_key": "protein_expression",
            "setup_method_name": "setup_anndata",
        }
    )
    assert o == ReadOptions(batch_key="batch", protein_obsm_key="protein_expression")
    assert ReadOptions.from_setup_args(None) == ReadOptions()


def test_flags_override_parts_and_empty_clears() -> None:
    o = ReadOptions.from_setup_args(SEED_SETUP)
    assert o.overridden() == o
    f = o.overridden(batch_key="donor", layer="raw", protein_key="adt", labels_key="cell_type")
    assert (f.batch_key, f.batch_modality, f.layer) == ("donor", None, "raw")
    assert f.protein_modality == "adt" and f.protein_obsm_key == "adt"
    assert f.labels_key == "cell_type" and f.rna_modality == "rna"
    cleared = o.overridden(batch_key="", layer="")
    assert cleared.batch_key is None and cleared.layer is None
    assert ReadOptions.from_dict(f.to_dict()) == f


def test_our_checkpoints_record_how_their_data_was_read(test_data, tmp_path) -> None:
    from model.read_options import OURS

    model = TotalVI.load(test_data / PBMC300)
    model.setup_args[OURS] = ReadOptions(batch_key="batch", layer="counts").to_dict()
    model.is_trained = True
    model.save(tmp_path / "m")
    back = TotalVI.load(tmp_path / "m")
    assert ReadOptions.from_setup_args(back.setup_args) == ReadOptions(
        batch_key="batch", layer="counts"
    )


# ------------------------------------------------------------------------ the folder
def test_scvi_tools_folder_with_its_data_opens_with_no_flag(test_data) -> None:
    folder = locate_model(test_data / SEEDLIKE)
    assert folder.data is not None and folder.data.name == "mdata.h5mu"
    assert folder.card is not None and folder.layout == "scvi-hub folder"
    model = TotalVI.load(folder.checkpoint)
    assert model.setup_args["modalities"]["batch_key"] == "rna"  # kept, not dropped
    data = ReadOptions.from_setup_args(model.setup_args).read(folder.data)
    assert data.n_batch == 17 and data.batch_key == "sample_id"
    model.attach_data(data)
    expected = np.load(test_data / SEEDLIKE / "expected_latent.npy")
    np.testing.assert_allclose(model.get_latent_representation(), expected, atol=1e-5)
    mask = data.protein_batch_mask
    assert mask is not None
    missing = {data.batch_categories[b] for b in np.flatnonzero(~mask.all(axis=1))}
    assert missing == {"s03", "s11"}
    assert (~mask[data.batch_categories.index("s03")]).sum() == 31  # ADT_80..ADT_110


def test_normalised_x_names_the_counts_layer(test_data) -> None:
    folder = locate_model(test_data / SEEDLIKE)
    with pytest.raises(CiteSeqDataError, match=r"non-integer.*--layer counts") as err:
        ReadOptions(batch_key="sample_id").read(folder.data)
    assert "\n" not in str(err.value)


def test_a_hub_download_opens_like_the_folder(test_data, tmp_path) -> None:
    repo = hub_download(test_data / SEEDLIKE, tmp_path / "hub")
    folder = locate_model(repo)
    assert folder.layout == "hub download" and folder.name == "scvi-tools/seedlike"
    assert folder.data is not None and folder.card is not None
    snapshot = locate_model(next((repo / "snapshots").iterdir()))
    assert snapshot.checkpoint.resolve() == folder.checkpoint.resolve()
    file = locate_model(folder.checkpoint)  # the snapshot's model.pt itself
    assert (file.data, file.card, file.layout) == (folder.data, folder.card, "hub download")
    model = TotalVI.load(repo)  # TotalVI.load takes the same folders
    assert model.config.n_batch == 17
    # a listing shows the repository once, not its snapshot or blobs
    found = find_model_folders(tmp_path)
    assert [f.root for f in found] == [repo]


def test_hub_cache_without_a_matching_ref_is_explained(test_data, tmp_path) -> None:
    repo = hub_download(test_data / SEEDLIKE, tmp_path / "hub")
    (repo / "refs" / "main").write_text("feedface")
    second = repo / "snapshots" / ("f" * 40)
    second.mkdir()
    with pytest.raises(CheckpointError, match="refs/main names no snapshot"):
        locate_model(repo)
    with pytest.raises(CheckpointError, match=r"a hub cache holding 1 models"):
        locate_model(tmp_path / "hub")


def test_links_out_of_the_folder_are_refused(test_data, tmp_path) -> None:
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    shutil.copyfile(test_data / SEEDLIKE / "mdata.h5mu", outside / "mdata.h5mu")
    folder = tmp_path / "models" / "m"
    folder.mkdir(parents=True)
    shutil.copyfile(test_data / SEEDLIKE / "model.pt", folder / "model.pt")
    (folder / "mdata.h5mu").symlink_to(outside / "mdata.h5mu")
    with pytest.raises(CheckpointError, match=r"mdata\.h5mu is a link that leads outside"):
        locate_model(folder)
    (folder / "mdata.h5mu").unlink()
    (folder / "model.pt").unlink()
    (folder / "model.pt").symlink_to(test_data / SEEDLIKE / "model.pt")
    with pytest.raises(CheckpointError, match=r"model\.pt is a link that leads outside"):
        locate_model(folder)
    assert find_model_folders(tmp_path / "models") == []  # not listed either


def test_missing_and_legacy_folders(tmp_path) -> None:
    with pytest.raises(CheckpointError, match="not found"):
        locate_model(tmp_path / "nope")
    (tmp_path / "model_params.pt").write_bytes(b"x")
    with pytest.raises(CheckpointError, match="legacy scvi-tools save"):
        locate_model(tmp_path)
