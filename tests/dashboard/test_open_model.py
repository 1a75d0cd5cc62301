"""The service opens a model folder as its registry describes: registered labels become the
cell grouping and the model-card DE groups; read flags reach every command; RNA-only data
points to mapping."""

from __future__ import annotations

import shutil
from pathlib import Path

import anndata
import mudata
import numpy as np
import pandas as pd
import pytest
import scipy.io
import scipy.sparse as sp
import torch

from dashboard.backend.errors import DatasetNotFound, ModelDataMismatch
from dashboard.backend.mapping import is_rna_only, load_query_file
from dashboard.backend.service import AnalysisService
from dashboard.backend.settings import Settings
from dashboard.serve_config import load_serve_config
from model.data import read_cite_seq
from model.errors import CiteSeqDataError
from model.safe_pickle import load_checkpoint

SEEDLIKE = "scvi_tools_1.4.2_mudata_seedlike_800"


@pytest.fixture
def service(tmp_path) -> AnalysisService:
    svc = AnalysisService(Settings(cache_dir=tmp_path / "cache", model_dir=tmp_path / "models"))
    yield svc
    svc.close()


def with_registered_labels(src: Path, dst: Path, key: str = "cell_type") -> Path:
    """A copy of an scvi-tools folder whose registry says ``setup_mudata(labels_key=key)``
    (as the seed's curated cell types), rewritten as scvi-tools' own pickle layout."""
    shutil.copytree(src, dst)
    ck = load_checkpoint(dst / "model.pt")
    ck["attr_dict"]["registry_"]["setup_args"]["labels_key"] = key
    ck["attr_dict"]["registry_"]["setup_args"]["modalities"]["labels_key"] = "rna"
    torch.save(ck, dst / "model.pt")
    return dst


def test_registered_labels_are_the_default_grouping_and_the_de_metric_groups(
    service, test_data, tmp_path
) -> None:
    folder = with_registered_labels(test_data / SEEDLIKE, tmp_path / "labelled")
    pair = service.open_model(folder)
    assert pair.dataset.labels_key == "cell_type"
    data = service.dataset(pair)
    types = service.cell_types(pair)
    expected = data.obs["cell_type"].astype(str)
    assert (types.astype(str).to_numpy() == expected.to_numpy()).all()
    assert len(types.cat.categories) == 6  # the six simulated types, not Leiden clusters
    groups, why = service.metric_groups(pair)
    assert (groups.astype(str).to_numpy() == expected.to_numpy()).all()
    assert "registered labels, obs column 'cell_type'" in why


def test_a_folder_without_data_needs_data(service, test_data, tmp_path) -> None:
    folder = tmp_path / "bare"
    folder.mkdir()
    shutil.copyfile(test_data / SEEDLIKE / "model.pt", folder / "model.pt")
    with pytest.raises(DatasetNotFound, match=r"holds no data .*give the data"):
        service.open_model(folder)
    pair = service.open_model(folder, data=test_data / SEEDLIKE / "mdata.h5mu")
    assert service.dataset(pair).n_batch == 17


def test_data_that_does_not_match_the_registry_is_named(service, test_data, tmp_path) -> None:
    src = mudata.read_h5mu(test_data / SEEDLIKE / "mdata.h5mu")
    src.mod["rna"].obs["sample_id"] = src.mod["rna"].obs["sample_id"].astype(str) + "x"
    src.obs = src.obs.drop(columns=[c for c in src.obs.columns if "sample_id" in c])
    bad = tmp_path / "other_batches.h5mu"
    src.write(bad)
    with pytest.raises(ModelDataMismatch, match=r"batch categories \['s00x'"):
        service.open_model(test_data / SEEDLIKE, data=bad)
    with pytest.raises(DatasetNotFound, match=r"no obs column 'donor'.*--batch-key"):
        service.open_model(test_data / SEEDLIKE, flags={"batch_key": "donor"})


def test_serve_takes_read_keys_from_env_file_and_flags(tmp_path) -> None:
    config = tmp_path / "explorer.toml"
    config.write_text('layer = "counts"\nbatch_key = "sample_id"\n')
    env = {"TOTALVI_EXPLORER_PROTEIN_KEY": "adt"}
    c = load_serve_config({"batch_key": ""}, config_file=config, env=env)
    assert c.read_flags == {"layer": "counts", "batch_key": "", "protein_key": "adt"}
    assert c.origin["batch_key"] == "command line" and c.origin["layer"].startswith("file")


# --------------------------------------------------------------------------- RNA only
def _rna_only_h5ad(path: Path, obsm: dict | None = None) -> Path:
    rng = np.random.default_rng(0)
    ad = anndata.AnnData(
        X=rng.poisson(1.0, (6, 4)).astype(np.float32),
        obs=pd.DataFrame(index=[f"c{i}" for i in range(6)]),
        var=pd.DataFrame(index=[f"g{i}" for i in range(4)]),
    )
    for key, value in (obsm or {}).items():
        ad.obsm[key] = value
    ad.write_h5ad(path)
    return path


def test_rna_only_files_point_to_mapping(tmp_path) -> None:
    plain = _rna_only_h5ad(tmp_path / "rna.h5ad", {"X_umap": np.zeros((6, 2))})
    with pytest.raises(CiteSeqDataError, match="Map new data") as err:
        read_cite_seq(plain)
    assert "protein_obsm_key" not in str(err.value) and "\n" not in str(err.value)
    other = _rna_only_h5ad(tmp_path / "adt.h5ad", {"adt": np.ones((6, 3))})
    with pytest.raises(CiteSeqDataError, match=r"another key.*--protein-key.*Map new data"):
        read_cite_seq(other)
    md = mudata.MuData({"rna": anndata.read_h5ad(plain)})
    md.write(tmp_path / "rna.h5mu")
    with pytest.raises(CiteSeqDataError, match=r"no modality 'protein'.*Map new data"):
        read_cite_seq(tmp_path / "rna.h5mu")
    tenx = tmp_path / "filtered_feature_bc_matrix"
    tenx.mkdir()
    scipy.io.mmwrite(tenx / "matrix.mtx", sp.coo_matrix(np.arange(12).reshape(4, 3) % 3))
    (tenx / "features.tsv").write_text(
        "".join(f"ENSG{i}\tg{i}\tGene Expression\n" for i in range(4))
    )
    (tenx / "barcodes.tsv").write_text("".join(f"AAAC{i}-1\n" for i in range(3)))
    with pytest.raises(CiteSeqDataError, match=r"no 'Antibody Capture'.*Map new data"):
        read_cite_seq(tenx)
    # ... and "Map new data" reads each of them (RNA only: the model imputes the proteins)
    for path, n in ((plain, 6), (tmp_path / "rna.h5mu", 6), (tenx, 3)):
        query = load_query_file(path)
        assert is_rna_only(query) and query.n_cells == n, path


def test_a_labels_flag_decides_the_de_metric_groups_too(service, test_data, tmp_path) -> None:
    folder = with_registered_labels(test_data / SEEDLIKE, tmp_path / "labelled")
    pair = service.open_model(folder, flags={"labels_key": "sample_id"})
    groups, why = service.metric_groups(pair)
    data = service.dataset(pair)
    assert (groups.astype(str).to_numpy() == data.obs["sample_id"].astype(str).to_numpy()).all()
    assert why == (
        "the dataset's labels, obs column 'sample_id' (named when it was opened, instead of "
        "the registered 'cell_type')"
    )
