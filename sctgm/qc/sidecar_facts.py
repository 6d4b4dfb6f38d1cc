"""What sct-gm's own sidecar beside a GM mask says of the segmentation that made it, for ``sct-gm qc``
on outputs written earlier (``sct-gm segment --qc`` passes the same facts straight from the run).

A sidecar is a file like any other, and anyone can write one that records a mask's hash. So: only a
regular file of bounded size is read (:func:`sctgm.segment.ownership.read_sidecar`); it is used only
when it records this mask's hash (a mask edited since was not the one doubted), its noise only when
it records this image's hash too; and every value is rebuilt from the shape sct-gm writes, anything
else left out (never an error: the entry is then what it is for a mask made elsewhere).
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

from ..filesystem import file_sha256
from ..naming import split_nifti_name
from ..segment.guard import REASON_TEXT
from ..segment.noise import noise_keys
from ..segment.ownership import is_correction, read_sidecar

#: Longest name (model, network, action) taken from a sidecar.
MAX_NAME_CHARS = 200
#: Highest slice index taken from a sidecar (the entry keeps only the image's own slices).
MAX_SLICE = 1_000_000
#: Most enhancement steps taken from a sidecar (sct-gm records at most three: denoise, bias, CLAHE).
MAX_STEPS = 16


def segmentation_facts(gmseg_path: str | os.PathLike[str], image_path: str | os.PathLike[str]) -> dict[str, Any]:
    """:func:`sctgm.qc.add_entry` keyword arguments (``model``, ``model_sha256``, ``doubtful``,
    ``whole_volume``, and ``noise`` when the sidecar's first source is this image) from the sidecar
    sct-gm wrote beside ``gmseg_path``; empty when there is none, when it is a reviewer's correction,
    or when the GM hash it records is not this mask's."""
    side = read_sidecar(Path(split_nifti_name(gmseg_path)[0] + ".json"))
    if side is None or is_correction(side):
        return {}
    hashes = _dict(side.get("Sha256"))
    if not _is_hash_of(_dict(hashes.get("Outputs")).get("gm"), gmseg_path):
        return {}
    gen = side["GeneratedBy"]  # read_sidecar checked it: a record, or a list whose first is one
    model = _dict((gen[0] if isinstance(gen, list) else gen).get("Model"))
    result = _dict(side.get("Result"))
    facts: dict[str, Any] = {"model": _name(model.get("Name")), "model_sha256": _name(model.get("Sha256")),
                             "doubtful": _doubts(result.get("doubtful_slices")),
                             "whole_volume": _name(result.get("whole_volume_network"))}
    sources = hashes.get("Sources")
    if isinstance(sources, list) and sources and _is_hash_of(sources[0], image_path):
        facts["noise"] = _noise(result)
    return facts


def _dict(v: Any) -> dict[str, Any]:
    return v if isinstance(v, dict) else {}


def _name(v: Any) -> str | None:
    return v if isinstance(v, str) and 0 < len(v) <= MAX_NAME_CHARS else None


def _number(v: Any) -> bool:
    """None, or a finite number (no bool, no NaN or infinity, no integer too large for a float)."""
    if v is None:
        return True
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return False
    try:
        return math.isfinite(float(v))
    except OverflowError:
        return False


def _is_hash_of(recorded: Any, path: str | os.PathLike[str]) -> bool:
    if not isinstance(recorded, str):
        return False
    try:
        return recorded == file_sha256(path)
    except OSError:
        return False


def _doubts(v: Any) -> list[dict[str, Any]] | None:
    """The doubtful-slice records, each rebuilt from the keys sct-gm writes (known reasons only; one
    record per slice, the first), or None when there is no list."""
    if not isinstance(v, list):
        return None
    out: dict[int, dict[str, Any]] = {}
    for d in v:
        if not isinstance(d, dict):
            continue
        k, reasons = d.get("slice"), d.get("reasons")
        if isinstance(k, bool) or not isinstance(k, int) or not 0 <= k <= MAX_SLICE or k in out \
                or not isinstance(reasons, list):
            continue
        known = [r for r in reasons if isinstance(r, str) and r in REASON_TEXT]
        if known:
            dice = d.get("networks_dice")
            out[k] = {"slice": k, "reasons": list(dict.fromkeys(known)), "action": _name(d.get("action")),
                      "networks_dice": float(dice) if _number(dice) and dice is not None else None,
                      "network": _name(d.get("network"))}
    return list(out.values()) or None


def _noise(result: dict[str, Any]) -> dict[str, Any] | None:
    """The sidecar's noise keys when all are there and of the types sct-gm writes, else None."""
    keys = list(noise_keys({}))
    if not all(k in result for k in keys):
        return None
    n = {k: result[k] for k in keys}
    per_slice, steps = n["noise_sigma_rel_p99_per_slice"], n["enhancement_steps"]
    ok = (all(_number(n[k]) for k in ("noise_sigma", "noise_sigma_rel_p99", "noise_auto_threshold_rel_p99"))
          and (per_slice is None or isinstance(per_slice, list) and all(_number(x) for x in per_slice))
          and isinstance(n["noise_above_auto_threshold"], (bool, type(None)))
          and _name(n["denoised_with"]) is not None
          and isinstance(steps, list) and len(steps) <= MAX_STEPS and all(_name(x) is not None for x in steps))
    return n if ok else None
