"""The segmentation of one image, from a validated image to masks on its own grid.

io -> orientation -> window placement -> resample (window) -> standardise -> network -> threshold
-> resample back -> post-process -> orientation back. Each geometric step has its exact inverse, so
the outputs land on the input's voxel grid.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from . import crop, postprocess
from .inference import LoadedNetwork, ProgressCallback, Standardisation, load_network, predict
from .exceptions import SctGmError
from .io import LoadedImage, check_same_grid
from .orientation import looks_axial, reorientation_for
from .registry import ensure_model, resolve_cache_dir
from .resample import FineGrid, Window, fine_grid, sample_window, window_to_native

log = logging.getLogger(__name__)

#: TTA: the crop window is also placed this many fine voxels (0.25 mm) away along each in-plane
#: axis, and the probabilities are averaged on the fine grid.
TTA_SHIFT_PX = 8


@dataclass(frozen=True)
class SegmentOptions:
    """Parameters of one segmentation. ``threshold`` None means the model's default (0.999);
    ``batch_size`` (slices per network call) None means the engine's preferred size."""

    threshold: float | None = None
    keep_largest: bool = True
    fill_holes: bool = True
    tta: bool = False
    batch_size: int | None = None  # None: the engine's preferred size (see sctgm.inference.predict)
    crop_px: int = crop.CROP_PX

    def __post_init__(self) -> None:
        if self.threshold is not None and not 0.0 < self.threshold < 1.0:
            raise SctGmError(f"threshold {self.threshold}: expected a probability strictly between 0 and 1")
        if self.batch_size is not None and self.batch_size < 1:
            raise SctGmError(f"batch size {self.batch_size}: expected at least 1 slice per network call")
        if self.crop_px < 16:
            raise SctGmError(f"crop size {self.crop_px} px: expected at least 16 (the network was trained on 200)")


@dataclass
class Segmentation:
    """Results on the input image's grid (array layout of the input file)."""

    gm: np.ndarray  # uint8 0/1
    gm_prob: np.ndarray | None  # float32 in [0, 1] (only when asked)
    wm: np.ndarray | None  # uint8 0/1, cord minus GM (only with a cord mask)
    info: dict[str, Any] = field(default_factory=dict)


class Segmenter:
    """A loaded model, reusable for many images (the model is loaded once).

    ``engine``: 'auto' (ONNX Runtime on a CPU, PyTorch on a GPU), 'onnxruntime' or 'torch';
    ``threads``: CPU threads for the network (default: one per core).

    >>> seg = Segmenter("large", device="cpu")                       # doctest: +SKIP
    >>> result = seg.segment_image(load_image("t2s.nii.gz"))         # doctest: +SKIP
    """

    def __init__(self, model: str | None = None, *, device: str = "auto", engine: str = "auto",
                 threads: int | None = None, mirror: str | None = None, cache_dir: str | None = None,
                 download_progress: Any = None) -> None:
        installed = ensure_model(model, mirror=mirror, cache_dir=cache_dir, progress=download_progress)
        self.network: LoadedNetwork = load_network(installed, device, engine=engine, threads=threads,
                                                   cache_dir=resolve_cache_dir(cache_dir))

    @property
    def model(self):  # noqa: ANN201 - InstalledModel
        return self.network.model

    def segment_image(self, image: LoadedImage, *, cord: LoadedImage | None = None,
                      options: SegmentOptions = SegmentOptions(), want_prob: bool = False,
                      progress: ProgressCallback | None = None) -> Segmentation:
        """Segment the GM of a validated 3D image (see :func:`sctgm.io.load_image`)."""
        t0 = time.perf_counter()
        reo = reorientation_for(image.affine, image.data.shape)
        data = reo.apply(image.data, copy=False)  # a view: no second copy of the volume
        zooms = tuple(float(image.zooms_mm[i]) for i in np.argsort(reo.to_canonical[:, 0]))
        if not looks_axial(zooms):  # type: ignore[arg-type]
            log.warning("%s: slices are %.2f mm thick but in-plane voxels are %.2f x %.2f mm: this looks like a "
                        "sagittal or coronal acquisition; the network segments axial slices and results will "
                        "not be meaningful", image.path, zooms[2], zooms[0], zooms[1])
        grid = fine_grid(data.shape, zooms)  # type: ignore[arg-type]
        size = crop.window_size(grid, options.crop_px)
        threshold = options.threshold if options.threshold is not None else float(
            self.model.preprocessing.get("threshold", 0.999))

        cord_c = None
        centres = None
        if cord is not None:
            check_same_grid(image, cord)
            cord_c = reo.apply(cord.data, copy=False) > 0.5
            centres = crop.centres_from_mask(cord_c, grid)
            if centres is None:
                log.warning("%s: the cord mask is empty; the cord is searched for in the image", cord.path)
        if centres is None:
            centres = np.tile(crop.slice_centre(grid), (data.shape[2], 1))

        windows, prob, passes = self._locate_and_predict(data, grid, size, centres, options, progress)
        mask_c = np.zeros(data.shape, dtype=bool)
        prob_c = np.zeros(data.shape, dtype=np.float32) if want_prob else None
        for k, w in enumerate(windows):
            box, v = window_to_native((prob[k] > threshold).astype(np.float32), grid, w)
            mask_c[box[0], box[1], k] = v >= 0.5
            if prob_c is not None:
                box, v = window_to_native(prob[k], grid, w)
                prob_c[box[0], box[1], k] = np.clip(v, 0.0, 1.0)
        n_raw = int(mask_c.sum())
        if options.keep_largest:
            mask_c = postprocess.keep_largest_components(mask_c)
        if options.fill_holes:
            mask_c = postprocess.fill_holes(mask_c)
        wm = None
        if cord_c is not None:
            wm = reo.undo((cord_c & ~mask_c).astype(np.uint8), copy=False)
        gm = reo.undo(mask_c.astype(np.uint8), copy=False)
        info = {
            "input_orientation": "".join(reo.input_axcodes),
            "fine_grid": list(grid.fine_shape),
            "window_px": list(size),
            "window_origins": [list(w.origin) for w in windows],
            "network_passes": passes,
            "threshold": threshold,
            "gm_voxels_before_postprocessing": n_raw,
            "gm_voxels": int(gm.sum()),
            "seconds": round(time.perf_counter() - t0, 3),
        }
        return Segmentation(gm=gm, gm_prob=None if prob_c is None else reo.undo(prob_c, copy=False), wm=wm, info=info)

    # -- window placement ---------------------------------------------------------------------
    def _predict_windows(self, data: np.ndarray, grid: FineGrid, windows: list[Window],
                         options: SegmentOptions, progress: ProgressCallback | None) -> np.ndarray:
        if not options.tta:
            crops = np.stack([sample_window(data[:, :, k], grid, w) for k, w in enumerate(windows)])
            return predict(self.network, crops, standardise=Standardisation.of(crops), batch_size=options.batch_size,
                           progress=progress)
        return self._predict_tta(data, grid, windows, options, progress)

    def _predict_tta(self, data: np.ndarray, grid: FineGrid, windows: list[Window],
                     options: SegmentOptions, progress: ProgressCallback | None) -> np.ndarray:
        d = TTA_SHIFT_PX
        total = np.zeros((len(windows),) + windows[0].size, dtype=np.float64)
        count = np.zeros_like(total)
        for dx, dy in ((0, 0), (d, 0), (-d, 0), (0, d), (0, -d)):
            shifted = [crop.window_at(np.asarray(w.origin) + np.asarray(w.size) / 2 + (dx, dy), grid, w.size)
                       for w in windows]
            crops = np.stack([sample_window(data[:, :, k], grid, w) for k, w in enumerate(shifted)])
            p = predict(self.network, crops, standardise=Standardisation.of(crops), batch_size=options.batch_size)
            for k, (w, ws) in enumerate(zip(windows, shifted)):
                # paste the shifted prediction where it overlaps the reference window
                a0, a1 = ws.origin[0] - w.origin[0], ws.origin[1] - w.origin[1]
                src = (slice(max(0, -a0), min(w.size[0], w.size[0] - a0)), slice(max(0, -a1), min(w.size[1], w.size[1] - a1)))
                dst = (slice(max(0, a0), max(0, a0) + src[0].stop - src[0].start),
                       slice(max(0, a1), max(0, a1) + src[1].stop - src[1].start))
                total[k][dst] += p[k][src]
                count[k][dst] += 1
            if progress is not None:
                progress(len(windows), len(windows))
        return (total / np.maximum(count, 1)).astype(np.float32)

    def _locate_and_predict(self, data: np.ndarray, grid: FineGrid, size: tuple[int, int], centres: np.ndarray,
                            options: SegmentOptions, progress: ProgressCallback | None
                            ) -> tuple[list[Window], np.ndarray, int]:
        windows = [crop.window_at(c, grid, size) for c in centres]
        prob = self._predict_windows(data, grid, windows, options, progress)
        passes = 1
        if crop.covers_slice(grid, size):
            return windows, prob, passes
        findings = [crop.assess(prob[k], w, grid) for k, w in enumerate(windows)]
        if not any(f.found for f in findings):
            found = self._search(data, grid, size, options)
            passes += 1
            if found is None:
                log.warning("no gray matter was found anywhere in the image")
                return windows, prob, passes
            centres = np.tile(found, (data.shape[2], 1))
        else:
            moved = crop.relocate(centres, findings, grid, size)
            if moved is None:
                return windows, prob, passes
            centres = moved
        for _ in range(2):  # move the windows, predict again; once more if GM is still cut
            windows = [crop.window_at(c, grid, size) for c in centres]
            prob = self._predict_windows(data, grid, windows, options, progress)
            passes += 1
            findings = [crop.assess(prob[k], w, grid) for k, w in enumerate(windows)]
            moved = crop.relocate(centres, findings, grid, size)
            if moved is None:
                break
            centres = moved
        return windows, prob, passes

    def _search(self, data: np.ndarray, grid: FineGrid, size: tuple[int, int],
                options: SegmentOptions) -> np.ndarray | None:
        """Tile a few slices (middle first) and return the fine-grid centre of the most GM-like blob."""
        nz = data.shape[2]
        tiles = crop.search_windows(grid, size)
        for k in dict.fromkeys([nz // 2, nz // 4, (3 * nz) // 4]):
            crops = np.stack([sample_window(data[:, :, k], grid, w) for w in tiles])
            prob = predict(self.network, crops, standardise=Standardisation.of(crops), batch_size=options.batch_size)
            acc = np.zeros(grid.fine_shape, dtype=np.float32)
            for w, p in zip(tiles, prob):
                region = acc[w.origin[0]:w.origin[0] + w.size[0], w.origin[1]:w.origin[1] + w.size[1]]
                np.maximum(region, p, out=region)
            labels, n = _label(acc > 0.5)
            if n == 0:
                continue
            sizes = np.bincount(labels.ravel())[1:]
            best = int(np.argmax(sizes)) + 1
            if sizes[best - 1] >= crop.MIN_GM_PX:
                return np.asarray(np.nonzero(labels == best)).mean(axis=1)
        return None


def _label(mask: np.ndarray) -> tuple[np.ndarray, int]:
    from scipy import ndimage

    return ndimage.label(mask, structure=np.ones((3, 3), dtype=bool))
