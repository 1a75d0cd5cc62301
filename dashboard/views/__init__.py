"""The view layer: what the pages need from the backend, in the shapes the figures take.

It imports no Dash and no plotly (``tests/test_layering.py``), so it is tested like the
backend; pages call it and hand the results to :mod:`dashboard.figures` and
:mod:`dashboard.components`. One module per concept:

- :mod:`~dashboard.views.colours`: what the cells are coloured by (:data:`LAYERS`, the one
  list of value layers; ``ColorSpec``; colour values, labels and notes).
- :mod:`~dashboard.views.values`: a gene's or protein's per-cell values, the protein panel.
- :mod:`~dashboard.views.features`: every colourable feature, search, display names.
- :mod:`~dashboard.views.expression`: a feature per cell type (violins, dot plots).
- :mod:`~dashboard.views.cells`: the cell views (subsample, regions, selections, groups).
- :mod:`~dashboard.views.links`: what a page opens with from a shared link.
- :mod:`~dashboard.views.de`: DE tables and groups; :mod:`~dashboard.views.metrics`: the
  Metrics page; :mod:`~dashboard.views.model` and :mod:`~dashboard.views.mapping`: the
  Model page (files, training, loading, mapping new data).
- :mod:`~dashboard.views.state`, :mod:`~dashboard.views.workspaces`,
  :mod:`~dashboard.views.switching`: each user's workspace, its active pair and the job that
  switches it.
- :mod:`~dashboard.views.errors`: the errors pages catch, as one line.
"""
