/* sct-gm QC report, slice editor: the canvas and the drawing tools (brush, eraser, fill, undo/redo,
 * window/level, view), on the slice the editor has open. Plain JavaScript, no dependency.
 *
 * Loaded before editor.js, which owns the panel, the server I/O and the keys: it sets
 * sctgmEditorCanvas.ed to the open entry's session ({slices, slice, hover, drag, ...}) and
 * sctgmEditorCanvas.onDraw to refresh the panel's header after each draw.
 */
(function () {
  "use strict";

  var prefs = { tool: "brush", size: 2, opacity: 0.5, overlay: true, hint: true, full: false };
  var C = window.sctgmEditorCanvas = { ed: null, onDraw: null, prefs: prefs };

  function sliceState() { var ed = C.ed; return ed && ed.slice !== null ? ed.slices[ed.slice] : null; }
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
    var s = sliceState(), ed = C.ed;
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
    if (C.onDraw) { C.onDraw(); }
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
    var s = sliceState(), ed = C.ed;
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
    var s = sliceState(), ed = C.ed;
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

  C.sliceState = sliceState; C.status = status; C.fit = fit; C.draw = draw; C.fill = fill;
  C.mouseDown = mouseDown; C.mouseMove = mouseMove; C.undo = undo; C.redo = redo; C.resetSlice = resetSlice;
  C.setTool = setTool; C.setWindow = setWindow; C.resetWindow = resetWindow; C.toggleView = toggleView;
  C.toggleHint = toggleHint;
}());
