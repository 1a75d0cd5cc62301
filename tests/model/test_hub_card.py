"""scvi-hub model cards read back: our own generated markdown (round trip), the layout of
scvi-tools' template, the flattened card of tests/data, and crafted inputs."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from dashboard.backend.metrics import (
    CV_ROWS,
    DE_COLUMNS,
    MetricsResult,
    model_card_markdown,
)
from model.hub_card import HubCard, ModelCardError, parse_model_card, read_model_card

SEEDLIKE = Path(__file__).resolve().parents[1] / "data" / "scvi_tools_1.4.2_mudata_seedlike_800"

FRONT = """---
library_name: scvi-tools
license: cc-by-4.0
tags:
- biology
- genomics
- single-cell
- model_cls_name:TOTALVI
- scvi_version:1.4.2
- anndata_version:0.11.4
- modality:rna
- modality:protein
- tissue:blood
- annotated:True
---
"""

PROPERTIES = {
    "model_parameters": {"n_latent": 10, "gene_likelihood": "nb", "n_hidden": 64},
    "setup_arguments": {"layer": None, "batch_key": "batch", "modalities": {"rna": "rna"}},
    "data_registry": {"X": "adata.X", "proteins": "adata.obsm['protein_expression']"},
    "summary_statistics": {"n_cells": 1500, "n_vars": 1017, "n_proteins": 14, "n_batch": 2},
}


def _cv(values: list[float], validation: bool) -> pd.DataFrame:
    cols = {"Training Value": values}
    if validation:
        cols["Validation Value"] = [v + 0.011 for v in values]
    frame = pd.DataFrame(cols, index=list(CV_ROWS))
    frame.index.name = "Metric"
    return frame


def _de(types: list[str], seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(rng.uniform(0, 1, (len(types), len(DE_COLUMNS) - 1)), index=types)
    frame.columns = list(DE_COLUMNS[:-1])
    frame.loc[types[-1], "roc_auc"] = np.nan  # undefined: written "nan"
    frame["n_cells"] = np.array([400, 250, 30][: len(types)], dtype=np.int64)
    frame.index.name = "group"
    return frame


def made_up_metrics() -> MetricsResult:
    result = MetricsResult()
    for mod, seed in (("rna", 1), ("protein", 2)):
        result.cell_wise_cv[mod] = _cv([0.123, 0.914, 0.876, -0.25], validation=True)
        result.gene_wise_cv[mod] = _cv([0.0456, 0.97, 0.95, 0.9], validation=False)
        result.diff_exp[mod] = _de(["CD14+ monocytes", "B cells", "NK cells"], seed)
    return result


def full_card(metrics: MetricsResult | None) -> str:
    """Our generated sections wrapped in the template's front matter and headings."""
    body = model_card_markdown(PROPERTIES, None if metrics is None else metrics.markdown())
    return (
        FRONT
        + "\nTotalVI is a variational inference model ...\n\n# Model Description\n\n"
        + "A small model of PBMC.\nSecond line.\n\n"
        + body
        + "\n- **Data is Minified**: False\n\n"
        + "**Training data url**: https://example.org/pbmc.h5ad\n\n"
        + "**Training Code URL**: Not provided by uploader\n\n# References\n\nGayoso 2021.\n"
    )


def test_round_trip_of_our_generated_card() -> None:
    metrics = made_up_metrics()
    card = parse_model_card(full_card(metrics), source="README.md")
    assert card.notes == ()
    assert card.model_parameters == PROPERTIES["model_parameters"]
    assert card.setup_arguments == PROPERTIES["setup_arguments"]
    assert card.data_registry == PROPERTIES["data_registry"]
    assert card.summary_statistics == PROPERTIES["summary_statistics"]
    assert all(isinstance(v, int) for v in card.summary_statistics.values())
    assert card.data_is_minified is False
    assert card.training_data_url == "https://example.org/pbmc.h5ad"
    assert card.training_code_url is None
    assert card.description == "A small model of PBMC. Second line."
    assert card.license == "cc-by-4.0" and card.library_name == "scvi-tools"
    assert card.model_cls_name == "TOTALVI" and card.scvi_version == "1.4.2"
    assert card.tags["modality"] == ("rna", "protein") and card.tags["biology"] == ()
    assert card.has_metrics
    for mod in ("rna", "protein"):
        for got, want in (
            (card.cell_wise_cv[mod], metrics.cell_wise_cv[mod]),
            (card.gene_wise_cv[mod], metrics.gene_wise_cv[mod]),
            (card.diff_exp[mod], metrics.diff_exp[mod]),
        ):
            assert list(got.index) == list(want.index)
            assert list(got.columns) == list(want.columns)
            assert all(got[c].dtype == np.float64 for c in got.columns)
            # the card writes two decimals (f"{v:.2f}"): equal to what was written
            written = want.astype(float).map(lambda v: float(f"{v:.2f}"))
            np.testing.assert_allclose(got.to_numpy(), written.to_numpy(), atol=1e-12)
    assert card.cell_wise_cv["rna"].index.name == "Metric"
    assert np.isnan(card.diff_exp["rna"].iloc[-1]["roc_auc"])
    assert card.diff_exp["protein"]["n_cells"].tolist() == [400.0, 250.0, 30.0]


def test_card_without_metrics() -> None:
    card = parse_model_card(full_card(None))
    assert not card.has_metrics
    assert card.cell_wise_cv == {} and card.gene_wise_cv == {} and card.diff_exp == {}
    assert card.model_parameters["n_latent"] == 10
    assert card.notes == ()


def template_card(metrics: MetricsResult) -> str:
    """The layout of scvi-tools' hub template: sections under <details><summary> tags."""
    md = metrics.markdown()
    params = json.dumps(PROPERTIES["model_parameters"], indent=4)
    setup = json.dumps(PROPERTIES["setup_arguments"], indent=4)
    return f"""{FRONT}
# Model Description

Trained on blood.

# Metrics

We provide here key performance metrics for the uploaded model, if provided by the data uploader.

<details>
<summary><strong>Coefficient of variation</strong></summary>

The cell-wise coefficient of variation summarizes how well variation between different cells is
preserved by the generated model expression.

**Cell-wise Coefficient of Variation**:

{md["cell_wise_cv"]}

The gene-wise coefficient of variation summarizes how well variation between different genes is
preserved by the generated model expression. This value is usually quite high.

**Gene-wise Coefficient of Variation**:

{md["gene_wise_cv"]}

</details>

<details>
<summary><strong>Differential expression metric</strong></summary>

The differential expression metric provides a summary of the differential expression analysis.

**Differential expression**:

{md["diff_exp"]}

</details>

# Model Properties

<details>
<summary><strong>Model Parameters</strong></summary>

These provide the settings to setup the original model:
```json
{params}
```

</details>

<details>
<summary><strong>Setup Data Arguments</strong></summary>

Arguments passed to setup_anndata of the original model:
```json
{setup}
```

</details>

<details>
<summary><strong>Data Registry</strong></summary>

Registry elements for AnnData manager:
| Registry Key | scvi-tools Location |
|--------------|---------------------|
| X            | adata.X             |

- **Data is Minified**: True

</details>

<details>
<summary><strong>Summary Statistics</strong></summary>

| Summary Stat Key | Value |
|------------------|-------|
| n_batch          | 3     |
| n_cells          | 12000 |
| n_latent_qzm     | 10    |

</details>

<details>
<summary><strong>Training</strong></summary>

<!-- a comment -->
**Training data url**: Not provided by uploader

**Training Code URL**: https://github.com/example/train.py

</details>

# References

Gayoso et al.
"""


def test_template_layout() -> None:
    metrics = made_up_metrics()
    card = parse_model_card(template_card(metrics))
    assert card.notes == ()
    assert card.model_parameters == PROPERTIES["model_parameters"]
    assert card.setup_arguments["modalities"] == {"rna": "rna"}
    assert card.data_registry == {"X": "adata.X"}
    assert card.data_is_minified is True
    assert card.summary_statistics == {"n_batch": 3, "n_cells": 12000, "n_latent_qzm": 10}
    assert card.training_data_url is None
    assert card.training_code_url == "https://github.com/example/train.py"
    assert card.description == "Trained on blood."
    assert set(card.cell_wise_cv) == set(card.gene_wise_cv) == {"rna", "protein"}
    assert card.cell_wise_cv["protein"].loc["Mean Absolute Error", "Validation Value"] == 0.13
    assert list(card.diff_exp["rna"].columns) == list(DE_COLUMNS)


def test_a_readme_of_another_kind_is_empty() -> None:
    assert parse_model_card("# My model\n\nSome notes | with a pipe.\n").is_empty
    assert not parse_model_card(full_card(None)).is_empty


def test_metric_table_without_modality_line_is_rna() -> None:
    text = (
        "**Gene-wise Coefficient of Variation**:\n\n"
        "| Metric | Training Value |\n|---|---|\n| Pearson Correlation | 0.91 |\n"
        "| Spearman Correlation | – |\n"
    )
    card = parse_model_card(text)
    table = card.gene_wise_cv["rna"]
    assert table.loc["Pearson Correlation", "Training Value"] == 0.91
    assert np.isnan(table.loc["Spearman Correlation", "Training Value"])


def test_flattened_seedlike_card() -> None:
    card = read_model_card(SEEDLIKE / "README.md")
    assert isinstance(card, HubCard)
    assert card.model_parameters["n_latent"] == 20
    assert card.setup_arguments["batch_key"] == "sample_id"
    assert card.setup_arguments["modalities"] == {
        "rna_layer": "rna",
        "protein_layer": "protein",
        "batch_key": "rna",
    }
    assert card.summary_statistics == {
        "n_batch": 17,
        "n_cells": 800,
        "n_proteins": 111,
        "n_vars": 500,
    }
    assert not card.has_metrics
    assert card.description == "Simulated cells of 6 types."
    assert card.notes == ()
    assert card.source.endswith("README.md")


# ---------------------------------------------------------------------------- crafted
def test_huge_card_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "README.md"
    path.write_bytes(b"x" * 2_000)
    with pytest.raises(ModelCardError, match=r"README\.md: model card over the 1,000-byte limit"):
        read_model_card(path, max_bytes=1_000)
    assert read_model_card(path, max_bytes=2_000).model_parameters == {}


def test_non_utf8_card_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "README.md"
    path.write_bytes(b"# Model Description\n\xff\xfe caf\xe9\n")
    with pytest.raises(ModelCardError) as err:
        read_model_card(path)
    message = str(err.value)
    assert "README.md" in message and "not UTF-8" in message and "\n" not in message
    assert isinstance(err.value, ValueError)


def test_broken_json_leaves_the_section_empty_with_a_note() -> None:
    text = (
        '**Model Parameters**:\n```json\n{"n_latent": 10, "x": tru}\n```\n'
        '**Setup Data Arguments**:\n```json\n{"batch_key": "batch"\n```\n'
        "**Summary Statistics**:\n| Summary Stat Key | Value |\n|---|---|\n| n_cells | 5 |\n"
    )
    card = parse_model_card(text)
    assert card.model_parameters == {} and card.setup_arguments == {}
    assert any(n.startswith("model parameters: invalid JSON") for n in card.notes)
    assert any(n.startswith("setup arguments: the JSON object is not closed") for n in card.notes)
    assert card.summary_statistics == {"n_cells": 5}  # the rest still read


def test_deep_json_is_refused_not_recursed() -> None:
    text = "Model Parameters\n" + "[" * 50_000 + "{" * 50_000
    card = parse_model_card(text)
    assert card.model_parameters == {} and card.notes


@pytest.mark.parametrize(
    "text",
    [
        "|" * 100_000,
        "Summary Statistics\n" + "|" * 100_000 + "\n" + "|" * 100_000,
        "Differential expression\n" + "| a |\n" * 60_000,
        "**Cell-wise Coefficient of Variation**:\n" + "| x " * 30_000 + "|\n|---|\n| 1 |\n",
        "<" * 100_000 + "\nModel Parameters\n" + '"\\' * 50_000,
        "---\n" + "a: &a [1]\n" * 10 + "tags: [" + ",".join(["*a"] * 1000) + "]\n---\n",
        "```\n" * 50_001,
        "Data Registry:\n" + "| k | v |\n" * 100 + "**" * 50_000,
    ],
)
def test_crafted_text_completes_quickly(text: str) -> None:
    t0 = time.perf_counter()
    card = parse_model_card(text)
    assert time.perf_counter() - t0 < 2.0
    assert isinstance(card, HubCard)


def test_bad_front_matter_falls_back() -> None:
    text = "---\nlicense: mit\ntags:\n- model_cls_name:TOTALVI\nbad: [unclosed\n---\n"
    card = parse_model_card(text)
    assert card.license == "mit"
    assert card.model_cls_name == "TOTALVI"
    assert any("front matter" in n for n in card.notes)
