"""The image-enhancement record: which enhancement steps run before segmentation, and their
constants (the steps themselves: :mod:`sctgm.segment.enhance`). Plain data at the bottom layer, stored in
a model recipe's ``preprocessing.enhancement`` (:mod:`sctgm.recipe`) and in every sidecar.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Any

import numpy as np

from .exceptions import SctGmError

# -- enhancement constants (the steps themselves: sctgm.segment.enhance) -----------------------
DENOISERS = ("off", "auto", "nlm", "tv", "wavelet", "bilateral")
BIAS_METHODS = ("off", "n4", "smooth")

#: ``denoise="auto"`` denoises (with :data:`AUTO_METHOD`) when the estimated noise, relative to the
#: 99th percentile, exceeds this (chosen by measurement: see bench/robustness.py, docs/robustness.md;
#: the unmodified labelled scans read 2.4-3.1 %, so they are left byte-identical).
AUTO_THRESHOLD_REL = 0.035
AUTO_METHOD = "nlm"
#: Denoisers remove only the noise above this level (relative to the 99th percentile): their sigma is
#: sqrt(sigma^2 - floor^2). The published networks were trained on scans about this noisy; removing all
#: of it smooths away texture they rely on (measured: full NLM on clean mt1 costs `challenge` 0.06 Dice).
NOISE_FLOOR_REL = 0.03


# -- enhancement ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Enhancement:
    """Which enhancement steps run before segmentation (stored in a model's preprocessing block and
    in the sidecar). The default is today's behaviour: nothing runs.

    ``denoise``: 'off', 'auto' (``auto_method`` when the estimated relative noise exceeds
    ``auto_threshold_rel``), 'nlm' (non-local means), 'tv' (total variation), 'wavelet' or
    'bilateral'; ``strength`` scales the denoiser's smoothing (1 = tuned default); ``noise_floor_rel``:
    the noise left in, relative to the 99th percentile (0: remove all the estimated noise);
    ``bias``: 'off', 'n4' (SimpleITK N4, 3D) or 'smooth' (in-plane division by a heavily smoothed
    foreground, slice scaling to the volume's median); ``clahe``: contrast-limited adaptive histogram
    equalisation per slice; ``clip_percentiles``: clip intensities to these percentiles (None: no);
    ``min_removed_fraction``: the denoiser removes at least this fraction of the estimated noise
    sigma even under the floor (``--denoise on`` sets :data:`ON_MIN_REMOVED_FRACTION`, so that asking
    for denoising always denoises; 0, the default, is not written by :meth:`to_dict`).
    """

    denoise: str = "off"
    strength: float = 1.0
    noise_floor_rel: float = NOISE_FLOOR_REL
    auto_threshold_rel: float = AUTO_THRESHOLD_REL
    auto_method: str = AUTO_METHOD
    bias: str = "off"
    clahe: bool = False
    clip_percentiles: tuple[float, float] | None = None
    min_removed_fraction: float = 0.0

    def __post_init__(self) -> None:
        if not (np.isfinite(self.min_removed_fraction) and 0.0 <= self.min_removed_fraction <= 1.0):
            raise SctGmError(f"min_removed_fraction {self.min_removed_fraction}: expected a fraction "
                             "in [0, 1]")
        if self.denoise not in DENOISERS:
            raise SctGmError(f"denoise {self.denoise!r}: expected one of {', '.join(DENOISERS)}")
        if self.auto_method not in DENOISERS[2:]:
            raise SctGmError(f"auto denoiser {self.auto_method!r}: expected one of "
                             f"{', '.join(DENOISERS[2:])}")
        if self.bias not in BIAS_METHODS:
            raise SctGmError(f"bias correction {self.bias!r}: expected one of {', '.join(BIAS_METHODS)}")
        if not (np.isfinite(self.strength) and self.strength > 0):
            raise SctGmError(f"denoising strength {self.strength}: expected a positive number "
                             "(1 is the default)")
        if not (np.isfinite(self.noise_floor_rel) and self.noise_floor_rel >= 0):
            raise SctGmError(f"noise floor {self.noise_floor_rel}: expected a relative noise >= 0 "
                             "(e.g. 0.03)")
        if not (np.isfinite(self.auto_threshold_rel) and self.auto_threshold_rel >= 0):
            raise SctGmError(f"auto threshold {self.auto_threshold_rel}: expected a relative noise >= 0 "
                             "(e.g. 0.035)")
        if self.clip_percentiles is not None:
            lo, hi = (float(x) for x in self.clip_percentiles)
            if not 0.0 <= lo < hi <= 100.0:
                raise SctGmError(f"clip percentiles {self.clip_percentiles}: expected 0 <= low < high <= 100")
            object.__setattr__(self, "clip_percentiles", (lo, hi))

    @property
    def is_off(self) -> bool:
        return (self.denoise == "off" and self.bias == "off" and not self.clahe
                and self.clip_percentiles is None)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["clip_percentiles"] = None if self.clip_percentiles is None else list(self.clip_percentiles)
        if not self.min_removed_fraction:  # records written before the key existed read the same
            del d["min_removed_fraction"]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> Enhancement:
        """The record from :meth:`to_dict`'s output; missing keys take their defaults, unknown keys
        are refused (a model or sidecar from a newer sct-gm would otherwise be misread)."""
        if not d:
            return cls()
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise SctGmError(f"enhancement settings: unknown key(s) {', '.join(unknown)}; "
                             f"expected {', '.join(sorted(known))}")
        d = dict(d)
        if d.get("clip_percentiles") is not None:
            d["clip_percentiles"] = tuple(d["clip_percentiles"])
        return cls(**d)


#: ``--denoise on`` removes at least this fraction of the estimated noise sigma, also from an image that
#: reads under the floor (issue 20: 'on' changed nothing there). Half: the floor's own effect at the
#: auto threshold (sqrt(3.5^2 - 3^2) / 3.5 = 0.52), so 'on' is never milder than 'auto' is when it fires.
ON_MIN_REMOVED_FRACTION = 0.5

#: ``denoise`` values of a run's options (:func:`with_options`): the record's, plus 'on'.
DENOISE_OPTIONS = ("auto", "on", "off") + DENOISERS[2:]


def with_options(base: Enhancement, *, denoise: str | None = None, bias: str | None = None,
                 clahe: bool | None = None) -> Enhancement:
    """``base`` (a model's enhancement) with a run's explicit options on top (None: the model's).
    ``denoise='on'``: the model's denoiser always (its ``auto_method`` when the model says 'auto' or
    'off'), removing at least :data:`ON_MIN_REMOVED_FRACTION` of the noise sigma; 'off': never;
    'auto' or a method name: that."""
    changes: dict[str, Any] = {}
    if denoise is not None:
        if denoise not in DENOISE_OPTIONS:
            raise SctGmError(f"denoise {denoise!r}: expected one of {', '.join(DENOISE_OPTIONS)}")
        changes["denoise"] = (base.denoise if base.denoise not in ("off", "auto") else base.auto_method) \
            if denoise == "on" else denoise
        if denoise == "on":  # asked for: it removes something even from an image under the floor
            changes["min_removed_fraction"] = max(base.min_removed_fraction, ON_MIN_REMOVED_FRACTION)
    if bias is not None:
        changes["bias"] = bias
    if clahe is not None:
        changes["clahe"] = bool(clahe)
    return replace(base, **changes) if changes else base
