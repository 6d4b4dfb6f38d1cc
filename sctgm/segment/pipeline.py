"""The segmentation of one image, from a validated image to masks on its own grid (orchestration only).

io -> :mod:`.preprocess` (orientation, fine grid) -> :mod:`.placement` (windows) -> preprocess (sample,
standardise) -> :mod:`sctgm.engines` (network) -> threshold -> :mod:`.grid` (back to native) ->
:mod:`.postprocess` -> orientation back. Each geometric step has its exact inverse, so the outputs land
on the input's voxel grid. Spacing, window size, orientation and threshold come from the model's
:class:`~sctgm.recipe.Preprocessing`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from ..engines import LoadedNetwork, ProgressCallback, load_network, predict
from ..exceptions import InvalidOptionError, ModelError
from ..geometry import Reorientation, file_slice_index
from ..io import LoadedImage
from ..model.registry import InstalledModel, network_record
from ..recipe import DEFAULT_TO_NATIVE, Combination, Preprocessing
from . import enhance, ensemble, guard, placement, postprocess
from .grid import Window, overlap, to_native
from .noise import in_file_order
from .preprocess import PreparedVolume, Standardisation, canonical_mask, prepare, sample, windows_at

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SegmentOptions:
    """Parameters of one segmentation. ``threshold`` and ``crop_px`` None mean the model's (its
    :class:`~sctgm.recipe.Preprocessing`: 0.999 and 200 for the published models);
    ``batch_size`` (slices per network call) None means the engine's preferred size.

    Image enhancement (:mod:`.enhance`; None: the model's ``preprocessing.enhancement``, by default
    denoise 'auto', no bias correction, no CLAHE): ``denoise`` 'auto' (denoise images noisier than
    the threshold), 'on' (the model's denoiser always), 'off' (never: the image as it is) or a
    denoiser ('nlm', 'tv', 'wavelet', 'bilateral'); ``bias`` 'off', 'smooth' or 'n4'; ``clahe``."""

    threshold: float | None = None
    keep_largest: bool = True
    fill_holes: bool = True
    tta: bool = False
    batch_size: int | None = None  # None: the engine's preferred size (see sctgm.engines.predict)
    crop_px: int | None = None
    denoise: str | None = None
    bias: str | None = None
    clahe: bool | None = None

    def __post_init__(self) -> None:
        if self.threshold is not None and not 0.0 < self.threshold < 1.0:
            raise InvalidOptionError(f"threshold {self.threshold}: expected a probability strictly between 0 and 1",
                                     parameter="threshold")
        if self.batch_size is not None and self.batch_size < 1:
            raise InvalidOptionError(f"batch size {self.batch_size}: expected at least 1 slice per network call",
                                     parameter="batch_size")
        if self.crop_px is not None and self.crop_px < 16:
            raise InvalidOptionError(f"crop size {self.crop_px} px: expected at least 16 (the network was trained on 200)",
                                     parameter="crop_px")
        if self.denoise is not None and self.denoise not in enhance.DENOISE_OPTIONS:
            raise InvalidOptionError(f"denoise {self.denoise!r}: expected one of {', '.join(enhance.DENOISE_OPTIONS)}",
                                     parameter="denoise")
        if self.bias is not None and self.bias not in enhance.BIAS_METHODS:
            raise InvalidOptionError(f"bias correction {self.bias!r}: expected one of {', '.join(enhance.BIAS_METHODS)}",
                                     parameter="bias")

    def enhancement(self, prep: Preprocessing) -> enhance.Enhancement:
        """The model's enhancement with these options' explicit settings on top."""
        return enhance.with_options(enhance.Enhancement.from_dict(prep.enhancement), denoise=self.denoise,
                                    bias=self.bias, clahe=self.clahe)

    def effective(self, prep: Preprocessing) -> SegmentOptions:
        """These options with the model's values where they say None (what a sidecar records;
        ``denoise`` 'on' becomes the denoiser it means)."""
        enh = self.enhancement(prep)
        return replace(self, threshold=prep.threshold if self.threshold is None else self.threshold,
                       crop_px=prep.crop_px if self.crop_px is None else self.crop_px,
                       denoise=enh.denoise, bias=enh.bias, clahe=enh.clahe)


@dataclass
class Segmentation:
    """Results on the input image's grid (array layout of the input file)."""

    gm: np.ndarray  # uint8 0/1
    gm_prob: np.ndarray | None  # float32 in [0, 1] (only when asked)
    wm: np.ndarray | None  # uint8 0/1, cord minus GM (only with a cord mask)
    info: dict[str, Any] = field(default_factory=dict)


def say_if_empty(result: Segmentation, path: Path) -> None:
    """Warn when the GM mask is empty, whatever the cause (no cord in view, noise, another contrast):
    the write path and the in-memory API call it (a batch's summary shows it beside the 0 volume), not
    the segmentation itself, which training's validation also runs."""
    if not result.gm.any():
        log.warning("%s: no gray matter was found, the GM mask is empty (is it an axial T2*-w image of the "
                    "spinal cord?)", path)


class Segmenter:
    """A loaded model, reusable for many images (the network is loaded once, from local files).

    ``model``: an installed model (:func:`sctgm.model.install.ensure_model`); :meth:`from_name` finds
    (and, if needed, downloads) one by name first. ``engine``: 'auto' (ONNX Runtime on a CPU, PyTorch
    on a GPU), 'onnxruntime' or 'torch'; ``threads``: CPU threads for the network (default: one per
    core); ``cache_dir``: where the ONNX graph is cached (default: the model cache); ``precision``:
    None (the model recipe's) or one of :data:`sctgm.recipe.PRECISIONS` (bf16 on a CPU: with bf16
    instructions and OpenVINO, else fp32 and a warning).

    >>> seg = Segmenter.from_name("large", device="cpu")             # doctest: +SKIP
    >>> result = seg.segment_image(load_image("t2s.nii.gz"))         # doctest: +SKIP
    """

    def __init__(self, model: InstalledModel, *, device: str = "auto", engine: str = "auto",
                 threads: int | None = None, cache_dir: str | None = None, precision: str | None = None,
                 partner: InstalledModel | None = None, name: str | None = None) -> None:
        from ..model.install import resolve_cache_dir

        if not isinstance(model, InstalledModel):
            raise TypeError(f"Segmenter takes an installed model; for a name ({model!r}) use "
                            f"Segmenter.from_name({model!r})")
        self.network: LoadedNetwork = load_network(model, device, engine=engine, threads=threads,
                                                   cache_dir=resolve_cache_dir(cache_dir), precision=precision)
        #: the second network of a combination (:mod:`.ensemble`), run on the first one's windows: the
        #: model recipe's ``combine`` (or ``partner`` given here); ``name``: the combination's name
        if partner is None and model.recipe.combine is not None:
            partner = _partner_of(model, cache_dir=cache_dir)
        self.combination = model.recipe.combine or (
            Combination(partner.name) if partner is not None else None)
        self.name = name or (model.name if model.recipe.combine is not None else None)
        self.partner: LoadedNetwork | None = None
        if partner is not None and partner == model:
            self.partner = self.network
        elif partner is not None:
            # at the precision the first one runs (after any fallback: one warning, not two)
            self.partner = load_network(partner, device, engine=engine, threads=threads,
                                        cache_dir=resolve_cache_dir(cache_dir), precision=self.network.precision)
        #: (name, version) of each network a combination runs, as sidecars name them (read once)
        self.network_records: list[tuple[str, str]] = [] if self.partner is None else [
            network_record(n.model) for n in (self.network, self.partner)]

    @classmethod
    def from_name(cls, model: str | None = None, *, device: str = "auto", engine: str = "auto",
                  threads: int | None = None, mirror: str | None = None, cache_dir: str | None = None,
                  download_progress: Any = None, precision: str | None = None) -> Segmenter:
        """A segmenter for a registered model name (None: the default model) or a weight file path,
        installing the model first when needed (``mirror``, ``download_progress``: see
        :func:`sctgm.model.install.ensure_model`)."""
        from ..model.install import ensure_model

        installed = ensure_model(model, mirror=mirror, cache_dir=cache_dir, progress=download_progress)
        partner = _partner_of(installed, mirror=mirror, cache_dir=cache_dir, progress=download_progress)
        return cls(installed, device=device, engine=engine, threads=threads, cache_dir=cache_dir,
                   precision=precision, partner=partner)

    @property
    def model(self) -> InstalledModel:
        """The (first) network's model."""
        return self.network.model

    @property
    def identity(self) -> InstalledModel:
        """What a sidecar, a QC entry and a batch's resume record as the model: :attr:`model` itself,
        or for a combination its registered name and a sha256 of both networks' weights and the rule
        (so outputs of `large` alone are never taken for the combination's)."""
        if self.partner is None:
            return self.model
        parts = [self.model.sha256, self.partner.model.sha256, ensemble.RULE,
                 self.combination.to_entry() if self.combination is not None else None]
        if self.model.preprocessing.to_native != DEFAULT_TO_NATIVE:  # (earlier combinations' identity unchanged)
            parts.append(self.model.preprocessing.to_native)
        return replace(self.model, name=self.name or f"{self.model.name}+{self.partner.model.name}",
                       sha256=hashlib.sha256(json.dumps(parts).encode()).hexdigest())

    def prepare(self, image: LoadedImage, options: SegmentOptions = SegmentOptions()) -> PreparedVolume:
        """``image`` prepared as this model (and ``options.crop_px``) asks."""
        prep = self.model.preprocessing
        eff = options.effective(prep)
        return prepare(image, replace(prep, crop_px=eff.crop_px, threshold=eff.threshold,
                                      enhancement=options.enhancement(prep).to_dict()))

    def segment_image(self, image: LoadedImage, *, cord: LoadedImage | None = None,
                      options: SegmentOptions = SegmentOptions(), want_prob: bool = False,
                      progress: ProgressCallback | None = None) -> Segmentation:
        """Segment the GM of a validated 3D image (see :func:`sctgm.io.load_image`)."""
        t0 = time.perf_counter()
        vol = self.prepare(image, options)
        if not vol.looks_axial:
            z = vol.zooms_mm
            log.warning("%s: slices are %.2f mm thick but in-plane voxels are %.2f x %.2f mm: this looks like a "
                        "sagittal or coronal acquisition; the network segments axial slices and results will "
                        "not be meaningful", image.path, z[2], z[0], z[1])
        threshold = vol.preprocessing.threshold
        cord_c = None
        centres = None
        if cord is not None:
            cord_c = canonical_mask(cord, vol)
            centres = placement.centres_from_mask(cord_c, vol.grid)
            if centres is None:
                log.warning("%s: the cord mask is empty; the cord is searched for in the image", cord.path)
        if centres is None:
            centres = np.tile(placement.slice_centre(vol.grid), (vol.n_slices, 1))

        windows, prob, passes = self._locate_and_predict(vol, centres, options, progress)
        doubts: list[guard.SliceDoubt] | None = None
        agreement = None
        whole: int | None = None
        if self.partner is None:
            mask_c, n_raw = _native_mask(vol, windows, prob, threshold, options)
        else:  # a combination of two networks (the first placed the windows; ensemble.py)
            prob2 = self._predict_windows(vol, windows, options, None, network=self.partner)
            first, _ = _native_mask(vol, windows, prob, threshold, options)
            second, _ = _native_mask(vol, windows, prob2, threshold, options)
            mean = ensemble.logit_mean([prob, prob2])
            both, n_raw = _native_mask(vol, windows, mean, threshold, options)  # what was post-processed
            comb = self.combination or Combination(self.partner.model.name)
            mask_c, doubts, whole = ensemble.combine(both, first, second, vol.zooms_mm, cord=cord_c,
                                                     min_dice=comb.disagree_dice, use_guard=comb.guard)
            prob = ensemble.chosen_probability(mean, prob, prob2, doubts, whole)
            agreement = ensemble.slice_dice(first, second)
            if whole is not None:
                n_dis = sum(guard.NETWORKS_DISAGREE in d.reasons for d in doubts)
                log.warning("%s: the two networks disagree on most slices with GM (%d of %d): one broke down "
                            "over the volume, and %s's mask stands for all of it (review this one whole: its "
                            "sidecar names the slices)", image.path, n_dis,
                            len(ensemble.judged_slices(first, second)),
                            self.network_records[whole][0])
        prob_c = None
        if want_prob:
            prob_c = np.zeros(vol.data.shape, dtype=np.float32)
            for k, w in enumerate(windows):
                box, v = to_native(prob[k], vol.grid, w, vol.preprocessing.to_native)
                prob_c[box[0], box[1], k] = np.clip(v, 0.0, 1.0)
        reo = vol.reorientation
        wm = None if cord_c is None else reo.undo((cord_c & ~mask_c).astype(np.uint8), copy=False)
        gm = reo.undo(mask_c.astype(np.uint8), copy=False)
        info = {
            "input_orientation": "".join(reo.input_axcodes),
            "spacing_mm": vol.preprocessing.spacing_mm,
            "fine_grid": list(vol.grid.fine_shape),
            "window_px": list(vol.window_px),
            "window_origins": [list(w.origin) for w in windows],
            "network_passes": passes,
            "threshold": threshold,
            "to_native": vol.preprocessing.to_native,
            "gm_voxels_before_postprocessing": n_raw,
            "gm_voxels": int(gm.sum()),
            "enhancement": in_file_order(vol.enhancement, reo),
            "seconds": round(time.perf_counter() - t0, 3),
        }
        if doubts is not None and agreement is not None:
            info["networks"] = [name for name, _ in self.network_records]
            info.update(_confidence_in_file_order(doubts, agreement, reo, info["networks"], whole))
        return Segmentation(gm=gm, gm_prob=None if prob_c is None else reo.undo(prob_c, copy=False), wm=wm, info=info)

    # -- network passes -----------------------------------------------------------------------
    def _predict(self, raw: np.ndarray, options: SegmentOptions,
                 progress: ProgressCallback | None = None,
                 network: LoadedNetwork | None = None) -> np.ndarray:
        """The network (default: the first) on raw windows, standardised as the model was trained
        (one stack, one mean/std)."""
        return predict(network or self.network, raw, standardise=Standardisation.of(raw),
                       batch_size=options.batch_size, progress=progress)

    def _predict_windows(self, vol: PreparedVolume, windows: list[Window], options: SegmentOptions,
                         progress: ProgressCallback | None,
                         network: LoadedNetwork | None = None) -> np.ndarray:
        if not options.tta:
            return self._predict(sample(vol, windows), options, progress, network)
        return self._predict_tta(vol, windows, options, progress, network)

    def _predict_tta(self, vol: PreparedVolume, windows: list[Window], options: SegmentOptions,
                     progress: ProgressCallback | None, network: LoadedNetwork | None = None) -> np.ndarray:
        """The mean of the predictions of the windows shifted by :data:`placement.TTA_SHIFTS_PX`, each
        pixel averaged over the placements that cover it."""
        total = np.zeros((len(windows),) + windows[0].size, dtype=np.float64)
        count = np.zeros_like(total)
        for shift in placement.TTA_SHIFTS_PX:
            moved = [placement.shifted(w, shift, vol.grid) for w in windows]
            p = self._predict(sample(vol, moved), options, network=network)
            for k, (w, ws) in enumerate(zip(windows, moved)):
                src, dst = overlap(w, ws)
                total[k][dst] += p[k][src]
                count[k][dst] += 1
            if progress is not None:
                progress(len(windows), len(windows))
        return (total / np.maximum(count, 1)).astype(np.float32)

    def _locate_and_predict(self, vol: PreparedVolume, centres: np.ndarray, options: SegmentOptions,
                            progress: ProgressCallback | None) -> tuple[list[Window], np.ndarray, int]:
        grid, size = vol.grid, vol.window_px
        windows = windows_at(vol, centres)
        prob = self._predict_windows(vol, windows, options, progress)
        passes = 1
        if placement.covers_slice(grid, size):
            return windows, prob, passes
        findings = [placement.assess(prob[k], w, grid) for k, w in enumerate(windows)]
        if not any(f.found for f in findings):
            found = self._search(vol, options)
            passes += 1
            if found is None:
                log.debug("no gray matter was found anywhere in the image, even by the search")  # said below
                return windows, prob, passes
            centres = np.tile(found, (vol.n_slices, 1))
        else:
            moved = placement.relocate(centres, findings, grid, size)
            if moved is None:
                return windows, prob, passes
            centres = moved
        for _ in range(2):  # move the windows, predict again; once more if GM is still cut
            windows = windows_at(vol, centres)
            prob = self._predict_windows(vol, windows, options, progress)
            passes += 1
            findings = [placement.assess(prob[k], w, grid) for k, w in enumerate(windows)]
            moved = placement.relocate(centres, findings, grid, size)
            if moved is None:
                break
            centres = moved
        return windows, prob, passes

    def _search(self, vol: PreparedVolume, options: SegmentOptions) -> np.ndarray | None:
        """Tile a few slices (middle first) and return the fine-grid centre of the most GM-like blob."""
        nz = vol.n_slices
        tiles = placement.search_windows(vol.grid, vol.window_px)
        for k in dict.fromkeys([nz // 2, nz // 4, (3 * nz) // 4]):
            prob = self._predict(sample(vol, tiles, [k] * len(tiles)), options)
            found = placement.strongest_blob(prob, tiles, vol.grid)
            if found is not None:
                return found
        return None


def _native_mask(vol: PreparedVolume, windows: list[Window], prob: np.ndarray, threshold: float,
                 options: SegmentOptions) -> tuple[np.ndarray, int]:
    """The thresholded windows back on the canonical native grid, post-processed as ``options`` say;
    and the GM voxel count before post-processing."""
    mask_c = np.zeros(vol.data.shape, dtype=bool)
    for k, w in enumerate(windows):
        # the rule back to the native grid is the model's (Preprocessing.to_native; grid.py)
        box, v = to_native((prob[k] > threshold).astype(np.float32), vol.grid, w, vol.preprocessing.to_native)
        mask_c[box[0], box[1], k] = v >= 0.5
    n_raw = int(mask_c.sum())
    if options.keep_largest:
        mask_c = postprocess.keep_largest_components(mask_c)
    if options.fill_holes:
        mask_c = postprocess.fill_holes(mask_c)
    return mask_c, n_raw


def _confidence_in_file_order(doubts: list[guard.SliceDoubt], agreement: np.ndarray,
                              reo: Reorientation, names: list[str], whole: int | None = None) -> dict[str, Any]:
    """The per-slice confidence of a combination, by the file's own S-I slice index: the slice Dice
    between the two networks, the doubtful slices (reasons, what was done, whose GM the slice
    holds: one of ``names``, or null for the combination's own or none), and the network that stood
    for the whole volume because the two disagreed on most slices (``whole``, an index into ``names``:
    its name, or null)."""
    n = len(agreement)
    by_file = [0.0] * n
    for k in range(n):
        by_file[file_slice_index(reo, k)] = round(float(agreement[k]), 3)
    listed = [{"slice": file_slice_index(reo, d.slice), "reasons": list(d.reasons), "action": d.action,
               "networks_dice": d.dice_between_networks,
               "network": None if d.network is None else names[d.network]} for d in doubts]
    return {"networks_dice_per_slice": by_file, "doubtful_slices": sorted(listed, key=lambda d: d["slice"]),
            "whole_volume_network": None if whole is None else names[whole]}



def _partner_of(model: InstalledModel, *, mirror: str | None = None, cache_dir: str | None = None,
                progress: Any = None) -> InstalledModel | None:
    """The second model a recipe's ``combine`` names, installed (None when it combines nothing)."""
    if model.recipe.combine is None:
        return None
    from ..model.install import ensure_model

    partner = ensure_model(model.recipe.combine.with_model, mirror=mirror, cache_dir=cache_dir,
                           progress=progress)
    if partner.recipe.combine is not None:
        raise ModelError(f"model '{model.name}' combines '{partner.name}', which itself combines "
                         f"'{partner.recipe.combine.with_model}': a combination takes a single network")
    # the combination's rule back to the native grid applies to both networks' masks
    if replace(partner.recipe.preprocessing, to_native=model.recipe.preprocessing.to_native) \
            != model.recipe.preprocessing:
        # the partner predicts the first model's windows, on its grid and enhancement, and is cut at
        # its threshold: a partner that expects other settings would give silently wrong masks
        raise ModelError(f"model '{model.name}' combines '{partner.name}', whose preprocessing (spacing, "
                         f"crop, standardisation, threshold, enhancement) differs from its own: a "
                         f"combination needs networks that see the same windows")
    return partner
