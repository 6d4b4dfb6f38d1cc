/* sct-gm QC report. Plain JavaScript, no dependency, no network.
 * Data: window.SCTGM_QC = {report: {report_id, created}, entries: [...]} from index.js.
 * Every string from the data reaches the page through textContent or setAttribute, never as HTML.
 * Ratings live in localStorage under "sctgm-qc/ratings/<report_id>" as {entry_id: rating}.
 */
(function () {
  "use strict";

  var DATA = window.SCTGM_QC || { report: { report_id: "none" }, entries: [] };
  var ENTRIES = Array.isArray(DATA.entries) ? DATA.entries : [];
  var BY_ID = Object.create(null);
  ENTRIES.forEach(function (e) { BY_ID[e.id] = e; });
  var CYCLE = ["unrated", "pass", "fail", "artifact"];
  var STORE_KEY = "sctgm-qc/ratings/" + String(DATA.report && DATA.report.report_id);
  var SVGNS = "http://www.w3.org/2000/svg";

  var state = { sortKey: "timestamp", sortDir: -1, filter: "", flaggedOnly: false, ratingFilter: "all",
                current: null, overlay: true, rows: [] };
  var ratings = loadRatings();

  // ---------- ratings (persisted) ----------
  function loadRatings() {
    try {
      var r = JSON.parse(window.localStorage.getItem(STORE_KEY) || "{}");
      return r && typeof r === "object" && !Array.isArray(r) ? r : {};
    } catch (err) { return {}; }
  }
  function saveRatings() {
    try { window.localStorage.setItem(STORE_KEY, JSON.stringify(ratings)); }
    catch (err) { setStatus("Could not save ratings in this browser: " + err); }
  }
  function ratingOf(id) {
    var r = ratings[id];
    return CYCLE.indexOf(r) > 0 ? r : "unrated";
  }
  function setRating(id, r) {
    if (!BY_ID[id] || CYCLE.indexOf(r) < 0) { return; }
    if (r === "unrated") { delete ratings[id]; } else { ratings[id] = r; }
    saveRatings();
    refresh();
  }
  window.addEventListener("storage", function (ev) {
    if (ev.key === STORE_KEY) { ratings = loadRatings(); refresh(); }
  });

  // ---------- small DOM helpers ----------
  function el(tag, attrs, children) {
    var node = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (k) { node.setAttribute(k, String(attrs[k])); });
    (children || []).forEach(function (c) {
      node.appendChild(typeof c === "string" ? document.createTextNode(c) : c);
    });
    return node;
  }
  function svg(tag, attrs) {
    var node = document.createElementNS(SVGNS, tag);
    Object.keys(attrs || {}).forEach(function (k) { node.setAttribute(k, String(attrs[k])); });
    return node;
  }
  // ---------- noise (estimated by sct-gm, % of the 99th intensity percentile) ----------
  function noiseOf(e) { return e.noise || {}; }
  function noisePct(e) {
    var v = noiseOf(e).noise_sigma_rel_p99;
    return typeof v === "number" && isFinite(v) ? 100 * v : null;
  }
  function isNoisy(e) { return noiseOf(e).noise_above_auto_threshold === true; }
  function noiseCell(e) {
    // compact: the figure itself becomes a purple NOISY pill above the auto-denoise threshold
    var pct = noisePct(e);
    if (!isNoisy(e)) { return el("td", { "class": "num noise" }, [fmt(pct, 1)]); }
    return el("td", { "class": "num noise noisy" }, [
      el("span", { "class": "badge noisy", title: "NOISY: noise above the auto-denoise threshold (" +
                   fmt(100 * noiseOf(e).noise_auto_threshold_rel_p99, 1) + " % of the 99th percentile)" },
         [fmt(pct, 1) + " !"])]);
  }
  function noiseText(e) {
    var n = noiseOf(e), pct = noisePct(e);
    if (pct === null) { return ""; }
    var s = fmt(pct, 2) + " % of the 99th percentile";
    if (typeof n.noise_auto_threshold_rel_p99 === "number") {
      s += isNoisy(e) ? " \u2014 NOISY: above the auto-denoise threshold (" : " (auto-denoise threshold ";
      s += fmt(100 * n.noise_auto_threshold_rel_p99, 1) + " %)";
    }
    if (n.denoised_with) { s += "; denoised: " + n.denoised_with; }
    if ((n.enhancement_steps || []).length) { s += "; steps: " + n.enhancement_steps.join(", "); }
    return s;
  }
  function noiseSlicesText(e) {
    var per = noiseOf(e).noise_sigma_rel_p99_per_slice || [];
    return per.map(function (v, i) { return i + ": " + (typeof v === "number" ? fmt(100 * v, 1) : "\u2013"); })
      .join(", ");
  }

  function text(v) { return v === null || v === undefined ? "" : String(v); }
  function fmt(v, digits) { return typeof v === "number" && isFinite(v) ? v.toFixed(digits) : "\u2013"; }
  function setStatus(msg) { document.getElementById("status").textContent = msg; }
  function shortDate(e) { return text(e.date).replace("T", " ").slice(0, 16); }
  function entryUrl(e, file) { return "entries/" + encodeURIComponent(e.id) + "/" + encodeURIComponent(file); }

  // ---------- list ----------
  function visibleEntries() {
    var q = state.filter.toLowerCase();
    var rows = ENTRIES.filter(function (e) {
      if (state.flaggedOnly && !(e.n_flagged > 0)) { return false; }
      if (state.ratingFilter !== "all" && ratingOf(e.id) !== state.ratingFilter) { return false; }
      if (!q) { return true; }
      return [e.subject, e.dataset, e.image_name, e.model, e.id, e.image].some(function (v) {
        return text(v).toLowerCase().indexOf(q) >= 0;
      });
    });
    var key = state.sortKey, dir = state.sortDir;
    rows.sort(function (a, b) {
      var va = key === "rating" ? CYCLE.indexOf(ratingOf(a.id)) : key === "noise_pct" ? noisePct(a) : a[key];
      var vb = key === "rating" ? CYCLE.indexOf(ratingOf(b.id)) : key === "noise_pct" ? noisePct(b) : b[key];
      if (va === null || va === undefined) { va = ""; }
      if (vb === null || vb === undefined) { vb = ""; }
      var c = (typeof va === "number" && typeof vb === "number") ? va - vb
        : text(va).localeCompare(text(vb), undefined, { numeric: true });
      return c !== 0 ? c * dir : (b.timestamp || 0) - (a.timestamp || 0);
    });
    return rows;
  }

  function renderList() {
    state.rows = visibleEntries();
    var tbody = document.querySelector("#entries tbody");
    var frag = document.createDocumentFragment();
    state.rows.forEach(function (e) {
      var r = ratingOf(e.id);
      var tr = el("tr", { "data-id": e.id }, [
        el("td", { "class": "rating " + r }, [r === "unrated" ? "\u2013" : r]),
        el("td", {}, [el("span", { "class": "badge " + (e.n_flagged > 0 ? "flags" : "noflags"),
                                   title: e.n_flagged > 0 ? "slices flagged automatically" : "no flags" },
                         [text(e.n_flagged || 0)])]),
        el("td", { "class": "name", title: e.dataset ? "dataset " + text(e.dataset) : "" },
           [(e.dataset ? text(e.dataset) + " / " : "") + text(e.subject)]),
        el("td", { "class": "name", title: text(e.image) }, [text(e.image_name)]),
        el("td", { title: shortDate(e) }, [shortDate(e).slice(5)]),  // MM-DD hh:mm: the year is in the title
        el("td", { "class": "name" }, [text(e.model) || "\u2013"]),
        el("td", { "class": "num" }, [fmt(e.gm_volume_mm3, 1)]),
        el("td", { "class": "num" }, [fmt(e.gm_mean_area_mm2, 2)]),
        noiseCell(e),
        el("td", {}, [text(e.sctgm_version)])
      ]);
      if (state.current === e.id) { tr.className = "active"; }
      tr.addEventListener("click", function () { select(e.id); });
      frag.appendChild(tr);
    });
    tbody.textContent = "";
    tbody.appendChild(frag);
    document.getElementById("empty").hidden = state.rows.length > 0;
    document.querySelectorAll("#entries th").forEach(function (th) {
      var on = th.getAttribute("data-key") === state.sortKey;
      th.className = on ? "sorted " + (state.sortDir > 0 ? "asc" : "desc") : "";
    });
    renderSummary();
  }

  function renderSummary() {
    var counts = { pass: 0, fail: 0, artifact: 0, unrated: 0 }, flagged = 0;
    var noisy = 0;
    ENTRIES.forEach(function (e) { counts[ratingOf(e.id)] += 1; if (e.n_flagged > 0) { flagged += 1; }
                                   if (isNoisy(e)) { noisy += 1; } });
    document.getElementById("summary").textContent = ENTRIES.length + " entries (" + state.rows.length +
      " shown), " + flagged + " with flagged slices, " + noisy + " noisy \u00b7 pass " + counts.pass + " \u00b7 fail " + counts.fail +
      " \u00b7 artifact " + counts.artifact + " \u00b7 unrated " + counts.unrated;
  }

  // ---------- one entry ----------
  function select(id) {
    if (!BY_ID[id]) { return; }
    state.current = id;
    document.querySelectorAll("#entries tbody tr").forEach(function (tr) {
      var on = tr.getAttribute("data-id") === id;
      tr.className = on ? "active" : "";
      if (on && tr.scrollIntoView) { tr.scrollIntoView({ block: "nearest" }); }
    });
    try { history.replaceState(null, "", "#" + encodeURIComponent(id)); } catch (err) { /* file:// quirks */ }
    renderViewer();
  }

  function renderViewer() {
    var view = document.getElementById("viewer");
    view.textContent = "";
    var e = BY_ID[state.current];
    if (!e) { view.appendChild(el("p", { "class": "empty" }, ["No entry selected."])); return; }
    view.setAttribute("data-id", e.id);
    view.appendChild(el("h2", {}, [text(e.subject) + " \u2014 " + text(e.image_name)]));

    var r = ratingOf(e.id);
    var buttons = el("div", { "class": "rate-buttons" }, ["Rating: "]);
    CYCLE.slice(1).concat(["unrated"]).forEach(function (name) {
      var b = el("button", { type: "button", "class": name, "aria-pressed": r === name ? "true" : "false",
                             "data-rating": name }, [name]);
      b.addEventListener("click", function () { setRating(e.id, name); });
      buttons.appendChild(b);
      buttons.appendChild(document.createTextNode(" "));
    });
    view.appendChild(buttons);

    var meta = el("dl", { "class": "meta" }, []);
    function row(k, v) { if (v !== null && v !== undefined && v !== "") { meta.appendChild(el("dt", {}, [k])); meta.appendChild(el("dd", {}, [text(v)])); } }
    row("Dataset", e.dataset);
    row("Image", e.image);
    row("GM mask", e.gmseg);
    row("Cord mask", e.cord);
    row("WM mask", e.wmseg);
    row("Model", e.model ? text(e.model) + (e.model_sha256 ? " (sha256 " + text(e.model_sha256).slice(0, 12) + "\u2026)" : "") : "");
    row("Date", shortDate(e));
    row("sct-gm", e.sctgm_version);
    row("Voxel (mm)", (e.voxel_mm || []).join(" \u00d7 "));
    row("GM volume", fmt(e.gm_volume_mm3, 1) + " mm\u00b3, mean area " + fmt(e.gm_mean_area_mm2, 2) + " mm\u00b2/slice");
    row("Noise", noiseText(e));
    row("Noise per slice (%)", noiseSlicesText(e));
    row("Networks", e.whole_volume_network ? "they disagreed on most slices: " + text(e.whole_volume_network) +
        "'s mask stood for the whole volume (review it whole)" : "");
    if (e.wm_mean_area_mm2 !== null && e.wm_mean_area_mm2 !== undefined) { row("WM", "mean area " + fmt(e.wm_mean_area_mm2, 2) + " mm\u00b2/slice"); }
    Object.keys(e.extra || {}).forEach(function (k) { row(k, typeof e.extra[k] === "object" ? JSON.stringify(e.extra[k]) : e.extra[k]); });
    view.appendChild(meta);

    var s = e.slices || { index: [], flags: [] };
    var flaggedItems = [];
    (s.flags || []).forEach(function (fl, i) {
      if (fl.length) {
        flaggedItems.push(el("li", {}, ["slice " + s.index[i] + ": " + fl.map(function (f) {
          return (e.flag_text && e.flag_text[f]) || f; }).join("; ")]));
      }
    });
    if (flaggedItems.length) {
      view.appendChild(el("p", { "class": "flaghead" }, [flaggedItems.length + " flagged slice(s), framed in orange:"]));
      view.appendChild(el("ul", { "class": "flaglist" }, flaggedItems));
    } else {
      view.appendChild(el("p", { "class": "noflag" }, ["No slice flagged automatically."]));
    }

    var m = e.mosaic || {};
    var box = el("div", { "class": "mosaic" + (state.overlay ? "" : " off"), id: "mosaic" }, [
      el("img", { "class": "background", alt: "axial slices", src: entryUrl(e, m.background || "image.png"),
                  width: m.width, height: m.height }),
      el("img", { "class": "overlay", alt: "", src: entryUrl(e, m.overlay || "overlay.png") })
    ]);
    box.addEventListener("click", toggleOverlay);
    var toggle = el("button", { type: "button", id: "toggle-overlay" }, [overlayLabel()]);
    toggle.addEventListener("click", toggleOverlay);
    view.appendChild(el("div", {}, [toggle, " ",
      el("span", { "class": "legend" }, [el("span", { "class": "swatch gm" }, []), "GM"].concat(
        e.wmseg || e.cord ? [el("span", { "class": "swatch wm" }, []), "WM"] : []))]));
    view.appendChild(box);
    view.appendChild(el("p", { "class": "legend" }, [
      "Radiological view: patient Right on the left of each tile (R | L), Anterior at the top (A/P). " +
      "Tiles run from inferior (first) to superior; the number is the slice index in the file. " +
      (m.shown < m.total ? "Showing " + m.shown + " of " + m.total + " slices (flagged ones always). " : "") +
      "Click the image or press \u2192 to toggle the overlay."]));

    view.appendChild(plot("GM area per slice (mm\u00b2)", s.index || [], s.gm_mm2 || [], s.flags || [], "#dc2626"));
    if (s.wm_mm2) { view.appendChild(plot("WM area per slice (mm\u00b2)", s.index, s.wm_mm2, s.flags, "#2563eb")); }
    if (window.sctgmEditor) { window.sctgmEditor.decorate(view, e); }  // corrected slices; the editor when served
  }

  function overlayLabel() { return state.overlay ? "Overlay: on" : "Overlay: off"; }
  function toggleOverlay() {
    state.overlay = !state.overlay;
    var box = document.getElementById("mosaic");
    if (box) { box.className = "mosaic" + (state.overlay ? "" : " off"); }
    var b = document.getElementById("toggle-overlay");
    if (b) { b.textContent = overlayLabel(); }
  }

  function plot(title, xs, ys, flags, color) {
    var W = 520, H = 150, L = 40, R = 10, T = 18, B = 24;
    var root = svg("svg", { "class": "plot", width: W, height: H, viewBox: "0 0 " + W + " " + H, role: "img" });
    var t = svg("text", { x: L, y: 12 }); t.textContent = title; root.appendChild(t);
    var n = ys.length;
    if (!n) { return root; }
    var ymax = Math.max.apply(null, ys.concat([1])) * 1.1;
    function px(i) { return L + (n === 1 ? (W - L - R) / 2 : i * (W - L - R) / (n - 1)); }
    function py(v) { return T + (H - T - B) * (1 - v / ymax); }
    root.appendChild(svg("line", { x1: L, y1: py(0), x2: W - R, y2: py(0), stroke: "#999" }));
    root.appendChild(svg("line", { x1: L, y1: T, x2: L, y2: py(0), stroke: "#999" }));
    [0, ymax / 1.1 / 2, ymax / 1.1].forEach(function (v) {
      var lab = svg("text", { x: L - 4, y: py(v) + 3, "text-anchor": "end" }); lab.textContent = v.toFixed(v < 10 ? 1 : 0);
      root.appendChild(lab);
    });
    var step = Math.max(1, Math.ceil(n / 20));
    var pts = [];
    ys.forEach(function (v, i) {
      pts.push(px(i).toFixed(1) + "," + py(v).toFixed(1));
      if (i % step === 0 || i === n - 1) {
        var lab = svg("text", { x: px(i), y: H - 8, "text-anchor": "middle" }); lab.textContent = String(xs[i]);
        root.appendChild(lab);
      }
    });
    root.appendChild(svg("polyline", { points: pts.join(" "), fill: "none", stroke: color, "stroke-width": 1.5 }));
    ys.forEach(function (v, i) {
      var bad = flags[i] && flags[i].length > 0;
      var c = svg("circle", { cx: px(i), cy: py(v), r: bad ? 5 : 2.5, fill: bad ? "#ea580c" : color,
                              "class": bad ? "flagged" : "" });
      var tip = svg("title", {}); tip.textContent = "slice " + xs[i] + ": " + v + " mm\u00b2" + (bad ? " (flagged)" : "");
      c.appendChild(tip);
      root.appendChild(c);
    });
    var xl = svg("text", { x: W - R, y: H - 0, "text-anchor": "end" }); xl.textContent = "slice";
    root.appendChild(xl);
    return root;
  }

  // ---------- navigation ----------
  function move(delta) {
    if (!state.rows.length) { return; }
    var i = -1;
    for (var j = 0; j < state.rows.length; j++) { if (state.rows[j].id === state.current) { i = j; break; } }
    var next = i < 0 ? (delta > 0 ? 0 : state.rows.length - 1) : Math.min(state.rows.length - 1, Math.max(0, i + delta));
    select(state.rows[next].id);
  }
  function cycleRating() {
    if (!state.current) { return; }
    var i = CYCLE.indexOf(ratingOf(state.current));
    setRating(state.current, CYCLE[(i + 1) % CYCLE.length]);
  }
  function refresh() { renderList(); renderViewer(); }

  document.addEventListener("keydown", function (ev) {
    var tag = ev.target && ev.target.tagName;
    if (tag === "INPUT" || tag === "SELECT" || tag === "TEXTAREA" || ev.ctrlKey || ev.metaKey || ev.altKey) { return; }
    switch (ev.key) {
      case "ArrowDown": case "j": move(1); break;
      case "ArrowUp": case "k": move(-1); break;
      case "ArrowRight": case "ArrowLeft": toggleOverlay(); break;
      case "f": case "F": cycleRating(); break;
      default: return;
    }
    ev.preventDefault();
  });

  // ---------- export ----------
  function exportRecords() {
    return ENTRIES.map(function (e) {
      return { id: e.id, subject: e.subject, image_name: e.image_name, image: e.image, gmseg: e.gmseg,
               date: e.date, model: e.model, gm_volume_mm3: e.gm_volume_mm3, gm_mean_area_mm2: e.gm_mean_area_mm2,
               n_flagged: e.n_flagged, noise_pct: noisePct(e), noisy: isNoisy(e), rating: ratingOf(e.id) };
    });
  }
  var CSV_COLS = ["id", "subject", "image_name", "image", "gmseg", "date", "model", "gm_volume_mm3",
                  "gm_mean_area_mm2", "n_flagged", "noise_pct", "noisy", "rating"];
  function csvCell(v) {
    if (v === null || v === undefined) { return ""; }
    var s = String(v);
    if (typeof v === "string" && /^[=+\-@\t\r]/.test(s)) { s = "'" + s; }  // no formulas in spreadsheets
    return /[",\r\n]/.test(s) ? "\"" + s.replace(/"/g, "\"\"") + "\"" : s;
  }
  function yamlFiles(rating) {
    // SCT's manual-correction reads FILES_GMSEG: the *image* files whose GM segmentation must be corrected
    // (it finds <image>_gmseg.nii.gz itself). JSON strings are valid YAML double-quoted scalars.
    var files = ENTRIES.filter(function (e) { return ratingOf(e.id) === rating; })
      .map(function (e) { return e.image; });
    if (!files.length) { return "FILES_GMSEG: []\n"; }
    return "FILES_GMSEG:\n" + files.map(function (f) { return "- " + JSON.stringify(f) + "\n"; }).join("");
  }
  function exportText(kind) {
    if (kind === "json") {
      return JSON.stringify({ report_id: DATA.report && DATA.report.report_id, exported: new Date().toISOString(),
                              ratings: exportRecords() }, null, 1) + "\n";
    }
    if (kind === "csv") {
      return [CSV_COLS.join(",")].concat(exportRecords().map(function (r) {
        return CSV_COLS.map(function (c) { return csvCell(r[c]); }).join(",");
      })).join("\r\n") + "\r\n";
    }
    if (kind === "fail" || kind === "artifact") { return yamlFiles(kind); }
    throw new Error("unknown export " + kind);
  }
  var EXPORTS = { json: ["qc_ratings.json", "application/json"], csv: ["qc_ratings.csv", "text/csv"],
                  fail: ["qc_fail.yml", "text/yaml"], artifact: ["qc_artifact.yml", "text/yaml"] };
  function download(kind) {
    var spec = EXPORTS[kind];
    var blob = new Blob([exportText(kind)], { type: spec[1] });
    var a = el("a", { download: spec[0] }, []);
    a.href = URL.createObjectURL(blob);
    document.body.appendChild(a);
    a.click();
    setTimeout(function () { URL.revokeObjectURL(a.href); a.remove(); }, 2000);
    setStatus("Exported " + spec[0]);
  }

  // ---------- import ----------
  function parseCsv(s) {
    var rows = [], row = [], cell = "", q = false;
    for (var i = 0; i < s.length; i++) {
      var ch = s[i];
      if (q) {
        if (ch === "\"") { if (s[i + 1] === "\"") { cell += "\""; i++; } else { q = false; } } else { cell += ch; }
      } else if (ch === "\"") { q = true; }
      else if (ch === ",") { row.push(cell); cell = ""; }
      else if (ch === "\n" || ch === "\r") {
        if (ch === "\r" && s[i + 1] === "\n") { i++; }
        row.push(cell); cell = ""; if (row.length > 1 || row[0] !== "") { rows.push(row); } row = [];
      } else { cell += ch; }
    }
    if (cell !== "" || row.length) { row.push(cell); rows.push(row); }
    return rows;
  }
  function yamlItems(s) {
    var items = [], inKey = false;
    s.split(/\r?\n/).forEach(function (line) {
      if (/^[^\s#-]/.test(line)) { inKey = /^FILES_GMSEG\s*:/.test(line); return; }
      var m = inKey && line.match(/^\s*-\s*(.+?)\s*$/);
      if (!m) { return; }
      var v = m[1];
      if (v[0] === "\"") { try { v = JSON.parse(v); } catch (err) { v = v.slice(1, -1); } }
      else if (v[0] === "'") { v = v.slice(1, -1).replace(/''/g, "'"); }
      items.push(v);
    });
    return items;
  }
  // A listed path (a qc_fail.yml item, or the image of a JSON/CSV row whose id is not this report's)
  // names the entries whose image is that very path; else those whose image path shares the most
  // trailing components with it, whole components ("A/t2s.nii.gz" names ".../data/A/t2s.nii.gz" before
  // ".../data/BA/t2s.nii.gz"; a list written on another machine, under another root, still matches),
  // an image made of exactly those components first. Several image files tied: "ambiguous", none
  // named (a guess would rate the wrong scan). Entries of one image (several masks) are all named.
  function pathParts(p) {
    var parts = text(p).split(/[\\/]+/).filter(function (c) { return c !== "" && c !== "."; });
    while (parts[0] === "..") { parts.shift(); }
    return parts;
  }
  function matchImage(path, images) {  // pure: -> {how: "exact"|"suffix"|"ambiguous"|"none", indices}
    var hits = [], best = 0;
    images.forEach(function (im, i) { if (im === path) { hits.push(i); } });
    if (hits.length) { return { how: "exact", indices: hits }; }
    var want = pathParts(path);
    images.forEach(function (im, i) {
      var have = pathParts(im), k = 0;
      while (k < want.length && k < have.length && have[have.length - 1 - k] === want[want.length - 1 - k]) { k += 1; }
      if (k === 0 || k < best) { return; }
      if (k > best) { best = k; hits = []; }
      hits.push(i);
    });
    if (!hits.length) { return { how: "none", indices: [] }; }
    var whole = hits.filter(function (i) { return pathParts(images[i]).length === want.length && best === want.length; });
    if (whole.length) { hits = whole; }
    var distinct = hits.filter(function (i, k) {
      return hits.findIndex(function (j) { return images[j] === images[i]; }) === k;
    });
    return { how: distinct.length > 1 ? "ambiguous" : "suffix", indices: hits };
  }
  function listed(paths) {
    var shown = paths.slice(0, 5).join(", ");
    return paths.length > 5 ? shown + ", \u2026 (" + (paths.length - 5) + " more)" : shown;
  }
  function importText(content, filename) {
    var name = text(filename).toLowerCase(), pairs = [], several = [], unmatched = [];
    var images = ENTRIES.map(function (e) { return e.image; });
    function byImage(path, rating) {
      if (text(path) === "") { return; }
      var m = matchImage(path, images);
      if (m.how === "ambiguous") { several.push(text(path)); }
      else if (m.how === "none") { unmatched.push(text(path)); }
      else { m.indices.forEach(function (i) { pairs.push([ENTRIES[i].id, rating]); }); }
    }
    if (/\.ya?ml$/.test(name)) {
      var r = name.indexOf("artifact") >= 0 ? "artifact" : "fail";
      yamlItems(content).forEach(function (p) { byImage(p, r); });
    } else if (/\.csv$/.test(name)) {
      var rows = parseCsv(content), head = rows.shift() || [];
      var iid = head.indexOf("id"), irt = head.indexOf("rating"), iim = head.indexOf("image");
      rows.forEach(function (row) {
        var id = row[iid], rt = row[irt];
        if (BY_ID[id]) { pairs.push([id, rt]); }
        else if (iim >= 0) { byImage(row[iim], rt); }
      });
    } else {
      var obj = JSON.parse(content);
      var list = Array.isArray(obj) ? obj : Array.isArray(obj.ratings) ? obj.ratings
        : Object.keys(obj).map(function (k) { return { id: k, rating: obj[k] }; });
      list.forEach(function (it) {
        if (!it || typeof it !== "object") { return; }
        if (BY_ID[it.id]) { pairs.push([it.id, it.rating]); }
        else if (it.image) { byImage(it.image, it.rating); }
      });
    }
    var done = Object.create(null);
    pairs.forEach(function (p) {
      if (CYCLE.indexOf(p[1]) < 0) { return; }
      if (p[1] === "unrated") { delete ratings[p[0]]; } else { ratings[p[0]] = p[1]; }
      done[p[0]] = true;
    });
    var n = Object.keys(done).length;
    saveRatings();
    refresh();
    var msg = "Imported " + n + " rating(s) from " + text(filename);
    if (several.length) {
      msg += "; " + several.length + (several.length === 1 ? " path" : " paths") +
        " matched several entries; not imported: " + listed(several);
    }
    if (unmatched.length) {
      msg += "; " + unmatched.length + (unmatched.length === 1 ? " path" : " paths") +
        " matched no entry: " + listed(unmatched);
    }
    setStatus(msg);
    return n;
  }

  // ---------- wiring ----------
  function init() {
    document.querySelectorAll("#entries th").forEach(function (th) {
      th.addEventListener("click", function () {
        var k = th.getAttribute("data-key");
        if (state.sortKey === k) { state.sortDir = -state.sortDir; } else { state.sortKey = k; state.sortDir = k === "timestamp" || k === "n_flagged" || k === "noise_pct" ? -1 : 1; }
        renderList();
      });
    });
    document.getElementById("filter").addEventListener("input", function (ev) { state.filter = ev.target.value; renderList(); });
    document.getElementById("flagged-only").addEventListener("change", function (ev) { state.flaggedOnly = ev.target.checked; renderList(); });
    document.getElementById("rating-filter").addEventListener("change", function (ev) { state.ratingFilter = ev.target.value; renderList(); });
    document.getElementById("export-json").addEventListener("click", function () { download("json"); });
    document.getElementById("export-csv").addEventListener("click", function () { download("csv"); });
    document.getElementById("export-fail").addEventListener("click", function () { download("fail"); });
    document.getElementById("export-artifact").addEventListener("click", function () { download("artifact"); });
    document.getElementById("import-file").addEventListener("change", function (ev) {
      var f = ev.target.files && ev.target.files[0];
      if (!f) { return; }
      var reader = new FileReader();
      reader.onload = function () {
        try { importText(String(reader.result), f.name); } catch (err) { setStatus("Import failed: " + err.message); }
        ev.target.value = "";
      };
      reader.readAsText(f);
    });
    if (!window.SCTGM_QC) { setStatus("index.js is missing or unreadable: no entries to show."); }
    renderList();
    var wanted = "";
    try { wanted = decodeURIComponent(location.hash.slice(1)); } catch (err) { wanted = ""; }
    select(BY_ID[wanted] ? wanted : (state.rows[0] && state.rows[0].id));
    document.body.setAttribute("data-ready", "1");
  }

  // For tests and scripting: no data leaves the page.
  window.sctgmQc = { exportText: exportText, importText: importText, matchImage: matchImage,
                     select: select, ratingOf: ratingOf,
                     state: state, storeKey: STORE_KEY, el: el };  // el: the editor builds its DOM with it
  init();
}());
