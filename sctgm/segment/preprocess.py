"""From an image to the network's input, as the model's :class:`~sctgm.recipe.Preprocessing`
says: the piece that segmentation and training share, so that training windows are exactly the
windows segmentation feeds the network.

    prepared = prepare(image, model.preprocessing)        # canonical view, enhanced, zooms, fine grid, window
    windows = windows_at(prepared, centres_fine)           # one window per slice (fine-grid centres)
    raw = sample(prepared, windows)                        # (N, H, W) float32 raw intensities
    x = Standardisation.of(raw)(raw)                       # exactly what the network is fed
    y = sample_mask(prepared, canonical_mask(gm, prepared), windows)   # training targets, same pixels

``prepare`` also runs the model's image enhancement (``preprocessing.enhancement``: denoising, bias
correction, CLAHE; :mod:`sctgm.segment.enhance`) on the canonical volume, so a model trained with a step
gets it at segmentation too; when nothing runs the data stay the image's own voxels (no copy).

Every step is exact geometry except the in-plane linear resampling to ``spacing_mm`` (see
:mod:`sctgm.segment.grid`); :func:`sctgm.segment.grid.window_to_native` and
:meth:`sctgm.geometry.Reorientation.undo` are the inverses.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..exceptions import InputImageError, NotAxialError
from ..geometry import Reorientation, canonical_zooms_mm, looks_axial, on_canonical_grid, reorientation_for
from ..io import LoadedImage
from ..recipe import Preprocessing
from . import enhance, placement
from .grid import FineGrid, Window, fine_grid, sample_window


@dataclass(frozen=True)
class PreparedVolume:
    """An image ready to be cut into network windows.

    ``data``: the canonical (LAS) view of the image's voxels (a read-only view, no copy), or its
    enhanced copy when ``preprocessing.enhancement`` ran a step; ``enhancement``: the report of
    :func:`sctgm.segment.enhance.apply` (settings, noise estimate, what ran, seconds);
    ``reorientation``: how it was made (its :meth:`~sctgm.geometry.Reorientation.undo` restores the
    file's layout); ``zooms_mm``: canonical voxel sizes; ``grid``: the fine in-plane grid of
    ``preprocessing.spacing_mm``; ``window_px``: the window size in fine pixels (``crop_px``, or the
    whole slice along a smaller axis); ``image``: the source, whose grid masks must share."""

    image: LoadedImage
    data: np.ndarray
    reorientation: Reorientation
    zooms_mm: tuple[float, float, float]
    grid: FineGrid
    window_px: tuple[int, int]
    preprocessing: Preprocessing
    enhancement: dict[str, Any] = field(default_factory=dict)

    @property
    def n_slices(self) -> int:
        return int(self.data.shape[2])

    @property
    def looks_axial(self) -> bool:
        """False for a sagittal or coronal acquisition (see :func:`sctgm.geometry.looks_axial`)."""
        return looks_axial(self.zooms_mm)


#: No axial slice of an MRI scan is wider than the widest scanner bore (70 cm; the images in ../shared
#: span at most 224 mm). A larger in-plane extent means a wrong voxel size, and the 0.25 mm grid laid
#: over it would cost the GM search minutes of network time (a 49 x 54 slice of 30 mm voxels: 3 min).
MAX_IN_PLANE_FOV_MM = 700.0


def prepare(image: LoadedImage, prep: Preprocessing) -> PreparedVolume:
    """Reorient ``image`` to ``prep.orientation`` (a view), enhance it as ``prep.enhancement`` says
    and lay the fine grid over it. Raises :class:`~sctgm.exceptions.InputImageError` for slices wider
    than :data:`MAX_IN_PLANE_FOV_MM`."""
    reo = reorientation_for(image.affine, image.data.shape)
    data = reo.apply(image.data, copy=False)  # a view: no second copy of the volume
    zooms = canonical_zooms_mm(image.zooms_mm, reo)
    extent_mm = [n * z for n, z in zip(data.shape[:2], zooms[:2])]
    if max(extent_mm) > MAX_IN_PLANE_FOV_MM:
        raise InputImageError(
            f"{image.path}: its slices would span {extent_mm[0]:.4g} x {extent_mm[1]:.4g} mm (R-L x A-P), wider than "
            f"any scanner's bore ({MAX_IN_PLANE_FOV_MM:g} mm): its voxel size ({' x '.join(f'{z:.4g}' for z in zooms)} mm "
            f"R-L x A-P x S-I, from pixdim) or qform/sform is wrong")
    data, report = enhance.apply(data, zooms, enhance.Enhancement.from_dict(prep.enhancement))
    grid = fine_grid(data.shape, zooms, prep.spacing_mm)  # type: ignore[arg-type]
    return PreparedVolume(image, data, reo, zooms, grid, placement.window_size(grid, prep.crop_px), prep, report)


def canonical_mask(mask: LoadedImage, prepared: PreparedVolume) -> np.ndarray:
    """A mask (cord, GM) of the prepared image in the canonical layout, bool (> 0.5). The mask may store
    the image's grid in another orientation: both are compared, exactly, in the canonical layout (flips
    and permutations only). Raises :class:`~sctgm.exceptions.GridMismatchError` when it is not on the
    image's grid."""
    return on_canonical_grid(prepared.image, prepared.reorientation, mask) > 0.5


def windows_at(prepared: PreparedVolume, centres_fine: np.ndarray) -> list[Window]:
    """One window of ``prepared.window_px`` per row of ``centres_fine`` ((N, 2) fine-grid centres),
    centred there as nearly as the slice allows."""
    return [placement.window_at(c, prepared.grid, prepared.window_px) for c in centres_fine]


def _slices(windows: Sequence[Window], slices: Sequence[int] | None) -> Sequence[int]:
    return range(len(windows)) if slices is None else slices


def sample(prepared: PreparedVolume, windows: Sequence[Window], slices: Sequence[int] | None = None) -> np.ndarray:
    """The raw intensities of ``windows`` on the fine grid, (N, H, W) float32. Window ``i`` is cut from
    canonical slice ``slices[i]`` (default: slice ``i``, one window per slice)."""
    return np.stack([sample_window(prepared.data[:, :, k], prepared.grid, w)
                     for k, w in zip(_slices(windows, slices), windows)])


def sample_mask(prepared: PreparedVolume, mask_canonical: np.ndarray, windows: Sequence[Window],
                slices: Sequence[int] | None = None) -> np.ndarray:
    """A canonical mask (:func:`canonical_mask`) resampled into ``windows`` exactly as :func:`sample`
    resamples the image: (N, H, W) float32 in [0, 1] (soft at the mask's edges)."""
    return np.stack([np.clip(sample_window(mask_canonical[:, :, k].astype(np.float32), prepared.grid, w), 0.0, 1.0)
                     for k, w in zip(_slices(windows, slices), windows)])


@dataclass(frozen=True)
class Standardisation:
    """``standardisation = "volume"``: (x - mean) / std with the mean and std of a whole stack of
    windows, as the reference standardises a volume; applied batch by batch, so no standardised copy
    of the stack is held. ``Standardisation.of(raw)(raw)`` is what the network is fed."""

    mean: float
    std: float

    @classmethod
    def of(cls, crops: np.ndarray) -> Standardisation:
        """Statistics in float64, one crop at a time (no float64 copy of the stack)."""
        n = crops.size
        mean = sum(float(c.sum(dtype=np.float64)) for c in crops) / n if n else 0.0
        var = sum(float(np.square(c.astype(np.float64) - mean).sum()) for c in crops) / n if n else 0.0
        return cls(mean, float(np.sqrt(var)) or 1.0)

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        return ((batch - np.float32(self.mean)) / np.float32(self.std)).astype(np.float32, copy=False)


def check_axial(image: LoadedImage) -> None:
    """Raise :class:`~sctgm.exceptions.NotAxialError` when the slices are thinner than the in-plane
    pixels (a sagittal or coronal acquisition: the network segments axial slices)."""
    z = canonical_zooms_mm(image.zooms_mm, reorientation_for(image.affine, image.data.shape))
    if not looks_axial(z):
        raise NotAxialError(
            f"{image.path}: slices are {z[2]:.2f} mm thick but in-plane voxels are {z[0]:.2f} x {z[1]:.2f} mm: "
            f"a sagittal or coronal acquisition, and the network segments axial slices; give an axial image "
            f"(or segment this one on its own, outside a batch, which only warns)")
