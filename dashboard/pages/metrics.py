"""Model metrics: the scvi-hub model card's tables and plots for the active model.

Model parameters, setup arguments, summary statistics and the training curves show at once.
The card's metrics (cell-wise and gene-wise coefficient of variation, DE agreement per cell
type, for RNA and protein) need posterior predictive samples: they are computed in a
background job with a progress bar the first time they are asked for, then read from the
results cache.

When the model folder holds an scvi-hub model card (``README.md``), a "Model card" section
shows what it says (parameters, setup arguments, summary statistics beside this data) and each
metric table of the card is shown with ours and the difference. Minified data (counts
dropped, latent posterior kept) cannot give the metrics: the page says so and shows the
card's tables alone, without starting the job.

With two batches or more, "Integration (scib-metrics)" computes the integration scorecard on
request (:mod:`dashboard.pages._integration`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from dash import Input, Output, callback, dcc, html, no_update

from dashboard import components, figures, ids
from dashboard.pages import _integration, _jobs
from dashboard.pages import _shared as sh
from dashboard.views.errors import BackendError
from dashboard.views.label_sets import grouping_choices, grouping_key
from dashboard.views.metrics import (
    CALIBRATION_CELLS,
    CALIBRATION_PROTEIN_CELLS,
    CALIBRATION_SAMPLES,
    EFFICIENCY_FREE,
    MEASURED,
    PROTEIN_SCALES,
    WHY_SCALES_DIFFER,
    card_text,
    checked_labels_key,
    compare_summary,
    compare_tables,
    cv_advice,
    cv_display_table,
    de_top_note,
    history_note,
    is_minified,
    model_card,
    submit_metrics,
)
from dashboard.views.state import active

if TYPE_CHECKING:
    import pandas as pd

    from dashboard.backend.refs import Pair
    from dashboard.backend.service import AnalysisService
    from model.hub_card import HubCard

sh.register_page(__name__, "/metrics", "Model metrics")

#: How the job panel names the metrics job ("Metrics failed: ...").
LABEL = "Metrics"
MODALITY_NAMES = {"rna": "RNA", "protein": "Protein"}
FEATURE_NAMES = {"rna": "genes", "protein": "proteins"}
DE_PLOT_METRICS = ["gene_f1", "lfc_pearson", "lfc_spearman", "roc_auc", "pr_auc"]
CARD_TITLE = "Model card (README.md)"
MINIFIED_LINE = (
    "This dataset is minified (counts removed, latent posterior kept): model-card metrics "
    "need counts; the card's numbers are shown."
)
NO_CARD_METRICS = (
    "The model card (README.md) gives no metrics (\u201cNot provided by uploader\u201d); "
    "ours are shown."
)
SCALE_OPTIONS = [
    {"label": "Measured scale (with capture efficiency)", "value": MEASURED},
    {"label": "scvi-tools 1.4.2 (efficiency left out)", "value": EFFICIENCY_FREE},
]
SCALE_TITLES = {
    MEASURED: "protein samples on the measured scale (the likelihood the model was trained with)",
    EFFICIENCY_FREE: "protein samples as scvi-tools 1.4.2 draws them (capture efficiency left "
    "out): the numbers of its model card",
}
NO_EFFICIENCY_LINE = (
    "This checkpoint has no learned protein capture efficiency (or one of 1): its samples are "
    "scvi-tools' on either scale."
)
CARD_TABLES = (
    ("cell_wise_cv", "cell-wise CV", "Metric"),
    ("gene_wise_cv", "gene-wise CV", "Metric"),
    ("diff_exp", "DE metrics per cell type", "Cell type"),
)


@sh.model_page("Model metrics")
def layout(model: Any = None, **_: Any) -> html.Div:
    """The metrics page: model summary and history now, card metrics via a job."""
    service, pair = active()
    summary = service.model_summary(pair)
    history = service.training_history(pair)
    card = model_card(service, pair)
    minified = is_minified(service, pair)
    return html.Div(
        [
            components.page_header(
                "Model metrics",
                "How well the model reproduces the data, as on an scvi-hub model card "
                "(posterior predictive checks), with its parameters and training history.",
            ),
            html.Div(
                [
                    components.card(
                        "Model",
                        html.Div(
                            [
                                html.Div(
                                    [
                                        html.H4("Summary statistics"),
                                        components.kv_table(summary["summary_statistics"]),
                                    ]
                                ),
                                html.Div(
                                    [
                                        html.H4("Setup arguments"),
                                        components.kv_table(summary["setup_arguments"]),
                                    ]
                                ),
                                html.Div(
                                    [
                                        html.H4("Model parameters"),
                                        components.kv_table(
                                            summary["model_parameters"], class_name="kv-compact"
                                        ),
                                    ]
                                ),
                            ],
                            className="summary-grid",
                            id=ids.METRICS_SUMMARY,
                        ),
                    ),
                    components.card(
                        "Training history",
                        components.graph(
                            ids.METRICS_HISTORY,
                            figure=figures.training_curve_figure(history, title=""),
                            height=360,
                            loading=False,
                        ),
                        actions=components.download_buttons(ids.METRICS_HISTORY),
                        subtitle=history_note(history),
                    ),
                ],
                className="grid-2",
            ),
            hub_card_section(card, summary) if card is not None else None,
            components.card(
                "Model-card metrics",
                [
                    scale_choice(service, pair),
                    components.dropdown_field(
                        "DE metric groups",
                        ids.METRICS_GROUPING,
                        options=grouping_choices(service, pair),
                        value="",
                        clearable=False,
                        class_name="field-mid",
                        hint="The groups whose model DE is checked against the raw counts': "
                        "the cell types, an obs column or one of your label sets.",
                    ),
                    components.job_panel(ids.METRICS_JOB, retry="Compute again", compact=True),
                    dcc.Loading(
                        html.Div(
                            minified_sections(card) if minified else None,
                            id=ids.METRICS_CONTENT,
                        ),
                        delay_show=300,
                        type="dot",
                    ),
                ],
                subtitle="Posterior predictive samples (3, as scvi-hub) against the observed "
                "counts, per modality.",
            ),
            dcc.Store(id=ids.METRICS_READY_STORE),
            _integration.section(service, pair),
        ],
        className="page-metrics",
    )


def scale_choice(service: AnalysisService, pair: Pair) -> html.Div:
    """Which protein samples the tables come from: measured scale (default) or scvi-tools
    1.4.2's, one click apart, with the sentence saying why they differ. A checkpoint without
    a capture efficiency has one scale: the choice is hidden and a line says so."""
    has = service.model(pair).has_protein_efficiency
    radio = components.segmented(ids.METRICS_SCALE, SCALE_OPTIONS, service.protein_scale())
    return html.Div(
        [
            html.Div(components.field("Protein samples", radio), hidden=not has),
            html.P(
                WHY_SCALES_DIFFER if has else NO_EFFICIENCY_LINE,
                className="muted metrics-scale-why",
            ),
        ],
        className="metrics-scale",
    )


def hub_card_section(card: HubCard, summary: dict[str, Any]) -> html.Div:
    """What the model card says: its summary statistics beside this model and data, its
    setup arguments and model parameters (and data registry, training links)."""
    about = [
        f"{card.model_cls_name} model" if card.model_cls_name else "",
        f"scvi-tools {card.scvi_version}" if card.scvi_version else "",
        f"licence {card.license}" if card.license else "",
    ]
    grid = [
        html.Div(
            [
                html.H4("Summary statistics: card vs this data"),
                components.frame_table(
                    compare_summary(card, summary["summary_statistics"]),
                    index_label="Statistic",
                    class_name="hub-summary",
                ),
            ],
            id=ids.METRICS_HUB_SUMMARY,
        ),
        html.Div(
            [
                html.H4("Setup arguments (card)"),
                components.kv_table(card.setup_arguments, class_name="hub-setup"),
            ]
            if card.setup_arguments
            else [html.H4("Setup arguments (card)"), html.P("none given", className="muted")]
        ),
        html.Div(
            [
                html.H4("Model parameters (card)"),
                components.kv_table(card.model_parameters, class_name="kv-compact hub-params"),
            ]
            if card.model_parameters
            else [html.H4("Model parameters (card)"), html.P("none given", className="muted")]
        ),
    ]
    if card.data_registry or card.data_is_minified is not None:
        registry: dict[str, Any] = dict(card.data_registry)
        if card.data_is_minified is not None:
            registry["Data is minified"] = card.data_is_minified
        grid.append(
            html.Div(
                [
                    html.H4("Data registry (card)"),
                    components.kv_table(registry, class_name="kv-compact hub-registry"),
                ]
            )
        )
    text = card_text(card)
    body: list[Any] = []
    if text["description"]:
        body.append(html.P(text["description"], className="hub-description"))
    body.append(html.Div(grid, className="summary-grid"))
    if text["training"]:
        body.append(html.P(text["training"], className="muted hub-training"))
    if text["notes"]:
        body.append(html.P(text["notes"], className="muted hub-notes"))
    return html.Div(
        components.card(
            CARD_TITLE,
            body,
            subtitle=", ".join(a for a in about if a)
            or "The scvi-hub model card beside the checkpoint.",
            class_name="hub-card",
        ),
        id=ids.METRICS_HUB_CARD,
    )


def minified_sections(card: HubCard | None) -> list[Any]:
    """The metrics content for minified data: one line saying why nothing is computed, and
    the card's metric tables alone (per modality)."""
    out: list[Any] = [html.Div(MINIFIED_LINE, className="notice notice-info metrics-minified")]
    if card is None:
        return out
    if not card.has_metrics:
        out.append(html.P(NO_CARD_METRICS.split(";")[0] + ".", className="muted hub-no-metrics"))
        return out
    blocks = []
    mods = list(dict.fromkeys([*card.cell_wise_cv, *card.gene_wise_cv, *card.diff_exp]))
    for mod in mods:
        label = MODALITY_NAMES.get(mod, mod)
        children: list[Any] = []
        for kind, title, index_label in CARD_TABLES:
            table = getattr(card, kind).get(mod)
            if table is None:
                continue
            children += [
                html.H4(f"{label}: {title} (model card)"),
                html.Div(
                    components.frame_table(
                        table,
                        index_label=index_label,
                        class_name=f"hub-card-table hub-{kind}-{mod}",
                    ),
                    className="table-scroll",
                ),
            ]
        blocks.append(html.Div(children, className="metric-block"))
    out.append(html.Div(blocks, className="grid-2"))
    return out


def _vs_card(
    card: HubCard | None, kind: str, mod: str, ours: pd.DataFrame, title: str, index_label: str
) -> list[Any]:
    """The card's table beside ours (card, ours, ours − card per column), if the card has
    it for this modality."""
    table = getattr(card, kind, {}).get(mod) if card is not None else None
    if table is None:
        return []
    return [
        html.H4(title, className="hub-compare-title"),
        html.Div(
            components.frame_table(
                compare_tables(table, ours),
                index_label=index_label,
                class_name=f"hub-compare hub-{kind}-{mod}",
            ),
            className="table-scroll",
        ),
    ]


@callback(
    *_jobs.start_outputs(ids.METRICS_JOB, ids.METRICS_READY_STORE, retry=True),
    Input(ids.METRICS_RETRY, "n_clicks"),
    Input(ids.METRICS_GROUPING, "value"),
)
def start_metrics(_n: int | None, grouping: str | None = None) -> tuple:
    """Ask for the metrics (the DE metric over ``grouping``: cell types, an obs column or
    a label set): cached ones render at once, else a job runs with progress:
    ``(job store, poll off, ready, progress, Cancel off, Compute again hidden)``."""
    try:
        service, pair = active()
        if is_minified(service, pair):  # no counts: the layout shows the card's tables
            return _jobs.started(None, components.JobView(), retry=True)
        labels_key = grouping_key(service, pair, grouping)
    except BackendError as err:
        return _jobs.started(None, components.refused_view(err), retry=True)
    store, view = _jobs.start(
        lambda: submit_metrics(service, pair, labels_key=labels_key), LABEL, labels_key=labels_key
    )
    return _jobs.started(store, view, retry=True)


poll_metrics, cancel_metrics = _jobs.panel_callbacks(
    ids.METRICS_JOB, ready=ids.METRICS_READY_STORE, label=LABEL, retry=True
)
_integration.register()  # the "Integration (scib-metrics)" section's callbacks


def metrics_sections(
    service: AnalysisService,
    pair: Pair,
    *,
    protein_scale: str | None = None,
    labels_key: str | None = None,
) -> list[Any]:
    """Tables and plots of the card metrics (from the cache) from protein samples on
    ``protein_scale``, each beside the model card's when the model folder has one, then the
    calibration and the per-protein means of both scales; for minified data only the card's
    (nothing computed)."""
    card = model_card(service, pair)
    if is_minified(service, pair):
        return minified_sections(card)
    scale = service.protein_scale(protein_scale)
    # cell types under their shown names
    result = service.shown_metrics(pair, protein_scale=scale, labels_key=labels_key)
    points = result.gene_cv_points
    sections: list[Any] = [
        html.P(
            f"Tables from {SCALE_TITLES[scale]}; RNA is the same on both.",
            className="metrics-scale-shown",
        )
        if service.model(pair).has_protein_efficiency
        else None
    ]
    if card is not None and not card.has_metrics:
        sections.append(html.P(NO_CARD_METRICS, className="muted hub-no-metrics"))
    elif card is not None:
        sections.append(
            html.P(
                f"Under each table, the {CARD_TITLE} value beside ours and the difference "
                "(ours − card); – where one side lacks the row or column. The card's numbers "
                "are rounded to 2 decimals and come from the uploader's data and posterior "
                "samples, so small differences are expected."
                + (
                    " Its protein numbers are scvi-tools' (capture efficiency left out): "
                    "choose scvi-tools 1.4.2 above to compare like with like."
                    if scale == MEASURED and service.model(pair).has_protein_efficiency
                    else ""
                ),
                className="muted hub-compare-note",
            )
        )
    cv_tables = []
    for mod in result.cell_wise_cv:
        label = MODALITY_NAMES.get(mod, mod)
        block: list[Any] = []
        for kind, what in (("cell", "cell-wise"), ("gene", "gene-wise")):
            frame = getattr(result, f"{kind}_wise_cv")[mod]
            block += [
                html.H4(f"{label}: {what} CV"),
                components.frame_table(
                    cv_display_table(frame),
                    index_label="Metric",
                    class_name=f"cv-table {kind}-cv-{mod}",
                ),
                html.P(cv_advice(frame), className=f"muted cv-advice {kind}-cv-advice-{mod}"),
                *_vs_card(
                    card,
                    f"{kind}_wise_cv",
                    mod,
                    frame,
                    f"{label}: {what} CV, model card vs ours",
                    "Metric",
                ),
            ]
        cv_tables.append(
            html.Div(block, className="metric-block", id=f"{ids.METRICS_CELL_CV}-{mod}")
        )
    sections.append(html.H3("Coefficient of variation", className="section-title"))
    sections.append(
        html.P(
            "Rows as on the scvi-hub card, plus Pearson r²: the card's advice (do not use "
            "the generated data downstream below a squared Pearson correlation of 0.4) is on "
            "r², the card's row is r. R² is r2_score(y_true = model CV, raw CV), scvi-tools' "
            f"order; the model CV averages only {result.n_samples} posterior samples, so R² "
            "is noisy (it moves from one draw to the next) and can be negative.",
            className="muted metrics-cv-note",
        )
    )
    sections.append(html.Div(cv_tables, className="grid-2"))
    plots = []
    for mod, frame in points.items():
        gid = f"{ids.METRICS_CV_PLOT}-{mod}"
        plots.append(
            components.card(
                f"{MODALITY_NAMES.get(mod, mod)}: observed vs generated CV per feature",
                components.graph(
                    gid,
                    figure=figures.cv_scatter_figure(
                        frame["observed"], frame["generated"], feature_names=frame["feature"]
                    ),
                    height=380,
                    loading=False,
                ),
                actions=components.download_buttons(gid),
            )
        )
    sections.append(html.Div(plots, className="grid-2"))
    sections.append(html.H3("Differential expression agreement", className="section-title"))
    sections.append(
        html.P(
            [
                html.Span(f"Groups: {result.groups}. ", className="metrics-de-groups")
                if result.groups
                else None,
                "ROC and PR AUC rank the sample's signed t-scores against the raw data's "
                "significant features (adjusted p < 0.2, up or down; the top n by p when none "
                "or over half are), as scvi-tools: a group whose most significant feature is "
                "down-regulated scores near 0 there.",
            ],
            className="muted metrics-de-note",
        )
    )
    de_blocks = []
    for mod, table in result.diff_exp.items():
        gid = f"{ids.METRICS_DE_PLOT}-{mod}"
        n_features = result.n_features.get(mod)
        n_top = result.n_top.get(mod)
        top = (
            de_top_note(n_features, n_top, FEATURE_NAMES.get(mod, "features"))
            if n_features and n_top
            else ""
        )
        de_blocks.append(
            components.card(
                f"{MODALITY_NAMES.get(mod, mod)}: DE metrics per cell type",
                [
                    html.P(top, className=f"muted de-top-note de-top-{mod}"),
                    components.graph(
                        gid,
                        figure=figures.metric_bars_figure(table, metrics=DE_PLOT_METRICS),
                        height=380,
                        loading=False,
                    ),
                    html.Div(
                        components.frame_table(
                            table,
                            index_label="Cell type",
                            class_name=f"de-metric-table de-metric-{mod}",
                        ),
                        className="table-scroll",
                    ),
                    *_vs_card(
                        card,
                        "diff_exp",
                        mod,
                        table,
                        f"{MODALITY_NAMES.get(mod, mod)}: DE metrics, model card vs ours",
                        "Cell type",
                    ),
                ],
                actions=components.download_buttons(gid),
                subtitle="Raw data vs one posterior predictive sample: top-feature F1, "
                "LFC agreement, ROC/PR AUC (scanpy t-test ranks); – where undefined.",
            )
        )
    sections.append(html.Div(de_blocks, className="grid-2", id=ids.METRICS_DE))
    sections += calibration_sections(result)
    return sections


def calibration_sections(result: Any) -> list[Any]:
    """The posterior predictive calibration per modality (and protein scale), and the
    observed vs sampled mean of every protein on each scale."""
    out: list[Any] = []
    if result.calibration is not None:
        out += _noted_table(
            html.H3("Posterior predictive calibration", className="section-title"),
            f"Share of observed counts inside the central 95% … 65% interval of "
            f"{CALIBRATION_SAMPLES} posterior predictive draws per cell and feature (RNA over "
            f"at most {CALIBRATION_CELLS:,} cells drawn at random, proteins over at most "
            f"{CALIBRATION_PROTEIN_CELLS:,}; the table says how many), beside each "
            "interval's nominal width; calibration error = Σ (share − width)², as scvi-tools' "
            "calibration_error (0 is perfect, lower is better). Many zero counts make RNA "
            "intervals degenerate (0 to 0), which inflates its coverage.",
            result.calibration,
            index_label="Modality",
            class_name="calibration-table",
            block_id=ids.METRICS_CALIBRATION,
        )
    if result.protein_means is not None:
        out += _noted_table(
            html.H4("Protein: observed vs sampled mean"),
            "Mean count per protein over all cells, and the mean of the posterior predictive "
            "samples on each scale with its ratio to the observed.",
            result.protein_means,
            index_label="Protein",
            class_name="protein-means",
            block_id=ids.METRICS_PROTEIN_MEANS,
        )
    return out


def _noted_table(
    heading: Any, note: str, frame: Any, *, index_label: str, class_name: str, block_id: str
) -> list[Any]:
    """A heading, one muted line on how to read the table, and the scrollable table."""
    return [
        heading,
        html.P(note, className=f"muted {class_name}-note"),
        html.Div(
            components.frame_table(frame, index_label=index_label, class_name=class_name),
            className="table-scroll",
            id=block_id,
        ),
    ]


@callback(
    Output(ids.METRICS_CONTENT, "children"),
    Input(ids.METRICS_READY_STORE, "data"),
    Input(ids.METRICS_SCALE, "value"),
    prevent_initial_call=True,
)
def render_metrics(ready: dict | None, scale: str | None = None) -> Any:
    """Show the card metrics once the job has put them in the cache, from protein samples
    on the chosen scale (both are in the one cached result)."""
    if not ready:
        return no_update
    if scale is not None and scale not in PROTEIN_SCALES:  # a crafted callback value
        shown = str(scale)[:40]
        return components.alert(
            f"Unknown protein scale {shown!r}: choose measured or efficiency-free",
            kind="warning",
        )
    try:
        service, pair = active()
        labels_key = checked_labels_key(service, pair, ready.get("labels_key"))
        return metrics_sections(service, pair, protein_scale=scale, labels_key=labels_key)
    except BackendError as err:
        return components.alert(str(err), kind="warning")
