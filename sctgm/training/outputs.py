"""What a training run leaves in MODEL_DIR (all written inside the run's temporary folder, which is
renamed to MODEL_DIR at the end, so MODEL_DIR never exists half-made):

- ``model.safetensors``: the best weights;
- ``model.json``: a registry file holding this one model (same schema as data_registry.json, so
  ``SCTGM_REGISTRY=MODEL_DIR/model.json`` and ``sct-gm segment -m MODEL_DIR`` use it), plus a
  ``training`` block (data and their sha256, init model, seed, version, command line, metrics);
- ``training_log.csv``: step, loss, validation Dice, learning rate, seconds (step 0: the init's
  validation); written again, atomically, after every validation, as is
- ``curves.png``: loss and validation Dice against steps (matplotlib, imported here only);
- ``validation.csv``: the ten challenge metrics per validation subject (:mod:`sctgm.metrics`), of
  the trained model used as ``segment`` uses it, on the validation slices.
"""

from __future__ import annotations

import csv
import json
import math
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..filesystem import modes_from_umask
from ..model.registry import WEIGHTS_FILE
from ..recipe import Preprocessing, Recipe
from ..writing import atomic_path
from .data import LabelledVolume, sha256_of

MODEL_JSON = "model.json"
LOG_CSV = "training_log.csv"
CURVES_PNG = "curves.png"
VALIDATION_CSV = "validation.csv"
CHECKPOINT = "checkpoint.pt"
RUN_FILE = "run.json"  # the run's signature, beside its checkpoint while it runs
#: Every file a training run leaves in its folder (finished or interrupted): what ``--overwrite``
#: may remove, and nothing else.
RUN_FILES = frozenset({"model.safetensors", MODEL_JSON, LOG_CSV, CURVES_PNG, VALIDATION_CSV, CHECKPOINT, RUN_FILE})


def is_run_temp(name: str) -> bool:
    """A temporary file of a run's own (``.checkpoint.pt.*.tmp``, ``.run.*.part.json``), left by a run
    killed while writing it."""
    return name.startswith((f".{CHECKPOINT}.", ".run.")) and name.endswith((".tmp", ".part.json"))


#: The ten metrics of the GM challenge (Prados et al. 2017), in validation.csv's order.
CHALLENGE_METRICS = ("dice", "jaccard", "conformity", "sensitivity", "specificity", "precision",
                     "mean_surface_distance_mm", "hausdorff_mm", "skeleton_hausdorff_mm", "skeleton_median_mm")


def model_name(folder: Path) -> str:
    """A registry name from the folder's name (letters, digits, '_' and '-')."""
    name = re.sub(r"[^A-Za-z0-9_-]+", "-", folder.name).strip("-_") or "trained"
    return name if name[0].isalnum() else f"m{name}"


def write_weights(folder: Path, state_dict: dict[str, np.ndarray], filters: int) -> Path:
    from ..model.weights import save_safetensors

    path = folder / WEIGHTS_FILE
    save_safetensors({k: np.ascontiguousarray(v) for k, v in state_dict.items()}, filters, path)
    modes_from_umask(path)  # safetensors writes 0600
    return path


def write_model_json(folder: Path, *, name: str, recipe: Recipe, training: dict[str, Any], description: str) -> Path:
    weights = folder / WEIGHTS_FILE
    sha = sha256_of(weights)
    entry = {
        "description": description,
        "training_data": f"{len(training['data'])} labelled image(s), see 'training'",
        "version": f"trained-{sha[:12]}",
        **recipe.to_entry(),
        "files": [{"name": WEIGHTS_FILE, "role": "weights", "format": "safetensors",
                   "size": weights.stat().st_size, "sha256": sha}],
        "sources": [{"kind": "files", "url": ".", "note": "the folder holding this model.json"}],
        "training": training,
    }
    path = folder / MODEL_JSON
    path.write_text(json.dumps({"schema_version": 1, "models": {name: entry}}, indent=2, default=_json) + "\n")
    return path


def _json(v: Any) -> Any:
    if isinstance(v, (np.floating, np.integer)):
        return v.item()
    if isinstance(v, Path):
        return str(v)
    raise TypeError(type(v))


def write_log(folder: Path, log: Sequence[dict[str, Any]]) -> Path:
    """training_log.csv (atomically: a reader never sees half a file); empty cells where a value does
    not apply (no loss nor lr at step 0, no validation Dice between validations)."""
    path = folder / LOG_CSV

    def cell(v: Any, spec: str) -> str:
        return "" if v is None else format(v, spec)

    with atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["step", "loss", "val_dice", "lr", "seconds"])
        for e in log:
            w.writerow([e["step"], cell(e.get("loss"), ".6f"), cell(e.get("val_dice"), ".6f"),
                        cell(e.get("lr"), ".3e"), e.get("seconds", "")])
    return path


#: The smallest span of curves.png's Dice axis: differences smaller than this (validation noise on a
#: few slices, e.g. 0.8688-0.8700) are not drawn as swings across the whole plot.
MIN_DICE_AXIS_SPAN = 0.1


def dice_axis_limits(values: Sequence[float]) -> tuple[float, float]:
    """(low, high) of the Dice axis: the values with a margin, at least MIN_DICE_AXIS_SPAN, within [0, 1]."""
    lo, hi = min(values), max(values)
    pad = max(0.0, MIN_DICE_AXIS_SPAN - (hi - lo)) / 2 + 0.01
    lo, hi = lo - pad, hi + pad
    if hi > 1.0:
        lo, hi = max(0.0, lo - (hi - 1.0)), 1.0
    if lo < 0.0:
        lo, hi = 0.0, min(1.0, hi - lo)
    return lo, hi


def write_curves(folder: Path, log: Sequence[dict[str, Any]]) -> Path:
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure  # the object API: no pyplot global state

    fig = Figure(figsize=(8, 3.5), dpi=100)
    ax1, ax2 = fig.subplots(1, 2)
    losses = [(e["step"], e["loss"]) for e in log if e.get("loss") is not None]
    if losses:
        ax1.plot(*zip(*losses), lw=1)
    ax1.set(xlabel="step", ylabel="loss (Dice + BCE)", title="training loss")
    val = [(e["step"], e["val_dice"]) for e in log if e.get("val_dice") is not None]
    if val:
        ax2.plot(*zip(*val), marker="o", lw=1, label="validation")
        if val[0][0] == 0:
            ax2.axhline(val[0][1], ls="--", lw=1, color="grey", label="init (step 0)")
        best = max(val, key=lambda sv: sv[1])
        ax2.plot(*best, marker="*", ms=12, ls="none", color="tab:red", label=f"best {best[1]:.3f} (step {best[0]})")
        ax2.set_ylim(*dice_axis_limits([d for _, d in val]))
        ax2.legend(loc="lower right", fontsize=8)
    ax2.set(xlabel="step", ylabel="Dice", title="validation Dice (windows)")
    fig.tight_layout()
    path = folder / CURVES_PNG
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    return path


def validation_metrics(model_dir: Path, val: Sequence[LabelledVolume], *, device: str = "cpu",
                       threads: int | None = None) -> list[dict[str, Any]]:
    """Segment each validation image with the model of ``model_dir`` as ``segment`` would (no cord
    mask) and compare, on its validation slices, with the manual mask: one row per subject."""
    from ..metrics.compare import compare_slices, summarise
    from ..model.install import ensure_model
    from ..segment.pipeline import Segmenter

    seg = Segmenter(ensure_model(str(model_dir)), device=device, engine="torch", threads=threads)
    by_subject: dict[str, list[tuple[np.ndarray, np.ndarray, tuple[float, float]]]] = {}
    for v in val:
        res = seg.segment_image(v.prepared.image)
        reo = v.prepared.reorientation
        pred = reo.apply(res.gm, copy=False)[:, :, v.slices] > 0
        ref = v.gm[:, :, v.slices]
        by_subject.setdefault(v.subject, []).append((pred, ref, (v.prepared.zooms_mm[0], v.prepared.zooms_mm[1])))
    rows = []
    for subject, parts in sorted(by_subject.items()):
        slices: list[dict[str, float]] = []
        for pred, ref, sp in parts:
            slices += compare_slices(pred, ref, sp)
        pred_all = np.concatenate([p for p, _, _ in parts], axis=2) if len({p.shape[:2] for p, _, _ in parts}) == 1 else None
        ref_all = np.concatenate([r for _, r, _ in parts], axis=2) if pred_all is not None else None
        if pred_all is None:  # images of one subject on different grids: summarise each, then average
            pred_all, ref_all = parts[0][0], parts[0][1]
        s = summarise(slices, pred_all, ref_all)
        rows.append({"subject": subject, "n_slices": len(slices), **{k: s[k] for k in CHALLENGE_METRICS},
                     "dice_3d": s["dice_3d"]})
    return rows


def write_validation(folder: Path, rows: Sequence[dict[str, Any]]) -> Path:
    path = folder / VALIDATION_CSV
    cols = ["subject", "n_slices", *CHALLENGE_METRICS, "dice_3d"]
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(cols)
        for r in rows:
            w.writerow(["" if isinstance(r[c], float) and math.isnan(r[c]) else
                        (f"{r[c]:.6g}" if isinstance(r[c], float) else r[c]) for c in cols])
    return path
