"""Every Dash component id, defined once (kebab-case, prefixed by page)."""

from __future__ import annotations

from typing import NamedTuple


class JobPanel(NamedTuple):
    """The ids of one job panel (:func:`dashboard.components.job_panel`), each
    ``<prefix>-<part>`` (:func:`job_ids`): the progress block (bar and label while the job
    runs, one line once it ended), Cancel, the optional "again" button, the notice line,
    the poll timer and the store holding ``{"job": id, ...}``."""

    progress: str
    cancel: str
    retry: str
    message: str
    interval: str
    store: str


def job_ids(prefix: str) -> JobPanel:
    """The ids of the job panel ``prefix`` (one per page that runs jobs)."""
    parts = ("progress", "cancel", "retry", "message", "interval", "job-store")
    return JobPanel(*(f"{prefix}-{part}" for part in parts))


class DecodeControl(NamedTuple):
    """The ids of a page's "Decode in" control (:mod:`dashboard.pages._decode`): the
    dropdown, its job panel and the store of the finished decoding (``{"batch"}``)."""

    choice: str
    job: JobPanel
    ready: str


def decode_ids(prefix: str) -> DecodeControl:
    """The ids of page ``prefix``'s "Decode in" control."""
    return DecodeControl(f"{prefix}-decode", job_ids(f"{prefix}-decode"), f"{prefix}-decoded")


class LayoutControl(NamedTuple):
    """The ids of a cell view's layout control (:mod:`dashboard.pages._layout`): the
    dropdown, the panel of the job computing our UMAP, the store of the layout the view
    shows (``{"layout": key}``) and the page's copy of what the shareable URL says."""

    choice: str
    job: JobPanel
    ready: str
    link: str


def layout_ids(prefix: str) -> LayoutControl:
    """The ids of page ``prefix``'s layout control."""
    return LayoutControl(
        f"{prefix}-layout",
        job_ids(f"{prefix}-layout"),
        f"{prefix}-layout-shown",
        f"{prefix}-layout-link",
    )


class UploadZone(NamedTuple):
    """The ids of one drop zone (:func:`dashboard.components.upload_with_status`): the
    zone, the line saying what became of the file, the store the browser puts the upload's
    job id in, the panel of the job that checks the file, and the store that changes when
    that job has ended; ``<prefix>``, ``<prefix>-status``, ``<prefix>-done``,
    ``<prefix>-check-*``, ``<prefix>-checked`` (:func:`upload_ids`)."""

    zone: str
    status: str
    done: str
    check: JobPanel
    checked: str


def upload_ids(prefix: str) -> UploadZone:
    """The ids of the drop zone ``prefix``."""
    return UploadZone(
        prefix,
        f"{prefix}-status",
        f"{prefix}-done",
        job_ids(f"{prefix}-check"),
        f"{prefix}-checked",
    )


# app shell (layout.py) ---------------------------------------------------------------
URL = "app-url"
SELECTION_STORE = "app-selection-store"  # {"cells": [positions], "dataset": fp, "source": id}
SAVED_SELECTIONS_STORE = "app-saved-selections-store"  # {dataset fp: {name: token}}
COLOR_STORE = "app-color-store"  # {"feature": "gene:CD3E", "layer": "raw"}
GENE_SETS_STORE = "app-gene-sets-store"  # {dataset fp: {set name: "set:<name>=<members>"}}
MODEL_VERSION_STORE = "app-model-version-store"  # status dict; "version" bumps on a switch
URL_QUERY_STORE = "app-url-query-store"  # "?color=...&sel=..." of the current view
LAYOUT_STORE = "app-layout-store"  # {"layout": key (None: the default), "dataset": fp}
URL_SINK = "app-url-sink"  # dummy output of the clientside URL writer
PLOTLY_LOADER = "app-plotly-loader"  # hidden graph: plotly.js loads with the shell
WORKSPACE_SINK = "app-workspace-sink"  # dummy output of the workspace-view saver
PAGE_STATE = "app-page-state"  # page-local store (one per page): state from the URL
ALERT = "app-alert"
ALERT_CLOSE = "app-alert-close"
NAV = "app-nav"
STATUS = "app-status"
STATUS_INTERVAL = "app-status-interval"

# pattern-matching ids: figure download buttons ({"type": ..., "graph": id, "format": f})
FIG_DOWNLOAD = "fig-download"
FIG_DOWNLOAD_SINK = "fig-download-sink"

# explore page --------------------------------------------------------------------------
EXPLORE_UMAP = "explore-umap"
EXPLORE_LINKED = "explore-linked"
EXPLORE_COLOR = "explore-color"
EXPLORE_LEGEND = "explore-legend"  # the colouring's categories (click: select their cells)
LEGEND_ITEM = "legend-item"  # pattern-matching id type of one legend entry
EXPLORE_LAYER = "explore-layer"
EXPLORE_DECODE = decode_ids("explore")  # decode denoised values in: own batch, one, all
EXPLORE_LAYOUT = layout_ids("explore")  # the main view's layout: our UMAP or the file's
EXPLORE_LINKED_KIND = "explore-linked-kind"
EXPLORE_LINKED_X = "explore-linked-x"
EXPLORE_LINKED_Y = "explore-linked-y"
EXPLORE_LINKED_LAYER = "explore-linked-layer"
EXPLORE_LINKED_LAYOUT = "explore-linked-layout"  # kind "Embedding": ours or the file's
EXPLORE_LINKED_COLOR = "explore-linked-color"  # kind "Embedding": its colouring
EXPLORE_LINKED_EMBEDDING = "explore-linked-embedding"  # those two controls and their note
EXPLORE_LINKED_A = "explore-linked-a"  # kind "Two-feature blend": feature A (x of the key)
EXPLORE_LINKED_B = "explore-linked-b"  # feature B (y of the key)
EXPLORE_LINKED_BLEND = "explore-linked-blend"  # those two controls
EXPLORE_LINKED_WAIT = "explore-linked-wait"  # {"waiting"}: denoised protein still computed
EXPLORE_LINKED_POLL = "explore-linked-poll"  # polls until it is (then redraws the view)
EXPLORE_LINKED_GATE = "explore-linked-gate"  # true once the main view's figure came
EXPLORE_SELECTION_INFO = "explore-selection-info"
EXPLORE_SELECTION_NAME = "explore-selection-name"
EXPLORE_SAVE_SELECTION = "explore-save-selection"
EXPLORE_CLEAR_SELECTION = "explore-clear-selection"
EXPLORE_SAVED_LIST = "explore-saved-list"
EXPLORE_COMPARE_A = "explore-compare-a"
EXPLORE_COMPARE_B = "explore-compare-b"
EXPLORE_COMPARE = "explore-compare"
EXPLORE_DE_TABLE = "explore-de-table"
EXPLORE_DE_STATUS = "explore-de-status"
EXPLORE_DE_EXPORT = "explore-de-export"
EXPLORE_DE_JOB = job_ids("explore-de")  # the compare (DE) job
EXPLORE_DE_READY_STORE = "explore-de-ready-store"  # the finished compare job: show it
EXPLORE_SHARE = "explore-share"
# the Gene sets card (dashboard/pages/_gene_sets.py)
GENE_SET_NAME = "explore-gene-set-name"
GENE_SET_TEXT = "explore-gene-set-text"
GENE_SET_UPLOAD = "explore-gene-set-upload"
GENE_SET_SCORE = "explore-gene-set-score"
GENE_SET_STATUS = "explore-gene-set-status"  # the one-line result
GENE_SET_LIST = "explore-gene-set-list"  # the saved sets as chips
GENE_SET_CHIP = "explore-gene-set-chip"  # pattern type: {"type", "name"}
GENE_SET_DELETE = "explore-gene-set-delete"  # pattern type: {"type", "name"}
GENE_SET_CURRENT = "explore-gene-set-current"  # the key of the set shown
GENE_SET_VIOLIN = "explore-gene-set-violin"
GENE_SET_DE = "explore-gene-set-de"  # DE: high vs low (Explore's compare job panel)
EXPLORE_TYPE_NAMES = "explore-type-names"  # {type id: shown name}; rewritten after edits
# the Annotations card (dashboard/pages/_annotations.py): label sets
ANN_SET = "explore-ann-set"  # the label set edited (value: its name)
ANN_NEW_NAME = "explore-ann-new-name"  # name of a new set
ANN_FROM_SELECTION = "explore-ann-from-selection"
ANN_FROM_TYPES = "explore-ann-from-types"
ANN_LABEL = "explore-ann-label"  # the label given to the selected cells
ANN_LABEL_SELECTION = "explore-ann-label-selection"
ANN_CATEGORIES = "explore-ann-categories"  # multi: the categories renamed, merged, deleted
ANN_CATEGORY_NAME = "explore-ann-category-name"
ANN_RENAME = "explore-ann-rename"  # rename (one category) or merge (several)
ANN_DELETE_CATEGORIES = "explore-ann-delete-categories"
ANN_DELETE_SET = "explore-ann-delete-set"
ANN_UNDO = "explore-ann-undo"
ANN_UPLOAD = "explore-ann-upload"  # import a CSV (cell, label)
ANN_EXPORT = "explore-ann-export"
ANN_DOWNLOAD = "explore-ann-download"
ANN_STATUS = "explore-ann-status"  # the one-line result
EXPLORE_SHARE_TEXT = "explore-share-text"

# lookup page ---------------------------------------------------------------------------
LOOKUP_SEARCH = "lookup-search"
LOOKUP_LAYER = "lookup-layer"
LOOKUP_DECODE = decode_ids("lookup")  # decode the denoised values (cells, violins) in
LOOKUP_FEATURES = "lookup-features"
LOOKUP_UMAP = "lookup-umap"
LOOKUP_VIOLIN = "lookup-violin"
LOOKUP_DOTPLOT = "lookup-dotplot"
LOOKUP_DOT_GROUPING = "lookup-dot-grouping"  # the dot plot's rows: cell types, a label set…
LOOKUP_OPEN_EXPLORE = "lookup-open-explore"
LOOKUP_CHECK = "lookup-check"  # posterior predictive check of the looked-up feature
LOOKUP_CHECK_NOTE = "lookup-check-note"

# differential expression page --------------------------------------------------------
DE_GROUP = "de-group"
DE_MODALITY = "de-modality"
DE_TABLE = "de-table"
DE_VOLCANO = "de-volcano"
DE_UMAP = "de-umap"
DE_STATUS = "de-status"
DE_EXPORT = "de-export"
DE_JOB = job_ids("de")
DE_READY_STORE = "de-ready-store"  # bumps when the one-vs-rest results are ready
DE_FEATURE_STORE = "de-feature-store"  # the feature clicked in the volcano or the table
DE_PRESET = "de-preset"  # DE controls: a preset, or the four fields below
DE_DELTA = "de-delta"
DE_FDR = "de-fdr"
DE_SAMPLES = "de-samples"
DE_BATCH_CORRECTION = "de-batch-correction"
DE_TRUST = "de-trust"  # the group's model-card DE metric (trust badge)

# metrics page --------------------------------------------------------------------------
METRICS_JOB = job_ids("metrics")
METRICS_CONTENT = "metrics-content"
METRICS_CANCEL = METRICS_JOB.cancel
METRICS_RETRY = METRICS_JOB.retry  # "Compute again"
METRICS_GROUPING = "metrics-grouping"  # the DE metric's groups: cell types, a label set…
METRICS_READY_STORE = "metrics-ready-store"
METRICS_SCALE = "metrics-scale"  # protein samples: measured scale or scvi-tools 1.4.2's
METRICS_CALIBRATION = "metrics-calibration"
METRICS_PROTEIN_MEANS = "metrics-protein-means"
METRICS_CELL_CV = "metrics-cell-cv"
METRICS_GENE_CV = "metrics-gene-cv"
METRICS_DE = "metrics-de"
METRICS_CV_PLOT = "metrics-cv-plot"  # suffixed by modality
METRICS_DE_PLOT = "metrics-de-plot"  # suffixed by modality
METRICS_HISTORY = "metrics-history"
METRICS_SUMMARY = "metrics-summary"
METRICS_HUB_CARD = "metrics-hub-card"  # the model card (README.md) of the active model
METRICS_HUB_SUMMARY = "metrics-hub-summary"  # its summary statistics beside this data
# metrics page: the integration scorecard (scib-metrics)
METRICS_INTEGRATION_JOB = job_ids("metrics-integration")
METRICS_INTEGRATION_RUN = "metrics-integration-run"
METRICS_INTEGRATION_CONTENT = "metrics-integration-content"
METRICS_INTEGRATION_READY = "metrics-integration-ready"  # the finished job: show its table
METRICS_INTEGRATION_GRID = "metrics-integration-grid"
METRICS_INTEGRATION_PLOT = "metrics-integration-plot"

# model page ----------------------------------------------------------------------------
MODEL_JOB = job_ids("model")  # train / load: the server's model switch (no store)
MODEL_CURRENT = "model-current"
MODEL_DATASET = "model-dataset"
MODEL_BATCH_KEY = "model-batch-key"
MODEL_OPEN = "model-open"
MODEL_DATASET_INFO = "model-dataset-info"
MODEL_N_LATENT = "model-n-latent"
MODEL_MAX_EPOCHS = "model-max-epochs"
MODEL_TRAIN = "model-train"
MODEL_CANCEL = MODEL_JOB.cancel
MODEL_CHECKPOINT = "model-checkpoint"
MODEL_OWN_DATA = "model-own-data"
MODEL_CHECKPOINT_PATH = "model-checkpoint-path"
MODEL_LOAD = "model-load"
MODEL_INTERVAL = MODEL_JOB.interval  # polls the switch for both panels
MODEL_PROGRESS = MODEL_JOB.progress
# model page: map new data onto the active model (query mapping card)
MODEL_QUERY_JOB = job_ids("model-query")  # the mapping's panel (the model page polls it)
MODEL_QUERY_DATASET = "model-query-dataset"
MODEL_QUERY_BATCH_KEY = "model-query-batch-key"
MODEL_QUERY_INFO = "model-query-info"
MODEL_QUERY_MAX_EPOCHS = "model-query-max-epochs"
MODEL_QUERY_START = "model-query-start"
MODEL_QUERY_CANCEL = MODEL_QUERY_JOB.cancel
MODEL_QUERY_PROGRESS = MODEL_QUERY_JOB.progress
# model page: the drop zones of the dataset (card 1) and of the new data (map card)
MODEL_UPLOAD_ZONE = upload_ids("model-upload")
MODEL_UPLOAD = MODEL_UPLOAD_ZONE.zone
MODEL_UPLOAD_STATUS = MODEL_UPLOAD_ZONE.status
MODEL_QUERY_UPLOAD_ZONE = upload_ids("model-query-upload")

# concordance page: each protein against its gene's RNA, per cell type
CONCORDANCE_JOB = job_ids("concordance")
CONCORDANCE_READY_STORE = "concordance-ready-store"  # bumps when the job's result is cached
CONCORDANCE_GRID = "concordance-grid"
CONCORDANCE_EXPORT = "concordance-export"
CONCORDANCE_HEATMAP = "concordance-heatmap"
CONCORDANCE_PAIR = "concordance-pair"  # the pair shown in the scatter
CONCORDANCE_SCATTER = "concordance-scatter"
CONCORDANCE_NOTES = "concordance-notes"
SIMULATED_BANNER = "simulated-banner"  # every page: the active data is simulated
