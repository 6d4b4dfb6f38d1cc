/* sct-gm QC report: corrected slices, and the slice editor when the report is served by
 * `sct-gm qc --serve` (plain JavaScript, no dependency, no network beyond that local server).
 *
 * From file:// the entry only shows which slices a reviewer corrected (entry.corrected_slices,
 * written into index.js by sct-gm). Served, "Correct slices" (key e, or a double click on a tile)
 * opens one axial slice at the image's own voxel resolution, in the report's orientation
 * (radiological: patient Right on the left, Anterior at the top), zoomed on the cord:
 *   b brush, x eraser, g fill (click inside a closed GM outline), [ ] brush size,
 *   z undo, y redo (or Ctrl+Z / Ctrl+Y), a reset the slice to the automatic mask,
 *   o overlay on/off (GM red; voxels added to the automatic mask yellow, removed blue), - + overlay opacity, h probability hint, r reset contrast, right-drag window/level,
 *   n / PageDown / ArrowDown next slice, p / PageUp / ArrowUp previous, v whole slice / cord view,
 *   s save (Ctrl+S), Esc close (edits stay in memory until saved).
 * A save sends the slice's mask (rows x cols bytes of 0/1, display order) to
 * api/entries/<id>/slices/<file slice index>; the server maps it back onto the image's grid.
 * A manual GM mask that sct-gm's editor did not write opens read-only (the server says why).
 * Every string from the data reaches the page through textContent, never as HTML.
 * This file: the entry view, the panel, the server I/O and the keys; the canvas and the drawing
 * tools are in editor-canvas.js (loaded first, window.sctgmEditorCanvas).
 */
(function () {
  "use strict";

  var served = /^https?:$/.test(location.protocol);
  var editing = false;  // true once the server confirmed (api/info)
  var ed = null;  // the open editor (see open())
  var C = window.sctgmEditorCanvas, prefs = C.prefs;  // the canvas and the drawing tools (editor-canvas.js)
  var sliceState = C.sliceState, status = C.status, fit = C.fit, draw = C.draw, fill = C.fill, undo = C.undo,
      redo = C.redo, resetSlice = C.resetSlice, setTool = C.setTool, setWindow = C.setWindow,
      resetWindow = C.resetWindow, toggleView = C.toggleView, toggleHint = C.toggleHint;
  C.onDraw = function () { header(); };

  var el = window.sctgmQc.el;  // the report's DOM helper (qc.js, loaded first)
  function b64bytes(s) {
    var bin = atob(s), out = new Uint8Array(bin.length);
    for (var i = 0; i < bin.length; i++) { out[i] = bin.charCodeAt(i); }
    return out;
  }
  function currentEntry() {
    var q = window.sctgmQc, id = q && q.state && q.state.current;
    return id ? (window.SCTGM_QC.entries || []).filter(function (e) { return e.id === id; })[0] : null;
  }

  // ---------- in the entry view (served or not) ----------
  function decorate(view, e) {
    var done = e.corrected_slices || [];
    if (done.length) {
      view.insertBefore(el("p", { "class": "corrected", id: "corrected-slices" }, [
        "Corrected by a reviewer (framed in green): slice" + (done.length > 1 ? "s " : " ") + done.join(", ") +
        (e.correction ? " \u2014 " + e.correction : "")]), document.getElementById("mosaic"));
    }
    var box = document.getElementById("mosaic"), m = e.mosaic || {};
    if (box && m.width) {
      (m.tiles || []).forEach(function (t) {
        if (done.indexOf(t.slice) < 0) { return; }
        var f = el("div", { "class": "corr-frame", "data-slice": t.slice }, []);
        f.style.left = (100 * t.x / m.width) + "%";
        f.style.top = (100 * t.y / m.height) + "%";
        f.style.width = (100 * t.w / m.width) + "%";
        f.style.height = (100 * t.h / m.height) + "%";
        box.appendChild(f);
      });
    }
    if (!editing) { return; }
    var button = el("button", { type: "button", id: "open-editor", title: "Correct the GM mask slice by slice (e)" },
                    ["Correct slices (e)"]);
    button.addEventListener("click", function () { open(e.id, firstSlice(e)); });
    var hint = el("span", { "class": "legend" }, [" or double-click a tile"]);
    view.insertBefore(el("div", { "class": "editor-open" }, [button, hint]), box);
    if (box) {
      box.addEventListener("dblclick", function (ev) {
        var r = box.getBoundingClientRect(), px = (ev.clientX - r.left) * m.width / r.width,
            py = (ev.clientY - r.top) * m.height / r.height;
        (m.tiles || []).forEach(function (t) {
          if (px >= t.x && px < t.x + t.w && py >= t.y && py < t.y + t.h) { open(e.id, t.slice); }
        });
      });
    }
  }
  function firstSlice(e) {
    var s = e.slices || { index: [], flags: [] };
    for (var i = 0; i < (s.flags || []).length; i++) { if (s.flags[i].length) { return s.index[i]; } }
    return s.index && s.index.length ? s.index[Math.floor(s.index.length / 2)] : 0;
  }

  // ---------- the editor ----------
  var root = null, sessions = Object.create(null);  // one editor panel; edits kept per entry until saved
  function open(entryId, slice) {
    if (!editing) { return Promise.resolve(); }
    if (!root) { root = build(); document.body.appendChild(root); }
    ed = C.ed = sessions[entryId] || (sessions[entryId] = { entry: entryId, slices: {}, slice: null, root: root,
                                                     hover: null, drag: null });
    document.body.classList.add("editing");
    ed.root.hidden = false;
    return load(slice);
  }
  function close() {
    if (!ed) { return; }
    ed.root.hidden = true;
    document.body.classList.remove("editing");
  }

  function load(slice) {
    if (ed.slices[slice]) { ed.slice = slice; fit(); draw(); return Promise.resolve(); }
    status("Loading slice " + slice + "\u2026");
    return fetch("api/entries/" + encodeURIComponent(ed.entry) + "/slices/" + slice, { cache: "no-store" })
      .then(function (r) { return r.json().then(function (j) { if (!r.ok) { throw new Error(j.error || r.status); } return j; }); })
      .then(function (d) {
        var img = new Float32Array(b64bytes(d.image).buffer);
        var min = Infinity, max = -Infinity;
        for (var i = 0; i < img.length; i++) { if (img[i] < min) { min = img[i]; } if (img[i] > max) { max = img[i]; } }
        ed.slices[slice] = { d: d, img: img, min: min, max: max, auto: b64bytes(d.automatic), mask: b64bytes(d.mask),
                             prob: d.prob ? b64bytes(d.prob) : null, undo: [], redo: [], dirty: false,
                             lo: d.window.lo, hi: d.window.hi };
        ed.saved = d.saved_slices;
        ed.n = d.n_slices;
        ed.slice = slice;
        fit();
        draw();
        status(d.editable ? "" : "Read-only: " + (d.read_only_reason || "this mask was not written by sct-gm's editor"));
      })
      .catch(function (err) { status("Could not load slice " + slice + ": " + err.message); });
  }

  function build() {
    var root = el("div", { id: "editor", role: "dialog", "aria-label": "Slice editor" }, []);
    var canvas = el("canvas", { id: "editor-canvas" }, []);
    var tools = el("div", { "class": "editor-tools" }, []);
    [["brush", "Brush (b)"], ["erase", "Eraser (x)"], ["fill", "Fill outline (g)"]].forEach(function (t) {
      var b = el("button", { type: "button", "data-tool": t[0] }, [t[1]]);
      b.addEventListener("click", function () { setTool(t[0]); });
      tools.appendChild(b);
    });
    function slider(id, label, min, max, step, onInput) {
      var s = el("input", { type: "range", id: id, min: min, max: max, step: step }, []);
      s.addEventListener("input", function () { onInput(Number(s.value)); });
      tools.appendChild(el("label", {}, [label + " ", s]));
      return s;
    }
    slider("editor-size", "size [ ]", 1, 15, 1, function (v) { prefs.size = v; draw(); });
    slider("editor-opacity", "opacity - +", 0, 1, 0.05, function (v) { prefs.opacity = v; draw(); });
    slider("editor-window", "window", 0, 1000, 1, function (v) { setWindow(v, null); });
    slider("editor-level", "level", 0, 1000, 1, function (v) { setWindow(null, v); });
    var actions = el("div", { "class": "editor-tools" }, []);
    [["undo", "Undo (z)", undo], ["redo", "Redo (y)", redo], ["reset", "Automatic mask (a)", resetSlice],
     ["prev", "\u25b2 Previous (p)", function () { step(-1); }], ["next", "Next (n) \u25bc", function () { step(1); }],
     ["view", "Whole slice / cord (v)", toggleView], ["hint", "Probability hint (h)", toggleHint],
     ["save", "Save slice (s)", save], ["close", "Close (Esc)", close]].forEach(function (a) {
      var b = el("button", { type: "button", id: "editor-" + a[0] }, [a[1]]);
      b.addEventListener("click", a[2]);
      actions.appendChild(b);
    });
    var title = el("h2", { id: "editor-title" }, []);
    var strip = el("div", { id: "editor-strip", "class": "editor-strip" }, []);
    var st = el("p", { id: "editor-status", "class": "status", role: "status" }, []);
    var keys = el("p", { "class": "keys" }, ["b brush \u00b7 x eraser \u00b7 g fill \u00b7 [ ] size \u00b7 z/y undo/redo \u00b7 " +
      "a automatic \u00b7 o overlay \u00b7 - + opacity \u00b7 h hint \u00b7 r contrast (right-drag: window/level) \u00b7 " +
      "n/p next/previous slice \u00b7 v view \u00b7 s save \u00b7 Esc close"]);
    var legend = el("p", { "class": "legend" }, ["GM: red \u00b7 added to the automatic mask: yellow \u00b7 removed: blue \u00b7 " +
      "network's probability outside the mask (hint): green \u00b7 one cell = one voxel of the image \u00b7 patient Right on the left, Anterior at the top"]);
    root.appendChild(el("div", { "class": "editor-panel" }, [title, tools, actions, strip, canvas, legend, st, keys]));
    canvas.addEventListener("mousedown", C.mouseDown);
    canvas.addEventListener("mousemove", C.mouseMove);
    canvas.addEventListener("mouseleave", function () { if (ed) { ed.hover = null; draw(); } });
    window.addEventListener("mouseup", function () { if (ed) { ed.drag = null; } });
    canvas.addEventListener("contextmenu", function (ev) { ev.preventDefault(); });
    return root;
  }

  function header() {
    var s = sliceState(), e = currentEntryById(ed.entry);
    var saved = (ed.saved || []).indexOf(ed.slice) >= 0;
    document.getElementById("editor-title").textContent = (e ? (e.subject || "") + " \u00b7 " + (e.image_name || "") : ed.entry) +
      " \u2014 slice " + ed.slice + " of 0\u2013" + (ed.n - 1) + (s.dirty ? " \u00b7 unsaved" : saved ? " \u00b7 saved" : "") +
      " \u00b7 voxel " + s.d.col_mm.toFixed(2) + " \u00d7 " + s.d.row_mm.toFixed(2) + " mm" + (s.d.editable ? "" : " \u00b7 read-only");
    document.querySelectorAll("#editor [data-tool]").forEach(function (b) {
      b.setAttribute("aria-pressed", b.getAttribute("data-tool") === prefs.tool ? "true" : "false");
    });
    document.getElementById("editor-size").value = prefs.size;
    document.getElementById("editor-opacity").value = prefs.opacity;
    var range = Math.max(1e-12, s.max - s.min);
    document.getElementById("editor-window").value = Math.round(1000 * (s.hi - s.lo) / range);
    document.getElementById("editor-level").value = Math.round(1000 * ((s.hi + s.lo) / 2 - s.min) / range);
    document.getElementById("editor-hint").disabled = !s.prob;
    document.getElementById("editor-hint").setAttribute("aria-pressed", prefs.hint && s.prob ? "true" : "false");
    strip(e);
  }
  function currentEntryById(id) { return (window.SCTGM_QC.entries || []).filter(function (e) { return e.id === id; })[0]; }

  function strip(e) {
    var box = document.getElementById("editor-strip"), flagged = {};
    var s = (e && e.slices) || { index: [], flags: [] };
    (s.index || []).forEach(function (k, i) { if ((s.flags[i] || []).length) { flagged[k] = true; } });
    box.textContent = "";
    for (var k = 0; k < ed.n; k++) {
      var cls = ["slice"];
      if (flagged[k]) { cls.push("flagged"); }
      if ((ed.saved || []).indexOf(k) >= 0) { cls.push("saved"); }
      if (ed.slices[k] && ed.slices[k].dirty) { cls.push("dirty"); }
      if (k === ed.slice) { cls.push("current"); }
      var b = el("button", { type: "button", "class": cls.join(" "), "data-slice": k,
                             title: "slice " + k + (flagged[k] ? ", flagged" : "") }, [String(k)]);
      b.addEventListener("click", (function (kk) { return function () { load(kk); }; }(k)));
      box.appendChild(b);
    }
  }

  function step(delta) {
    var k = ed.slice + delta;
    if (k >= 0 && k < ed.n) { return load(k); }
    return Promise.resolve();
  }

  function save() {
    var s = sliceState(), k = ed.slice, entry = ed.entry;
    if (!s) { return Promise.resolve(); }
    status("Saving slice " + k + "\u2026");
    return fetch("api/entries/" + encodeURIComponent(entry) + "/slices/" + k,
                 { method: "POST", headers: { "Content-Type": "application/octet-stream" }, body: s.mask.slice() })
      .then(function (r) { return r.json().then(function (j) { if (!r.ok) { throw new Error(j.error || r.status); } return j; }); })
      .then(function (j) {
        if (ed.slices[k] === s) { s.dirty = false; }
        ed.saved = j.saved_slices;
        var e = currentEntryById(entry);
        if (e) { e.corrected_slices = j.saved_slices; e.correction = j.target; }
        status("Saved slice " + k + " (" + j.changed_from_automatic + " voxel(s) differ from the automatic mask) to " + j.target);
        draw();
        if (window.sctgmQc && currentEntry() && currentEntry().id === entry) { window.sctgmQc.select(entry); }
        return j;
      })
      .catch(function (err) { status("Not saved: " + err.message); throw err; });
  }

  var KEYS = {
    b: function () { setTool("brush"); }, x: function () { setTool("erase"); }, g: function () { setTool("fill"); },
    "[": function () { prefs.size = Math.max(1, prefs.size - 1); draw(); },
    "]": function () { prefs.size = Math.min(15, prefs.size + 1); draw(); },
    z: undo, y: redo, a: resetSlice, h: toggleHint, r: resetWindow, v: toggleView,
    o: function () { prefs.overlay = !prefs.overlay; draw(); },
    "-": function () { prefs.opacity = Math.max(0, prefs.opacity - 0.15); draw(); },
    "+": function () { prefs.opacity = Math.min(1, prefs.opacity + 0.15); draw(); },
    "=": function () { prefs.opacity = Math.min(1, prefs.opacity + 0.15); draw(); },
    n: function () { step(1); }, PageDown: function () { step(1); }, ArrowDown: function () { step(1); },
    p: function () { step(-1); }, PageUp: function () { step(-1); }, ArrowUp: function () { step(-1); },
    s: function () { save().catch(function () {}); }, Escape: close
  };
  window.addEventListener("keydown", function (ev) {
    var tag = ev.target && ev.target.tagName;
    if (ed && !ed.root.hidden) {
      ev.stopPropagation();  // the report's own keys are off while editing
      if (tag === "INPUT" && ev.target.type !== "range" && ev.key !== "Escape") { return; }  // sliders keep the keys
      var key = ev.key;
      if (ev.ctrlKey || ev.metaKey) {
        key = { z: ev.shiftKey ? "y" : "z", Z: "y", y: "y", s: "s" }[ev.key];
        if (!key) { return; }
      } else if (ev.altKey) { return; }
      var f = KEYS[key];
      if (f && sliceState()) { ev.preventDefault(); f(); } else if (key === "Escape") { close(); }
      return;
    }
    if (editing && (ev.key === "e" || ev.key === "E") && !ev.ctrlKey && !ev.metaKey && !ev.altKey &&
        tag !== "INPUT" && tag !== "SELECT" && tag !== "TEXTAREA") {
      var e = currentEntry();
      if (e) { ev.preventDefault(); ev.stopPropagation(); open(e.id, firstSlice(e)); }
    }
  }, true);
  window.addEventListener("resize", function () { if (ed && !ed.root.hidden) { fit(); draw(); } });

  // For tests and scripting: the editor's state, and the same actions as the keys.
  window.sctgmEditor = {
    decorate: decorate, open: open, close: close, save: save, undo: undo, redo: redo, fill: fill,
    setTool: setTool, prefs: prefs, step: step,
    state: function () { return ed ? { entry: ed.entry, slice: ed.slice, saved: ed.saved, current: sliceState() } : null; },
    editing: function () { return editing; }
  };

  function rerender() { var e = currentEntry(); if (e && window.sctgmQc) { window.sctgmQc.select(e.id); } }
  if (!served) { rerender(); document.body.setAttribute("data-editor", "static"); return; }
  fetch("api/info", { cache: "no-store" })
    .then(function (r) { return r.ok ? r.json() : null; })
    .then(function (j) { editing = !!(j && j.editing); })
    .catch(function () { editing = false; })
    .then(function () { rerender(); document.body.setAttribute("data-editor", editing ? "on" : "static"); });
}());
