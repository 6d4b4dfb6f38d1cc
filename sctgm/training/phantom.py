"""A synthetic labelled dataset: an H-shaped ('butterfly') gray matter in a cord disc, inside a CSF
ring, in a larger slice; random position, orientation, size, intensities and noise per slice.

Used by the tests (training from random weights must reach a high validation Dice in seconds) and
handy for trying training options without data. Images come standardised per subject, as the
training windows of real images are.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage


@dataclass
class PhantomSubject:
    """Standardised slices (N, H, W) float32 and their GM masks (N, H, W) float32 in {0, 1}."""

    name: str
    images: np.ndarray
    targets: np.ndarray


def butterfly_mask(shape_px: tuple[int, int], centre_px: tuple[float, float], size_px: float,
                   angle_rad: float) -> tuple[np.ndarray, np.ndarray]:
    """(cord disc, GM) boolean masks of one slice: an H of four horns joined by a commissure, of
    half-width ~``size_px`` along axis 0, rotated by ``angle_rad`` about ``centre_px``."""
    ii, jj = np.meshgrid(np.arange(shape_px[0]) - centre_px[0], np.arange(shape_px[1]) - centre_px[1], indexing="ij")
    c, s = np.cos(angle_rad), np.sin(angle_rad)
    u, v = (c * ii + s * jj) / size_px, (-s * ii + c * jj) / size_px  # u: left-right, v: post-ant
    cord = (u / 1.6) ** 2 + (v / 1.15) ** 2 <= 1.0
    gm = np.zeros(shape_px, dtype=bool)
    for su in (-1, 1):
        # ventral horns (anterior, v > 0) wider than dorsal ones, as in the cord
        gm |= ((u - su * 0.55) / 0.32) ** 2 + ((v - 0.42) / 0.38) ** 2 <= 1.0
        gm |= ((u - su * 0.45) / 0.18) ** 2 + ((v + 0.5) / 0.42) ** 2 <= 1.0
    gm |= (np.abs(u) <= 0.55) & (np.abs(v) <= 0.1)
    return cord, gm & cord


def make_subject(rng: np.random.Generator, *, n_slices: int = 8, shape_px: tuple[int, int] = (96, 96),
                 size_px: float = 18.0, name: str = "phantom") -> PhantomSubject:
    """One subject: ``n_slices`` slices of ``shape_px`` with the cord within the middle half."""
    images = np.empty((n_slices, *shape_px), dtype=np.float32)
    targets = np.empty((n_slices, *shape_px), dtype=np.float32)
    wm_level, gm_level = rng.uniform(0.3, 0.6), rng.uniform(0.65, 1.0)  # GM brighter, as on T2*
    csf_level, bg_level = rng.uniform(1.0, 1.4), rng.uniform(0.05, 0.25)
    noise = rng.uniform(0.02, 0.08)
    for k in range(n_slices):
        centre = (shape_px[0] / 2 + rng.uniform(-0.2, 0.2) * shape_px[0],
                  shape_px[1] / 2 + rng.uniform(-0.2, 0.2) * shape_px[1])
        size = size_px * rng.uniform(0.85, 1.15)
        cord, gm = butterfly_mask(shape_px, centre, size, rng.uniform(-0.35, 0.35))
        csf, _ = butterfly_mask(shape_px, centre, size * 1.35, 0.0)
        img = np.full(shape_px, bg_level)
        img[csf] = csf_level
        img[cord] = wm_level
        img[gm] = gm_level
        img = ndimage.gaussian_filter(img, 0.8) + rng.normal(0.0, noise, shape_px)
        images[k] = img
        targets[k] = gm
    images = (images - images.mean()) / images.std()
    return PhantomSubject(name, images.astype(np.float32), targets)


def make_dataset(seed: int, n_subjects: int = 4, **kwargs: object) -> list[PhantomSubject]:
    """``n_subjects`` phantom subjects, reproducible from ``seed``."""
    rng = np.random.default_rng(seed)
    return [make_subject(rng, name=f"sub-{i + 1:02d}", **kwargs) for i in range(n_subjects)]  # type: ignore[arg-type]


def write_phantom_nifti(folder: str | Path, rng: np.random.Generator, *, name: str = "phantom",
                        shape: tuple[int, int, int] = (48, 48, 6), zooms_mm: tuple[float, float, float] = (0.5, 0.5, 4.0),
                        axcodes: str = "LAS", labelled: Sequence[int] | None = None) -> tuple[Path, Path]:
    """An image and its GM mask as NIfTI files ``<name>.nii.gz`` / ``<name>_gm.nii.gz`` in ``folder``:
    phantom slices on a native grid of ``zooms_mm``, the array laid out as ``axcodes`` (nibabel
    codes; the canonical view is LAS). ``labelled``: the slices whose GM is kept in the mask
    (default all)."""
    import nibabel as nib
    from nibabel import orientations as o

    subject = make_subject(rng, n_slices=shape[2], shape_px=(shape[0], shape[1]), size_px=shape[0] / 5, name=name)
    img = np.moveaxis(subject.images, 0, -1) * 100 + 300  # canonical (LAS) layout, positive intensities
    gm = np.moveaxis(subject.targets, 0, -1)
    if labelled is not None:
        keep = np.zeros(shape[2], dtype=bool)
        keep[list(labelled)] = True
        gm = gm * keep
    t = o.ornt_transform(o.axcodes2ornt(("L", "A", "S")), o.axcodes2ornt(tuple(axcodes)))
    img, gm = o.apply_orientation(img, t), o.apply_orientation(gm, t)
    affine = np.diag([-zooms_mm[0], zooms_mm[1], zooms_mm[2], 1.0]) @ o.inv_ornt_aff(t, shape)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for data, suffix in ((img, ""), (gm, "_gm")):
        nii = nib.Nifti1Image(np.ascontiguousarray(data, dtype=np.float32), affine)
        nii.set_qform(affine, code=1)
        nii.set_sform(affine, code=1)
        path = folder / f"{name}{suffix}.nii.gz"
        nib.save(nii, str(path))
        paths.append(path)
    return paths[0], paths[1]
