"""Every Dash component id, defined once (kebab-case, prefixed by page)."""

from __future__ import annotations

# app shell (layout.py) ---------------------------------------------------------------
URL = "app-url"
SELECTION_STORE = "app-selection-store"  # {"cells": [positions], "dataset": fp, "source": id}
SAVED_SELECTIONS_STORE = "app-saved-selections-store"  # {dataset fp: {name: token}}
COLOR_STORE = "app-color-store"  # {"feature": "gene:CD3E", "layer": "raw"}
MODEL_VERSION_STORE = "app-model-version-store"  # status dict; "version" bumps on a switch
URL_QUERY_STORE = "app-url-query-store"  # "?color=...&sel=..." of the current view
URL_SINK = "app-url-sink"  # dummy output of the clientside URL writer
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
EXPLORE_LINKED_KIND = "explore-linked-kind"
EXPLORE_LINKED_X = "explore-linked-x"
EXPLORE_LINKED_Y = "explore-linked-y"
EXPLORE_LINKED_LAYER = "explore-linked-layer"
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
EXPLORE_SHARE = "explore-share"
EXPLORE_SHARE_TEXT = "explore-share-text"

# lookup page ---------------------------------------------------------------------------
LOOKUP_SEARCH = "lookup-search"
LOOKUP_LAYER = "lookup-layer"
LOOKUP_FEATURES = "lookup-features"
LOOKUP_UMAP = "lookup-umap"
LOOKUP_VIOLIN = "lookup-violin"
LOOKUP_DOTPLOT = "lookup-dotplot"
LOOKUP_OPEN_EXPLORE = "lookup-open-explore"

# differential expression page --------------------------------------------------------
DE_GROUP = "de-group"
DE_MODALITY = "de-modality"
DE_TABLE = "de-table"
DE_VOLCANO = "de-volcano"
DE_UMAP = "de-umap"
DE_STATUS = "de-status"
DE_EXPORT = "de-export"
DE_JOB_STORE = "de-job-store"
DE_INTERVAL = "de-interval"
DE_PROGRESS = "de-progress"
DE_READY_STORE = "de-ready-store"  # bumps when the one-vs-rest results are ready
DE_FEATURE_STORE = "de-feature-store"  # the feature clicked in the volcano or the table

# metrics page --------------------------------------------------------------------------
METRICS_JOB_STORE = "metrics-job-store"
METRICS_INTERVAL = "metrics-interval"
METRICS_PROGRESS = "metrics-progress"
METRICS_CONTENT = "metrics-content"
METRICS_CANCEL = "metrics-cancel"
METRICS_RETRY = "metrics-retry"
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

# model page ----------------------------------------------------------------------------
MODEL_CURRENT = "model-current"
MODEL_DATASET = "model-dataset"
MODEL_UPLOAD = "model-upload"
MODEL_UPLOAD_STATUS = "model-upload-status"
MODEL_UPLOAD_DONE = "model-upload-done"
MODEL_BATCH_KEY = "model-batch-key"
MODEL_OPEN = "model-open"
MODEL_DATASET_INFO = "model-dataset-info"
MODEL_N_LATENT = "model-n-latent"
MODEL_MAX_EPOCHS = "model-max-epochs"
MODEL_TRAIN = "model-train"
MODEL_CANCEL = "model-cancel"
MODEL_CHECKPOINT = "model-checkpoint"
MODEL_OWN_DATA = "model-own-data"
MODEL_CHECKPOINT_PATH = "model-checkpoint-path"
MODEL_LOAD = "model-load"
MODEL_INTERVAL = "model-interval"
MODEL_PROGRESS = "model-progress"
MODEL_MESSAGE = "model-message"
# model page: map new data onto the active model (query mapping card)
MODEL_QUERY_DATASET = "model-query-dataset"
MODEL_QUERY_UPLOAD = "model-query-upload"
MODEL_QUERY_UPLOAD_STATUS = "model-query-upload-status"
MODEL_QUERY_UPLOAD_DONE = "model-query-upload-done"
MODEL_QUERY_BATCH_KEY = "model-query-batch-key"
MODEL_QUERY_INFO = "model-query-info"
MODEL_QUERY_MAX_EPOCHS = "model-query-max-epochs"
MODEL_QUERY_START = "model-query-start"
MODEL_QUERY_CANCEL = "model-query-cancel"
MODEL_QUERY_PROGRESS = "model-query-progress"
MODEL_QUERY_MESSAGE = "model-query-message"
