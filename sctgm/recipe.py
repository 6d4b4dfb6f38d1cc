"""The model recipe: everything that says how a model turns an image into a mask, bar its weights.

A :class:`Recipe` is read from a registry entry (``data_registry.json``, a user registry, a trained
model's ``model.json``) and is what the registry, the engines, the segmentation pipeline, training,
install and the CLI all read:

- ``network``: which network and its sizes (the entry's ``architecture``: ``{"name": ..., "filters":
  ..., ...}``; the name is a module of :mod:`sctgm.networks`, which builds it for each engine);
- ``preprocessing`` (:class:`Preprocessing`): orientation, fine-grid spacing, window size,
  standardisation, the probability ``threshold``, the rule back to the native grid ``to_native`` and the
  ``enhancement`` (:class:`~sctgm.enhancement.Enhancement`);
- ``contrast``: the image contrast the model was trained for (``T2star`` for the published models);
- ``precision``: the arithmetic the network runs in (:data:`PRECISIONS`; the policy is ``fp32``
  everywhere, inference and training's validation alike: docs/architecture.md, ``bench/precision.py``);
- ``combine`` (:class:`Combination`, optional): a second registered model run on the same windows,
  combined with this one's and checked by the anatomical guard (``large-ensemble``, the default).

Plain data at the bottom layer (no torch import): the model layer reads entries into it, the layers
above follow it. A new preprocessing setting is a field of :class:`Preprocessing` + its :data:`PREPROCESSING_RULES` row.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field, fields, replace
from typing import Any

from .enhancement import Enhancement
from .exceptions import ModelError, SctGmError


# -- preprocessing ---------------------------------------------------------------------------------

#: ``Preprocessing.to_native``: the rules back to the native grid (:mod:`sctgm.segment.grid`), and the
#: default (the reference's; every single published or trained model's).
TO_NATIVE_RULES = ("linear", "area")
DEFAULT_TO_NATIVE = "linear"


@dataclass(frozen=True)
class _Rule:
    """How one preprocessing field is read from a registry entry: ``parse`` converts the JSON value
    (raising TypeError/ValueError when it cannot), ``valid`` accepts the result, ``expected`` says what
    is accepted, for the message."""

    parse: Callable[[Any], Any]
    valid: Callable[[Any], bool]
    expected: str


def _number(v: Any) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise TypeError(v)
    return float(v)


def _integer(v: Any) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        raise TypeError(v)
    return v


def _text(v: Any) -> str:
    if not isinstance(v, str):
        raise TypeError(v)
    return v


@dataclass(frozen=True)
class Preprocessing:
    """How a model's input is prepared (the ``preprocessing`` block of its registry entry), followed
    by segmentation (:mod:`sctgm.segment.preprocess`) and, identically, by training.

    - ``orientation``: the canonical array layout, nibabel axis codes; only ``"LAS"`` (axial slices are
      ``data[:, :, k]``).
    - ``spacing_mm``: in-plane pixel size (mm) of the network's grid (the published models: 0.25).
    - ``crop_px``: window side (pixels of that grid) the network sees per slice (published: 200).
    - ``standardisation``: ``"volume"``: (x - mean) / std with the mean and std of the whole window
      stack of a volume.
    - ``threshold``: GM probability above which a pixel is GM, strictly between 0 and 1.
    - ``to_native``: how the thresholded fine mask goes back to the native grid (:data:`TO_NATIVE_RULES`;
      a native voxel is GM where the result is >= 0.5): ``"linear"`` (the reference's: interpolated at
      the voxel's centre) or ``"area"`` (the fraction of the voxel's footprint that is GM;
      docs/robustness.md). Written in an entry only when not ``"linear"``, so older readers read it.
    - ``enhancement``: the image enhancement run on the canonical volume before anything else
      (:class:`Enhancement` as a JSON object, e.g. ``{"denoise": "auto"}``;
      missing keys take that record's defaults). Default :data:`DEFAULT_ENHANCEMENT`: denoise 'auto'
      (NLM only on images noisier than 3.5 % of the 99th percentile; docs/robustness.md).

    Adding a field (e.g. denoising settings): a dataclass field with its default, and a row in
    :data:`PREPROCESSING_RULES`; :meth:`from_entry` and :meth:`to_entry` follow the table.
    """

    orientation: str = "LAS"
    spacing_mm: float = 0.25
    crop_px: int = 200
    standardisation: str = "volume"
    threshold: float = 0.999
    enhancement: dict[str, Any] = field(default_factory=lambda: dict(DEFAULT_ENHANCEMENT))
    to_native: str = DEFAULT_TO_NATIVE

    @classmethod
    def from_entry(cls, block: Any, model: str = "?") -> Preprocessing:
        """Read and validate a registry ``preprocessing`` block (missing keys take the defaults).
        Raises :class:`~sctgm.exceptions.ModelError` naming ``model``, the key and the value, for an
        unknown key or an unsupported value."""
        if not isinstance(block, dict):
            raise ModelError(f"model '{model}': 'preprocessing' must be an object, not {block!r}")
        unknown = sorted(set(block) - set(PREPROCESSING_RULES))
        if unknown:
            raise ModelError(f"model '{model}': preprocessing key(s) {', '.join(unknown)} not supported by this "
                             f"sct-gm (known: {', '.join(PREPROCESSING_RULES)}); upgrade sct-gm or remove them")
        values = {}
        for key, value in block.items():
            rule = PREPROCESSING_RULES[key]
            try:
                parsed = rule.parse(value)
                ok = rule.valid(parsed)
            except (TypeError, ValueError):
                ok = False
            if not ok:
                raise ModelError(f"model '{model}': preprocessing {key} = {value!r} is not supported; expected "
                                 f"{rule.expected}")
            values[key] = parsed
        return cls(**values)

    def to_entry(self) -> dict[str, Any]:
        """The registry ``preprocessing`` block of this record (``from_entry(to_entry())`` == self)."""
        entry = {f.name: (dict(v) if isinstance(v := getattr(self, f.name), dict) else v) for f in fields(self)}
        if self.to_native == DEFAULT_TO_NATIVE:
            del entry["to_native"]
        return entry


#: A model's enhancement when its entry names none (chosen by measurement, docs/robustness.md).
DEFAULT_ENHANCEMENT: dict[str, Any] = {"denoise": "auto"}


def _enhancement(v: Any) -> dict[str, Any]:
    """An enhancement block, checked by the :class:`Enhancement` record it becomes."""
    if not isinstance(v, dict):
        raise TypeError(v)
    try:
        Enhancement.from_dict(v)
    except SctGmError as exc:
        raise ValueError(str(exc)) from None
    return dict(v)


#: One row per :class:`Preprocessing` field: how it is read and what is accepted.
PREPROCESSING_RULES: dict[str, _Rule] = {
    "orientation": _Rule(_text, lambda v: v == "LAS", '"LAS" (the only canonical layout sct-gm implements)'),
    "spacing_mm": _Rule(_number, lambda v: math.isfinite(v) and 0.01 <= v <= 5.0,
                        "an in-plane pixel size in mm between 0.01 and 5"),
    "crop_px": _Rule(_integer, lambda v: 16 <= v <= 4096, "an integer window side between 16 and 4096 pixels"),
    "standardisation": _Rule(_text, lambda v: v in ("volume",),
                             '"volume" (mean/std over the window stack of a volume)'),
    "threshold": _Rule(_number, lambda v: 0.0 < v < 1.0, "a probability strictly between 0 and 1"),
    "enhancement": _Rule(_enhancement, lambda v: True,
                         'an object of enhancement settings, e.g. {"denoise": "auto", "bias": "off", "clahe": false} '
                         "(docs/robustness.md)"),
    "to_native": _Rule(_text, lambda v: v in TO_NATIVE_RULES,
                       '"linear" (interpolated at the voxel centre, the reference) or "area" (footprint mean)'),
}
assert set(PREPROCESSING_RULES) == {f.name for f in fields(Preprocessing)}  # the table covers the record


# -- the recipe -----------------------------------------------------------------------------------

#: The network a registry entry means when its ``architecture`` names none (the published models).
DEFAULT_NETWORK = "perone2018-dilated"
#: ``precision`` -> what it means. The policy (one for inference and validation): ``fp32``; the other
#: values exist for ``bench/precision.py``, which measures what they do to masks at the 0.999 threshold.
PRECISIONS: dict[str, str] = {
    "fp32": "float32 throughout; TF32 off on CUDA (the policy for every model)",
    "tf32": "float32 with TF32 matrix products on CUDA (Ampere and later); as fp32 elsewhere",
    "bf16": "bfloat16: CUDA autocast; CPU: OpenVINO, the network's bf16_fp32_nodes kept in fp32",
    "fp16": "float16 autocast (CUDA only)",
}
DEFAULT_PRECISION = "fp32"
DEFAULT_CONTRAST = "T2star"
_TOKEN_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")


# -- combination -----------------------------------------------------------------------------------
DISAGREE_DICE = 0.8  #: default ``disagree_dice`` (docs/robustness.md, "The default")


@dataclass(frozen=True)
class Combination:
    """The entry's ``combine`` (:mod:`sctgm.segment.ensemble`), ``{"with": "large-robust", "disagree_dice":
    0.8, "guard": true}``: ``with_model`` run on the same windows (not a combination itself); below
    ``disagree_dice`` (slice Dice of the two masks) the slice of the network that agrees better with
    its neighbours is used; ``guard``: GM inside the cord, area continuous."""

    with_model: str
    disagree_dice: float = DISAGREE_DICE
    guard: bool = True

    def __post_init__(self) -> None:
        if not isinstance(self.with_model, str) or not _TOKEN_RE.match(self.with_model):
            raise ModelError(f"combine.with {self.with_model!r}: expected a registered model name")
        if not (isinstance(self.disagree_dice, (int, float)) and 0.0 <= float(self.disagree_dice) <= 1.0):
            raise ModelError(f"combine.disagree_dice {self.disagree_dice!r}: expected a Dice between 0 and 1")
        if not isinstance(self.guard, bool):
            raise ModelError(f"combine.guard {self.guard!r}: expected true or false")

    @classmethod
    def from_entry(cls, block: Any, model: str = "?") -> Combination | None:
        if block is None:
            return None
        keys = {"with", "disagree_dice", "guard"}
        if not isinstance(block, dict) or set(block) - keys or "with" not in block:
            raise ModelError(f"model '{model}': 'combine' must be an object with 'with' (a registered "
                             f"model) and optionally 'disagree_dice', 'guard'; got {block!r}")
        try:
            return cls(block["with"], block.get("disagree_dice", DISAGREE_DICE), block.get("guard", True))
        except ModelError as exc:
            raise ModelError(f"model '{model}': {exc}") from None

    def to_entry(self) -> dict[str, Any]:
        return {"with": self.with_model, "disagree_dice": self.disagree_dice, "guard": self.guard}


@dataclass(frozen=True)
class Recipe:
    """How a model segments: its network, preprocessing (with threshold and enhancement), contrast
    and precision (see the module docstring). ``network`` always holds ``name``; every other key is
    the network module's to read (e.g. ``filters``, ``depth``)."""

    network: dict[str, Any]
    preprocessing: Preprocessing = field(default_factory=lambda: Preprocessing())
    contrast: str = DEFAULT_CONTRAST
    precision: str = DEFAULT_PRECISION
    combine: Combination | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "network", {"name": DEFAULT_NETWORK, **self.network})
        if self.precision not in PRECISIONS:
            raise ModelError(f"precision {self.precision!r}: expected one of {', '.join(PRECISIONS)}")
        if not isinstance(self.contrast, str) or not _TOKEN_RE.match(self.contrast):
            raise ModelError(f"contrast {self.contrast!r}: expected a plain token such as T2star, MT or PSIR")

    @property
    def network_name(self) -> str:
        return str(self.network["name"])

    @property
    def threshold(self) -> float:
        return self.preprocessing.threshold

    @property
    def enhancement(self) -> Enhancement:
        return Enhancement.from_dict(self.preprocessing.enhancement)

    @classmethod
    def from_entry(cls, entry: dict[str, Any], model: str = "?") -> Recipe:
        """The recipe of a registry entry (its ``architecture``, ``preprocessing`` and the optional
        ``contrast``, ``precision`` and ``combine``, :class:`Combination`);
        :class:`~sctgm.exceptions.ModelError` names ``model`` and
        the value that is not supported."""
        architecture = entry.get("architecture")
        if not isinstance(architecture, dict):
            raise ModelError(f"model '{model}': 'architecture' must be an object, not {architecture!r}")
        try:
            return cls(dict(architecture), Preprocessing.from_entry(entry.get("preprocessing", {}), model),
                       entry.get("contrast", DEFAULT_CONTRAST), entry.get("precision", DEFAULT_PRECISION),
                       Combination.from_entry(entry.get("combine"), model))
        except ModelError as exc:
            raise ModelError(str(exc) if str(exc).startswith(f"model '{model}'") else f"model '{model}': {exc}") from None

    def to_entry(self) -> dict[str, Any]:
        """The registry keys of this recipe (``from_entry(to_entry())`` == self); ``contrast`` and
        ``precision`` only when they differ from the defaults, so older readers read it too."""
        entry: dict[str, Any] = {"architecture": dict(self.network), "preprocessing": self.preprocessing.to_entry()}
        if self.contrast != DEFAULT_CONTRAST:
            entry["contrast"] = self.contrast
        if self.precision != DEFAULT_PRECISION:
            entry["precision"] = self.precision
        if self.combine is not None:
            entry["combine"] = self.combine.to_entry()
        return entry

    def one_network(self) -> Recipe:
        """This recipe as a single network (a bare weight file, a trained model): no combination, and
        for a combination the reference's rule back to the native grid (the rule is the combination's
        own), so that the weights of `large` give `large`'s masks however they are named; a single
        network's recipe is returned as it is."""
        if self.combine is None:
            return self
        return replace(self, combine=None, preprocessing=replace(self.preprocessing, to_native=DEFAULT_TO_NATIVE))

    def with_threshold(self, threshold: float) -> Recipe:
        return replace(self, preprocessing=replace(self.preprocessing, threshold=threshold))
