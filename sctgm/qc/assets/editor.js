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
 * Every string from the data reaches the page through textContent, never as HTML.
 */
(function () {
  "use strict";

  var served = /^https?:$/.test(location.protocol);
  var editing = false;  // true once the server confirmed (api/info)
  var OPACITIES = [0.25, 0.45, 0.65, 0.85];
  var ed = null;  // the open editor (see open())
  var prefs = { tool: "brush", size: 2, opacity: 0.5, overlay: true, hint: true, full: false };

  function el(tag, attrs, children) {
    var node = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (k) { node.setAttribute(k, String(attrs[k])); });
    (children || []).forEach(function (c) {
      node.appendChild(typeof c === "string" ? document.createTextNode(c) : c);
    });
    return node;
  }
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
    ed = sessions[entryId] || (sessions[entryId] = { entry: entryId, slices: {}, slice: null, root: root,
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
  function sliceState() { return ed && ed.slice !== null ? ed.slices[ed.slice] : null; }

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
        status("");
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
    canvas.addEventListener("mousedown", mouseDown);
    canvas.addEventListener("mousemove", mouseMove);
    canvas.addEventListener("mouseleave", function () { if (ed) { ed.hover = null; draw(); } });
    window.addEventListener("mouseup", function () { if (ed) { ed.drag = null; } });
    canvas.addEventListener("contextmenu", function (ev) { ev.preventDefault(); });
    return root;
  }

  function status(msg) { var s = document.getElementById("editor-status"); if (s) { s.textContent = msg; } }

  // geometry: the visible part of the slice (display rows/cols) and the canvas size in CSS pixels
  function viewBox(s) {
    var d = s.d;
    return prefs.full ? { col0: 0, row0: 0, cols: d.cols, rows: d.rows } : d.view;
  }
  function fit() {
    var s = sliceState(), c = document.getElementById("editor-canvas");
    if (!s) { return; }
    var v = viewBox(s), wmm = v.cols * s.d.col_mm, hmm = v.rows * s.d.row_mm;
    var room = Math.max(240, Math.min(window.innerWidth - 60, window.innerHeight - 230, 720));
    var k = room / Math.max(wmm, hmm);
    c.width = Math.round(wmm * k);
    c.height = Math.round(hmm * k);
  }
  function voxelAt(ev) {
    var s = sliceState(), c = document.getElementById("editor-canvas"), r = c.getBoundingClientRect(), v = viewBox(s);
    var col = v.col0 + Math.floor((ev.clientX - r.left) / r.width * v.cols);
    var row = v.row0 + Math.floor((ev.clientY - r.top) / r.height * v.rows);
    return [col, row];
  }

  function draw() {
    var s = sliceState();
    if (!s) { return; }
    var d = s.d, v = viewBox(s), c = document.getElementById("editor-canvas"), ctx = c.getContext("2d");
    var off = document.createElement("canvas");
    off.width = v.cols; off.height = v.rows;
    var octx = off.getContext("2d"), id = octx.createImageData(v.cols, v.rows), px = id.data;
    var span = Math.max(1e-12, s.hi - s.lo), a = prefs.overlay ? prefs.opacity : 0;
    for (var rr = 0; rr < v.rows; rr++) {
      for (var cc = 0; cc < v.cols; cc++) {
        var row = v.row0 + rr, col = v.col0 + cc, o = 4 * (rr * v.cols + cc);
        px[o + 3] = 255;
        if (row < 0 || col < 0 || row >= d.rows || col >= d.cols) { px[o] = px[o + 1] = px[o + 2] = 0; continue; }
        var i = row * d.cols + col;
        var g = Math.max(0, Math.min(255, (s.img[i] - s.lo) / span * 255));
        var r0 = g, g0 = g, b0 = g;
        if (prefs.hint && s.prob && !s.mask[i] && s.prob[i] > 12) {  // the network's probability outside the mask, green
          var ph = 0.6 * s.prob[i] / 255;
          r0 = r0 * (1 - ph); g0 = g0 * (1 - ph) + 230 * ph; b0 = b0 * (1 - ph) + 120 * ph;
        }
        if (a > 0 && (s.mask[i] || s.auto[i])) {  // GM red; voxels added to the automatic mask yellow, removed blue
          var col3 = !s.mask[i] ? [40, 120, 255] : s.auto[i] ? [255, 30, 30] : [255, 235, 0];
          r0 = r0 * (1 - a) + col3[0] * a; g0 = g0 * (1 - a) + col3[1] * a; b0 = b0 * (1 - a) + col3[2] * a;
        }
        px[o] = r0; px[o + 1] = g0; px[o + 2] = b0;
      }
    }
    octx.putImageData(id, 0, 0);
    ctx.imageSmoothingEnabled = false;
    ctx.drawImage(off, 0, 0, v.cols, v.rows, 0, 0, c.width, c.height);
    if (ed.hover && prefs.tool !== "fill") {  // the brush's extent
      var rad = prefs.size - 1, sx = c.width / v.cols, sy = c.height / v.rows;
      ctx.strokeStyle = prefs.tool === "erase" ? "#60a5fa" : "#f472b6";
      ctx.lineWidth = 1;
      ctx.strokeRect((ed.hover[0] - rad - v.col0) * sx + 0.5, (ed.hover[1] - rad - v.row0) * sy + 0.5,
                     (2 * rad + 1) * sx - 1, (2 * rad + 1) * sy - 1);
    }
    header();
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

  // ---------- editing ----------
  function snapshot(s) { s.undo.push(s.mask.slice()); if (s.undo.length > 200) { s.undo.shift(); } s.redo = []; }
  function changed(s) { s.dirty = true; draw(); }
  function paintAt(s, col, row, value) {
    var d = s.d, rad = prefs.size - 1, r2 = rad * rad + 0.25;
    for (var dr = -rad; dr <= rad; dr++) {
      for (var dc = -rad; dc <= rad; dc++) {
        var rr = row + dr, cc = col + dc;
        if (dr * dr + dc * dc <= r2 && rr >= 0 && cc >= 0 && rr < d.rows && cc < d.cols) { s.mask[rr * d.cols + cc] = value; }
      }
    }
  }
  function paintLine(s, a, b, value) {  // every voxel between two mouse positions
    var n = Math.max(Math.abs(b[0] - a[0]), Math.abs(b[1] - a[1]), 1);
    for (var t = 0; t <= n; t++) {
      paintAt(s, Math.round(a[0] + (b[0] - a[0]) * t / n), Math.round(a[1] + (b[1] - a[1]) * t / n), value);
    }
  }
  function fill(s, col, row) {
    var d = s.d, m = s.mask;
    if (col < 0 || row < 0 || col >= d.cols || row >= d.rows || m[row * d.cols + col]) { return false; }
    var seen = new Uint8Array(m.length), stack = [row * d.cols + col], region = [], open = false;
    seen[stack[0]] = 1;
    while (stack.length) {
      var i = stack.pop(), r = Math.floor(i / d.cols), c = i % d.cols;
      region.push(i);
      if (r === 0 || c === 0 || r === d.rows - 1 || c === d.cols - 1) { open = true; }
      [[r - 1, c], [r + 1, c], [r, c - 1], [r, c + 1]].forEach(function (n) {
        if (n[0] < 0 || n[1] < 0 || n[0] >= d.rows || n[1] >= d.cols) { return; }
        var j = n[0] * d.cols + n[1];
        if (!seen[j] && !m[j]) { seen[j] = 1; stack.push(j); }
      });
    }
    if (open) { status("Not a closed outline: the region reaches the slice's edge (draw the outline closed first)"); return false; }
    snapshot(s);
    region.forEach(function (i) { m[i] = 1; });
    changed(s);
    status("Filled " + region.length + " voxel(s)");
    return true;
  }
  function mouseDown(ev) {
    var s = sliceState();
    if (!s) { return; }
    ev.preventDefault();
    var p = voxelAt(ev);
    if (ev.button === 2) { ed.drag = { wl: [ev.clientX, ev.clientY, s.lo, s.hi] }; return; }
    if (ev.button !== 0 || !s.d.editable) { return; }
    if (prefs.tool === "fill") { fill(s, p[0], p[1]); return; }
    snapshot(s);
    paintAt(s, p[0], p[1], prefs.tool === "erase" ? 0 : 1);
    ed.drag = { last: p };
    changed(s);
  }
  function mouseMove(ev) {
    var s = sliceState();
    if (!s) { return; }
    var p = voxelAt(ev);
    ed.hover = p;
    if (ed.drag && ed.drag.wl) {  // right-drag: horizontal = window width, vertical = level
      var w0 = ed.drag.wl[3] - ed.drag.wl[2], l0 = (ed.drag.wl[3] + ed.drag.wl[2]) / 2, range = s.max - s.min;
      var w = Math.max(range / 1000, w0 * Math.exp((ev.clientX - ed.drag.wl[0]) / 200));
      var l = l0 - (ev.clientY - ed.drag.wl[1]) * range / 500;
      s.lo = l - w / 2; s.hi = l + w / 2;
    } else if (ed.drag && ed.drag.last) {
      paintLine(s, ed.drag.last, p, prefs.tool === "erase" ? 0 : 1);
      ed.drag.last = p;
      s.dirty = true;
    }
    draw();
  }
  function undo() { var s = sliceState(); if (s && s.undo.length) { s.redo.push(s.mask); s.mask = s.undo.pop(); changed(s); } }
  function redo() { var s = sliceState(); if (s && s.redo.length) { s.undo.push(s.mask); s.mask = s.redo.pop(); changed(s); } }
  function resetSlice() { var s = sliceState(); if (s) { snapshot(s); s.mask = s.auto.slice(); changed(s); } }
  function setTool(t) { prefs.tool = t; draw(); }
  function setWindow(w, l) {
    var s = sliceState();
    if (!s) { return; }
    var range = s.max - s.min, width = w === null ? s.hi - s.lo : Math.max(1, w) * range / 1000;
    var level = l === null ? (s.hi + s.lo) / 2 : s.min + l * range / 1000;
    s.lo = level - width / 2; s.hi = level + width / 2;
    draw();
  }
  function resetWindow() { var s = sliceState(); if (s) { s.lo = s.d.window.lo; s.hi = s.d.window.hi; draw(); } }
  function toggleView() { prefs.full = !prefs.full; fit(); draw(); }
  function toggleHint() { prefs.hint = !prefs.hint; draw(); }
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
