/* Clientside callbacks of TotalVI Explorer (namespace "tve").
 * They run in the browser only: writing the shareable URL, downloading figures, and turning a
 * lasso/box selection into the shared selection store (cell positions only, so the server
 * never receives the full list of selected points). */
window.dash_clientside = Object.assign({}, window.dash_clientside, {
  tve: {
    /* Explore's linked view asks the server only once the main view has drawn its
     * figure (plotly's afterplot with traces in it), so the browser draws the main view
     * first and does not parse and draw both at once; after 4 s whatever
     * happened (an error figure has no traces) (opened: the gate's current value). */
    mainViewCame: function (figure, opened) {
      if (opened || !figure) {
        return window.dash_clientside.no_update;
      }
      return new Promise(function (resolve) {
        let done = false;
        const open = function () {
          if (!done) {
            done = true;
            resolve(true);
          }
        };
        setTimeout(open, 4000);
        const watch = function () {
          const graph = document.querySelector("#explore-umap .js-plotly-plot");
          if (!graph || typeof graph.on !== "function") {
            if (!done) window.requestAnimationFrame(watch);
            return;
          }
          const drawn = function () {
            return Array.isArray(graph.data) && graph.data.some(function (t) {
              return t && t.x && t.x.length;
            });
          };
          graph.on("plotly_afterplot", function () {
            if (drawn()) open();
          });
        };
        watch();
      });
    },

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
     * taking it as the user's would wipe out the selection just made.
     * A view that plots a subsample of a large dataset (layout.meta.overview) sends the lasso
     * or box itself, as a region of that view, which the server resolves against every cell
     * (shown or not); its points' customdata are their cell positions. */
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
      const meta = gd && gd.layout && gd.layout.meta;
      const overview = meta && meta.overview;
      if (overview) {
        const shape = window.dash_clientside.tve.regionShape(selected);
        if (shape) {
          return {
            region: Object.assign({}, overview.view, shape),
            source: graphId,
            dataset: dataset,
          };
        }
      }
      const cells = [];
      // dcc.Graph drops customdata sent as a typed array from event points: read the
      // decoded array of the drawn trace instead (overview point i = cell custom[i]).
      const full = gd && gd._fullData && gd._fullData[0];
      const custom = overview && full ? full.customdata : null;
      for (const p of selected.points || []) {
        if (p.curveNumber === 0) {
          const n = p.pointIndex !== undefined ? p.pointIndex : p.pointNumber;
          const i = !overview
            ? n
            : (p.customdata !== undefined ? p.customdata : (custom ? custom[n] : undefined));
          if (i !== undefined) {
            cells.push(i);
          }
        }
      }
      cells.sort(function (a, b) { return a - b; });
      return {cells: cells, source: graphId, dataset: dataset};
    },

    /* A selection event's lasso ({lasso: [xs, ys]}, at most 400 vertices, 6 significant
     * digits) or box ({box: [[x0, x1], [y0, y1]]}); null when it has neither. */
    regionShape: function (selected) {
      const round = function (v) { return Number(Number(v).toPrecision(6)); };
      const lasso = selected && selected.lassoPoints;
      if (lasso && lasso.x && lasso.x.length >= 3) {
        const step = Math.max(1, Math.ceil(lasso.x.length / 400));
        const xs = [];
        const ys = [];
        for (let i = 0; i < lasso.x.length; i += step) {
          xs.push(round(lasso.x[i]));
          ys.push(round(lasso.y[i]));
        }
        return {lasso: [xs, ys]};
      }
      const range = selected && selected.range;
      if (range && range.x && range.y) {
        return {box: [range.x.map(round), range.y.map(round)]};
      }
      return null;
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

/* Streamed uploads (components.stream_upload): the chosen file is the body of one POST to
 * /_upload/<target>, so the server copies it to disk as it arrives (no base64, no callback
 * JSON). The server answers {"upload": token}; the token goes to the zone's dcc.Store, whose
 * callback shows what became of the file. A failure before the server answered (network,
 * proxy limit) puts {"failed": status} there instead. */
(function () {
  function prefix() {
    const cfg = document.getElementById("_dash-config");
    try {
      return (cfg && JSON.parse(cfg.textContent).requests_pathname_prefix) || "/";
    } catch (e) {
      return "/";
    }
  }

  function send(input, file) {
    const zone = input.closest(".stream-upload");
    const progress = zone && zone.querySelector(".upload-progress");
    const store = zone.getAttribute("data-store");
    const done = function (data) {
      if (window.dash_clientside && window.dash_clientside.set_props) {
        window.dash_clientside.set_props(store, {data: Object.assign({at: Date.now()}, data)});
      }
    };
    const limit = Number(zone.getAttribute("data-limit") || 0);
    if (limit && file.size > limit) {
      if (progress) { progress.textContent = ""; }
      done({tooLarge: file.size, name: file.name});
      return;
    }
    const xhr = new XMLHttpRequest();
    xhr.open("POST", prefix() + "_upload/" + zone.getAttribute("data-target"));
    xhr.setRequestHeader("X-Filename", encodeURIComponent(file.name));
    xhr.setRequestHeader("Content-Type", "application/octet-stream");
    xhr.upload.onprogress = function (e) {
      if (progress && e.lengthComputable) {
        const pct = Math.floor((100 * e.loaded) / e.total);
        progress.textContent = pct < 100
          ? "Uploading " + file.name + ": " + pct + "%"
          : "Checking " + file.name + "…";
      }
    };
    xhr.onload = function () {
      if (progress) { progress.textContent = ""; }
      let body = null;
      try { body = JSON.parse(xhr.responseText); } catch (e) { body = null; }
      done(body && body.upload ? {upload: body.upload} : {failed: xhr.status});
    };
    xhr.onerror = function () {
      if (progress) { progress.textContent = ""; }
      done({failed: 0});
    };
    if (progress) { progress.textContent = "Uploading " + file.name + "…"; }
    xhr.send(file);
  }

  /* Give every drop zone its file input (again, if a re-render dropped it). */
  function addInputs() {
    document.querySelectorAll(".stream-upload").forEach(function (zone) {
      if (!zone.querySelector(":scope > .upload-input")) {
        const input = document.createElement("input");
        input.type = "file";
        input.accept = ".h5ad,.h5mu,.h5";
        input.className = "upload-input";
        input.title = "Choose a file to upload";
        zone.appendChild(input);
      }
    });
  }
  /* Only DOM changes that add a zone or remove an input need a look (plotly redraws many
   * nodes; querying the document for each batch of them would be wasted work). */
  function touchesUpload(node, css) {
    return node.nodeType === 1 && (node.matches(css) || !!node.querySelector(css));
  }
  new MutationObserver(function (mutations) {
    for (const m of mutations) {
      for (const n of m.addedNodes) {
        if (touchesUpload(n, ".stream-upload")) { addInputs(); return; }
      }
      for (const n of m.removedNodes) {
        if (touchesUpload(n, ".upload-input")) { addInputs(); return; }
      }
    }
  }).observe(document.documentElement, {childList: true, subtree: true});
  addInputs();

  document.addEventListener("change", function (e) {
    const input = e.target;
    if (input && input.classList && input.classList.contains("upload-input") && input.files) {
      if (input.files.length) {
        send(input, input.files[0]);
      }
      input.value = "";  // the same file may be chosen again
    }
  });
  ["dragenter", "dragover"].forEach(function (name) {
    document.addEventListener(name, function (e) {
      const zone = e.target && e.target.closest && e.target.closest(".stream-upload");
      if (zone) { zone.classList.add("dragging"); }
    });
  });
  ["dragleave", "drop"].forEach(function (name) {
    document.addEventListener(name, function (e) {
      const zone = e.target && e.target.closest && e.target.closest(".stream-upload");
      if (zone) { zone.classList.remove("dragging"); }
    });
  });
})();
