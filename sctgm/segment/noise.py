"""The noise keys that a sidecar and a QC entry record, from one source.

The pipeline's enhancement report (:func:`sctgm.segment.enhance.apply`) holds the noise estimate with
its per-slice lists in the canonical (LAS) slice order; :func:`in_file_order` re-indexes them by the
file's own S-I slice index (the number a viewer shows), and :func:`noise_keys` turns the report into
the flat keys of a sidecar's ``Result`` and a QC entry's ``noise`` block. :func:`estimate_keys` gives
the same keys for an image that was not segmented here (``sct-gm qc`` on existing masks).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..geometry import Reorientation, file_slice_index
from .enhance import AUTO_THRESHOLD_REL, estimate_noise_sigma

#: The per-slice lists of a noise estimate (:meth:`sctgm.segment.enhance.NoiseEstimate.to_dict`).
PER_SLICE_KEYS = ("sigma_per_slice", "sigma_rel_p99_per_slice")


def in_file_order(report: dict[str, Any], reo: Reorientation) -> dict[str, Any]:
    """The enhancement report with its per-slice noise lists indexed by the file's own S-I slice index
    instead of the canonical one."""
    noise = report.get("noise")
    if not noise:
        return report
    n = len(noise["sigma_per_slice"])
    order = [0] * n
    for k in range(n):
        order[file_slice_index(reo, k)] = k
    noise = {**noise, **{key: [noise[key][k] for k in order] for key in PER_SLICE_KEYS}}
    return {**report, "noise": noise}


def noise_keys(report: dict[str, Any]) -> dict[str, Any]:
    """The sidecar's noise keys (and a QC entry's ``noise`` block) from an enhancement report whose
    per-slice lists are in the file's slice order (:func:`in_file_order`)."""
    noise = report.get("noise") or {}
    settings = report.get("settings") or {}
    rel = noise.get("sigma_rel_p99")
    threshold = settings.get("auto_threshold_rel")
    return {
        "noise_sigma": noise.get("sigma"),
        "noise_sigma_rel_p99": rel,
        "noise_sigma_rel_p99_per_slice": noise.get("sigma_rel_p99_per_slice"),
        "noise_auto_threshold_rel_p99": threshold,
        "noise_above_auto_threshold": None if rel is None or threshold is None else bool(rel > threshold),
        "denoised_with": report.get("denoise", "off"),
        "enhancement_steps": list(report.get("steps", [])),
    }


def estimate_keys(canonical: np.ndarray, reo: Reorientation) -> dict[str, Any]:
    """:func:`noise_keys` of a canonical volume that no denoiser ran on (its noise estimated here)."""
    report = {"noise": estimate_noise_sigma(canonical).to_dict(),
              "settings": {"auto_threshold_rel": AUTO_THRESHOLD_REL}, "denoise": "off"}
    return noise_keys(in_file_order(report, reo))
