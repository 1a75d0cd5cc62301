"""The ``totalvi-explorer`` command line on real files: training, info, clear errors."""

from __future__ import annotations

import re

from dashboard.cli import main


def test_train_then_info_on_a_10x_folder(test_data, tmp_path, capsys) -> None:
    folder = test_data / "pbmc_10k_protein_v3_10x_mtx"
    out = tmp_path / "model"
    args = ["train", str(folder), "--max-epochs", "2", "--out", str(out), "--quiet"]
    code = main([*args, "--precision", "bf16-mixed"])
    printed = capsys.readouterr().out
    assert code == 0, printed
    assert "1024 cells, 100 genes, 17 proteins" in printed
    assert "on cpu (bf16-mixed)" in printed
    assert (out / "model.pt").is_file()
    assert main(["info", str(out), "--data", str(folder)]) == 0
    printed = capsys.readouterr().out
    assert "TotalVI(trained, 100 genes, 17 proteins" in printed
    # the history's loss (-ELBO, positive) and get_elbo (the ELBO, scvi-tools' sign): opposite
    # signs, same size (not equal: after 2 epochs the history's value still has the KL
    # warm-up weight in it; 6% apart here)
    loss = float(re.search(r"last elbo_validation (\d+\.\d+) \(per-cell loss", printed)[1])
    elbo = float(re.search(r"validation ELBO on .*: (-\d+\.\d+) per cell", printed)[1])
    assert elbo < 0 < loss and abs(-elbo - loss) / loss < 0.2, printed


def test_bad_input_gives_one_line_error_and_exit_2(tmp_path, capsys) -> None:
    bad = tmp_path / "broken.h5ad"
    bad.write_bytes(b"not an hdf5 file at all")
    assert main(["train", str(bad), "--out", str(tmp_path / "m")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "broken.h5ad" in err and "Traceback" not in err
    assert not (tmp_path / "m").exists()
    assert main(["info", str(tmp_path / "nothing")]) == 2
    assert "not found" in capsys.readouterr().err


def test_unknown_batch_key_is_named(test_data, tmp_path, capsys) -> None:
    path = test_data / "pbmc_10k_protein_v3_200cells.h5ad"
    assert main(["train", str(path), "--batch-key", "donor", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "donor" in err
