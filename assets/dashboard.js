/* Clientside callbacks of TotalVI Explorer (namespace "tve").
 * They run in the browser only: writing the shareable URL, downloading figures, and turning a
 * lasso/box selection into the shared selection store (cell positions only, so the server
 * never receives the full list of selected points). */
window.dash_clientside = Object.assign({}, window.dash_clientside, {
  tve: {
    /* Keep the address bar shareable without a page reload or re-render. */
    writeUrl: function (query, pathname) {
      const path = pathname || window.location.pathname;
      const url = path + (query || "");
      if (url !== window.location.pathname + window.location.search) {
        window.history.replaceState(window.history.state, "", url);
      }
      return "";
    },

    /* PNG or SVG download of the graph named in the clicked button's id. */
    downloadFigure: function (nClicks) {
      const ctx = window.dash_clientside.callback_context;
      const id = ctx && ctx.triggered_id;
      if (!nClicks || !id || !window.Plotly) {
        return window.dash_clientside.no_update;
      }
      const gd = document.querySelector("#" + CSS.escape(id.graph) + " .js-plotly-plot");
      if (!gd) {
        return window.dash_clientside.no_update;
      }
      window.Plotly.downloadImage(gd, {
        format: id.format,
        filename: id.graph,
        width: gd.offsetWidth,
        height: gd.offsetHeight,
        scale: id.format === "png" ? 2 : 1,
      });
      return "";
    },

    /* A selection event of a cell view -> {"cells": positions, "source", "dataset"}.
     * A null event right after the view mounts (its figure not drawn yet) is ignored; a null
     * event on a drawn view is the user deselecting (double click) and clears the selection.
     * An empty selection on a view without a lasso/box outline is ignored: plotly emits one
     * when a highlight patch clears the view's outline (the other view was lassoed), and
     * taking it as the user's would wipe out the selection just made. */
    selectionFromEvent: function (selected, graphId, token) {
      const noUpdate = window.dash_clientside.no_update;
      const dataset = token && token.dataset ? token.dataset : null;
      const gd = document.querySelector("#" + CSS.escape(graphId) + " .js-plotly-plot");
      if (!selected) {
        const drawn = gd && gd.data && gd.data.length && gd.data[0].x;
        return drawn ? {cells: [], source: graphId, dataset: dataset} : noUpdate;
      }
      if (!(selected.points && selected.points.length)) {
        const outlines = gd && gd.layout && gd.layout.selections;
        if (!(outlines && outlines.length)) {
          return noUpdate;
        }
      }
      const cells = [];
      for (const p of selected.points || []) {
        if (p.curveNumber === 0) {
          const i = p.pointIndex !== undefined ? p.pointIndex : p.pointNumber;
          if (i !== undefined) {
            cells.push(i);
          }
        }
      }
      cells.sort(function (a, b) { return a - b; });
      return {cells: cells, source: graphId, dataset: dataset};
    },

    /* Mark the navigation link of the current page. */
    activeNav: function (pathname) {
      const ctx = window.dash_clientside.callback_context;
      return ctx.outputs_list.map(function (out) {
        const el = document.getElementById(out.id);
        const href = el ? el.getAttribute("href") : null;
        return href === pathname ? "nav-link active" : "nav-link";
      });
    },

    /* The current address (with colour and selection) for the copy-link button. */
    currentUrl: function (nClicks) {
      return nClicks ? window.location.href : window.dash_clientside.no_update;
    },
  },
});
