"""sctgm.metrics: each metric on synthetic shapes with known answers, distances against brute force,
areas on oblique grids, orientation invariance, and the t2s manual GM mask."""

from __future__ import annotations

import logging
import math
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from nibabel import orientations as ornt
from scipy.spatial.distance import cdist
from skimage.metrics import hausdorff_distance as skimage_hausdorff

from sctgm.exceptions import GridMismatchError, InputImageError, MetricsError
from sctgm.metrics import (
    compare, compare_slices, compute_metrics, dice_3d, distance_metrics, morphometry, overlap_metrics, skeleton,
    surface, surface_distances_mm,
)
from sctgm.metrics.morphometry import slice_levels

from ..conftest import dice as conftest_dice


# --------------------------------------------------------------------------------------------- helpers
def square(shape: tuple[int, int], r0: int, c0: int, size: int) -> np.ndarray:
    m = np.zeros(shape, bool)
    m[r0:r0 + size, c0:c0 + size] = True
    return m


def points_mm(mask: np.ndarray, spacing: tuple[float, float]) -> np.ndarray:
    return np.argwhere(mask) * np.asarray(spacing)


def brute_force(seg: np.ndarray, ref: np.ndarray, spacing: tuple[float, float], which) -> tuple[float, float, np.ndarray]:
    """Independent reference: all pairwise distances (scipy cdist) between the point sets ``which(mask)``."""
    d = cdist(points_mm(which(seg), spacing), points_mm(which(ref), spacing))
    pooled = np.concatenate([d.min(axis=1), d.min(axis=0)])
    return float(pooled.max()), float(pooled.mean()), pooled


def blob(shape: tuple[int, int], seed: int) -> np.ndarray:
    """A random smooth blob (thresholded smoothed noise), reproducible."""
    from scipy import ndimage
    noise = ndimage.gaussian_filter(np.random.default_rng(seed).normal(size=shape), 3)
    return noise > np.quantile(noise, 0.8)


def save(path: Path, data: np.ndarray, affine: np.ndarray) -> Path:
    img = nib.Nifti1Image(np.asarray(data, np.float32), affine)
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    nib.save(img, str(path))
    return path


def reoriented_copy(path: Path, axcodes: tuple[str, str, str], out: Path) -> Path:
    """The same image stored in another orientation (same world positions, nibabel's exact reorientation)."""
    img = nib.load(str(path))
    t = ornt.ornt_transform(ornt.io_orientation(img.affine), ornt.axcodes2ornt(axcodes))
    new = img.as_reoriented(t)
    assert nib.aff2axcodes(new.affine) == axcodes
    nib.save(new, str(out))
    return out


# --------------------------------------------------------------------------------------------- overlap
def test_overlap_of_two_squares_with_known_overlap():
    a = square((20, 20), 0, 0, 10)   # 100 px
    b = square((20, 20), 0, 5, 10)   # shifted by 5 columns: 50 px in common
    m = overlap_metrics(a, b)        # TP 50, FP 50, FN 50, TN 400 - 150 = 250
    assert m.dice == pytest.approx(0.5)
    assert m.jaccard == pytest.approx(1 / 3)
    assert m.conformity == pytest.approx(-1.0)  # 1 - 100/50
    assert m.sensitivity == pytest.approx(0.5)
    assert m.specificity == pytest.approx(250 / 300)
    assert m.precision == pytest.approx(0.5)


def test_overlap_asymmetric_roles_of_seg_and_ref():
    ref = square((10, 10), 0, 0, 4)    # 16 px
    seg = square((10, 10), 0, 0, 2)    # 4 px inside ref
    m = overlap_metrics(seg, ref)      # TP 4, FP 0, FN 12, TN 84
    assert (m.sensitivity, m.precision, m.specificity) == pytest.approx((0.25, 1.0, 1.0))
    assert m.conformity == pytest.approx(1 - 12 / 4)
    assert overlap_metrics(ref, seg).sensitivity == pytest.approx(1.0)


def test_overlap_empty_masks_are_defined_not_crashing():
    ref = square((10, 10), 2, 2, 3)
    empty = np.zeros((10, 10))
    m = overlap_metrics(empty, ref)
    assert m.dice == 0 and m.jaccard == 0 and m.sensitivity == 0 and m.specificity == 1
    assert math.isnan(m.precision) and math.isnan(m.conformity)
    m = overlap_metrics(ref, empty)
    assert math.isnan(m.sensitivity) and m.precision == 0 and m.specificity == pytest.approx(91 / 100)
    both = overlap_metrics(empty, empty)
    assert all(math.isnan(v) for v in (both.dice, both.jaccard, both.conformity, both.sensitivity, both.precision))
    assert both.specificity == 1


def test_soft_inputs_are_binarised_at_half():
    a = np.array([[0.49, 0.5], [1.0, 0.0]])
    b = np.array([[1.0, 1.0], [0.0, 0.0]])
    assert overlap_metrics(a, b).dice == pytest.approx(2 * 1 / (2 + 2))  # a -> [[0,1],[1,0]]


def test_dice_3d_matches_an_independent_dice_and_handles_empty():
    rng = np.random.default_rng(3)
    a, b = rng.random((12, 12, 4)) > 0.6, rng.random((12, 12, 4)) > 0.5
    assert dice_3d(a, b) == pytest.approx(conftest_dice(a, b))
    assert math.isnan(dice_3d(np.zeros((3, 3, 3)), np.zeros((3, 3, 3))))


# --------------------------------------------------------------------------------------------- distances
def test_surface_is_the_4_connected_boundary():
    s = surface(square((7, 7), 1, 1, 5))
    assert s.sum() == 16 and not s[2:5, 2:5].any()       # the 5x5 ring, interior excluded
    edge = surface(square((4, 4), 0, 0, 4))               # touching the array border: boundary there too
    assert edge[0].all() and edge[:, 0].all() and not edge[1:3, 1:3].any()


@pytest.mark.parametrize("axis, expected_mm", [(0, 3 * 0.5), (1, 3 * 2.0)])
def test_hausdorff_of_shifted_squares_honours_anisotropic_spacing(axis, expected_mm):
    spacing = (0.5, 2.0)
    a = square((30, 30), 5, 5, 10)
    b = np.roll(a, 3, axis=axis)
    m = distance_metrics(a, b, spacing)
    assert m.hausdorff_mm == pytest.approx(expected_mm)
    assert m.skeleton_hausdorff_mm == pytest.approx(expected_mm)  # skeletons are translates too
    assert 0 < m.mean_surface_distance_mm < expected_mm


@pytest.mark.parametrize("seed, spacing", [(0, (1.0, 1.0)), (1, (0.5, 0.5)), (2, (0.3, 0.9)), (4, (1.2, 0.4))])
def test_distances_match_brute_force_cdist(seed, spacing):
    seg, ref = blob((40, 36), seed), blob((40, 36), seed + 100)
    m = distance_metrics(seg, ref, spacing)
    h, mean, _ = brute_force(seg, ref, spacing, surface)
    assert m.hausdorff_mm == pytest.approx(h, rel=1e-9)
    assert m.mean_surface_distance_mm == pytest.approx(mean, rel=1e-9)
    sh, _, pooled = brute_force(seg, ref, spacing, skeleton)
    assert m.skeleton_hausdorff_mm == pytest.approx(sh, rel=1e-9)
    assert m.skeleton_median_mm == pytest.approx(float(np.median(pooled)), rel=1e-9)
    d_sr, d_rs = surface_distances_mm(seg, ref, spacing)
    assert d_sr.size == surface(seg).sum() and d_rs.size == surface(ref).sum()


def test_hausdorff_matches_scikit_image_on_isotropic_pixels():
    seg, ref = blob((50, 50), 7), blob((50, 50), 8)
    expected = skimage_hausdorff(surface(seg), surface(ref)) * 0.7
    assert distance_metrics(seg, ref, (0.7, 0.7)).hausdorff_mm == pytest.approx(expected)


def test_skeleton_metrics_ignore_thickness_surface_metrics_do_not():
    thin = np.zeros((40, 60), bool)
    thin[19:22, 5:55] = True               # a 3-pixel bar
    thick = np.zeros_like(thin)
    thick[16:25, 5:55] = True              # a 9-pixel bar on the same centre line
    m = distance_metrics(thin, thick, (0.5, 0.5))
    assert m.skeleton_median_mm == pytest.approx(0.0)
    assert m.mean_surface_distance_mm > 0.9 and m.hausdorff_mm == pytest.approx(1.5)


def test_identical_masks_have_zero_distances_and_empty_ones_nan():
    a = blob((30, 30), 5)
    m = distance_metrics(a, a, (0.5, 0.5))
    assert m.as_dict() == {k: 0.0 for k in m.as_dict()}
    for seg, ref in ((a, np.zeros_like(a)), (np.zeros_like(a), a), (np.zeros_like(a), np.zeros_like(a))):
        assert all(math.isnan(v) for v in distance_metrics(seg, ref, (0.5, 0.5)).as_dict().values())


# --------------------------------------------------------------------------------------------- per-slice comparison
def test_compare_slices_handles_empty_slices_and_summarises_over_reference_slices(make_nifti):
    ref = np.zeros((20, 20, 5), np.float32)
    seg = np.zeros_like(ref)
    for k in (1, 2, 3):
        ref[5:15, 5:15, k] = 1
    seg[5:15, 5:15, 2] = 1                  # perfect on slice 2
    seg[5:15, 10:20, 3] = 1                 # half overlap on slice 3 (Dice 0.5)
    seg[0:4, 0:4, 4] = 1                    # false positive slice 4; slice 1 missed
    result = compare(make_nifti(seg, zooms_mm=(0.5, 0.5, 5.0)), make_nifti(ref, zooms_mm=(0.5, 0.5, 5.0)))
    rows = {r["slice"]: r for r in result.rows if r["scope"] == "slice"}
    assert rows[2]["dice"] == 1 and rows[3]["dice"] == pytest.approx(0.5) and rows[1]["dice"] == 0
    assert math.isnan(rows[1]["hausdorff_mm"]) and math.isnan(rows[4]["sensitivity"]) and rows[4]["dice"] == 0
    assert math.isnan(rows[0]["dice"]) and rows[0]["specificity"] == 1          # both empty
    assert rows[3]["hausdorff_mm"] == pytest.approx(5 * 0.5)
    s = result.rows[-1]
    assert s["scope"] == "volume" and s["n_slices"] == 3
    assert s["n_slices_missed"] == 1 and s["n_slices_false_positive"] == 1
    assert s["dice"] == pytest.approx((0 + 1 + 0.5) / 3)                         # the FP slice is not in the mean
    assert s["hausdorff_mm"] == pytest.approx((0 + 2.5) / 2)                     # slices where both exist
    assert s["dice_3d"] == pytest.approx(2 * 150 / (216 + 300))
    assert rows[3]["seg_area_mm2"] == pytest.approx(100 * 0.25)


def test_compare_with_an_empty_reference_gives_nan_summary(make_nifti):
    seg = np.zeros((10, 10, 3), np.float32)
    seg[2:5, 2:5, 1] = 1
    result = compare(make_nifti(seg), make_nifti(np.zeros_like(seg)))
    s = result.rows[-1]
    assert s["n_slices"] == 0 and s["n_slices_false_positive"] == 1 and math.isnan(s["dice"]) and s["dice_3d"] == 0


def test_compare_refuses_masks_on_different_grids(make_nifti):
    a = make_nifti(np.zeros((10, 10, 3)), zooms_mm=(0.5, 0.5, 5))
    b = make_nifti(np.zeros((10, 12, 3)), zooms_mm=(0.5, 0.5, 5))
    c = make_nifti(np.zeros((10, 10, 3)), zooms_mm=(0.6, 0.5, 5))
    with pytest.raises(GridMismatchError, match=r"\(10, 12, 3\) vs \(10, 10, 3\)"):
        compare(b, a)
    with pytest.raises(GridMismatchError, match="affine rows"):
        compare(c, a)


# --------------------------------------------------------------------------------------------- orientation
@pytest.mark.parametrize("axcodes", [("R", "P", "I"), ("P", "S", "R"), ("S", "L", "A")])
def test_same_masks_in_other_orientations_give_identical_metrics(make_nifti, tmp_path, axcodes):
    seg, ref = np.zeros((24, 20, 4), np.float32), np.zeros((24, 20, 4), np.float32)
    for k in range(4):
        seg[..., k], ref[..., k] = blob((24, 20), k), blob((24, 20), k + 50)
    seg_las = make_nifti(seg, zooms_mm=(0.4, 0.7, 3.0), name="seg.nii.gz")
    ref_las = make_nifti(ref, zooms_mm=(0.4, 0.7, 3.0), name="ref.nii.gz")
    code = "".join(axcodes)
    seg_o = reoriented_copy(seg_las, axcodes, tmp_path / f"seg_{code}.nii.gz")
    ref_o = reoriented_copy(ref_las, axcodes, tmp_path / f"ref_{code}.nii.gz")
    metric_keys = ("position_mm", "seg_area_mm2", "dice", "specificity", "mean_surface_distance_mm",
                   "hausdorff_mm", "skeleton_hausdorff_mm", "skeleton_median_mm", "dice_3d")

    def values(rows):
        return [[math.nan if r[k] is None else r[k] for k in metric_keys] for r in rows]

    base = compare(seg_las, ref_las).rows
    np.testing.assert_allclose(values(compare(seg_o, ref_o).rows), values(base), rtol=1e-9, atol=1e-9, equal_nan=True)
    # mixed storage: the canonical grids match, so the comparison runs and agrees
    np.testing.assert_allclose(values(compare(seg_o, ref_las).rows), values(base), rtol=1e-9, atol=1e-9, equal_nan=True)
    a_las, a_o = morphometry(seg_las).rows, morphometry(seg_o).rows
    assert [r["gm_area_mm2"] for r in a_o] == pytest.approx([r["gm_area_mm2"] for r in a_las])
    assert [r["position_mm"] for r in a_o] == pytest.approx([r["position_mm"] for r in a_las])


def test_slice_index_is_the_files_own_and_rows_run_inferior_to_superior(make_nifti, tmp_path):
    data = np.zeros((8, 8, 5), np.float32)
    for k in range(5):
        data[:, :, k][: k + 1, :1] = 1                      # k+1 pixels on canonical slice k
    las = make_nifti(data, zooms_mm=(1.0, 1.0, 4.0))
    lpi = reoriented_copy(las, ("L", "P", "I"), tmp_path / "lpi.nii.gz")
    rows = morphometry(lpi).rows
    assert [r["slice"] for r in rows] == [4, 3, 2, 1, 0]    # stored superior first
    assert [r["gm_area_mm2"] for r in rows] == pytest.approx([1, 2, 3, 4, 5])
    positions = [r["position_mm"] for r in rows]
    assert np.diff(positions) == pytest.approx([4.0] * 4)


# --------------------------------------------------------------------------------------------- areas
def _rotation(axis: np.ndarray, degrees: float) -> np.ndarray:
    from scipy.spatial.transform import Rotation
    return Rotation.from_rotvec(np.radians(degrees) * axis / np.linalg.norm(axis)).as_matrix()


@pytest.mark.parametrize("shear", [0.0, 0.3])
def test_disc_area_on_an_oblique_grid_is_pi_r_squared(tmp_path, shear):
    """A disc of radius 6 mm drawn in world space on a rotated (and sheared) grid of 0.3 x 0.45 mm pixels."""
    radius = 6.0
    columns = np.diag([0.3, 0.45, 4.0])
    columns[:, 1] += shear * columns[:, 0] / 0.3 * 0.45       # in-plane shear: c1 leans towards c0
    linear = _rotation(np.array([1.0, 0.4, 0.2]), 27) @ columns
    shape = (70, 60, 3)
    affine = np.eye(4)
    affine[:3, :3] = linear
    centre_vox = np.array([35.0, 30.0, 0.0])
    i, j = np.meshgrid(np.arange(shape[0]), np.arange(shape[1]), indexing="ij")
    data = np.zeros(shape, np.float32)
    for k in range(shape[2]):
        offset = linear[:, :2] @ np.stack([i - centre_vox[0], j - centre_vox[1]]).reshape(2, -1)
        data[:, :, k] = (np.linalg.norm(offset, axis=0) <= radius).reshape(i.shape)
    rows = morphometry(save(tmp_path / "disc.nii.gz", data, affine)).rows
    for r in rows:
        assert r["gm_area_mm2"] == pytest.approx(math.pi * radius ** 2, rel=0.02)


def test_soft_area_is_the_sum_of_probabilities(make_nifti):
    data = np.zeros((6, 6, 2), np.float32)
    data[0, 0:4, 0] = [0.25, 0.5, 0.75, 1.0]
    path = make_nifti(data, zooms_mm=(0.5, 0.5, 5))
    soft = morphometry(path, soft=True).rows
    hard = morphometry(path).rows
    assert soft[0]["gm_area_mm2"] == pytest.approx(2.5 * 0.25) and hard[0]["gm_area_mm2"] == pytest.approx(3 * 0.25)
    assert soft[0]["soft"] is True
    with pytest.raises(MetricsError, match=r"expected probabilities in \[0, 1\]"):  # a 0/2 mask: not probabilities
        morphometry(make_nifti((data > 0) * 2.0, zooms_mm=(0.5, 0.5, 5)), soft=True)
    with pytest.raises(MetricsError, match=r"expected probabilities in \[0, 1\]"):  # labels 0-4
        morphometry(make_nifti(data * 4, zooms_mm=(0.5, 0.5, 5)), soft=True)
    with pytest.raises(InputImageError, match=r"is not a GM mask"):  # an image: no mask at all
        morphometry(make_nifti(data * 4 + 0.3 + np.arange(72).reshape(6, 6, 2), zooms_mm=(0.5, 0.5, 5)), soft=True)


def test_cord_mask_gives_wm_area_and_ratio_and_warns_about_gm_outside(make_nifti, caplog):
    gm = np.zeros((10, 10, 2), np.float32)
    cord = np.zeros_like(gm)
    cord[0:8, 0:8, :] = 1                  # 64 px per slice
    gm[2:6, 2:6, 0] = 1                    # 16 px inside
    gm[6:10, 6:10, 1] = 1                  # 16 px, 4 inside the cord
    rows = morphometry(make_nifti(gm, zooms_mm=(0.5, 0.5, 5)), make_nifti(cord, zooms_mm=(0.5, 0.5, 5))).rows
    assert rows[0]["cord_area_mm2"] == pytest.approx(16.0) and rows[0]["wm_area_mm2"] == pytest.approx(12.0)
    assert rows[0]["gm_cord_ratio"] == pytest.approx(0.25)
    assert rows[1]["gm_area_mm2"] == pytest.approx(4.0) and rows[1]["gm_cord_ratio"] == pytest.approx(4 / 64)
    assert any("12 GM voxels lie outside the cord" in r.getMessage() for r in caplog.records)
    empty_cord = morphometry(make_nifti(gm), make_nifti(np.zeros_like(gm))).rows
    assert math.isnan(empty_cord[0]["gm_cord_ratio"])


def test_levels_give_per_level_mean_and_sd(make_nifti):
    gm = np.zeros((10, 10, 5), np.float32)
    levels = np.zeros_like(gm)
    for k, (n_px, lv) in enumerate([(4, 2), (8, 2), (10, 3), (20, 3), (30, 0)]):
        gm[:, :, k].flat[:n_px] = 1
        levels[:, :, k] = lv
    levels[0, 0, 2] = 2                    # a stray label: the slice's majority (3) wins
    rows = morphometry(make_nifti(gm, zooms_mm=(1, 1, 5)), levels_path=make_nifti(levels, zooms_mm=(1, 1, 5))).rows
    slice_rows = [r for r in rows if r["scope"] == "slice"]
    assert [r["level"] for r in slice_rows] == [2, 2, 3, 3, None]
    by_level = {r["level"]: r for r in rows if r["scope"] == "level"}
    assert by_level[2]["n_slices"] == 2 and by_level[2]["gm_area_mm2"] == pytest.approx(6.0)
    assert by_level[2]["gm_area_mm2_sd"] == pytest.approx(2.0) and by_level[3]["gm_area_mm2"] == pytest.approx(15.0)
    assert set(by_level) == {2, 3}
    assert slice_levels(np.dstack([np.full((2, 2), 4.0), np.array([[5, 5], [6, 6.0]])])) == [4, 5]  # tie: smaller


def test_binary_default_warns_when_a_mask_looks_soft(make_nifti, caplog):
    data = np.zeros((6, 6, 2), np.float32)
    data[0, 0, 0] = 0.7
    with caplog.at_level(logging.WARNING, logger="sctgm"):
        morphometry(make_nifti(data))
    assert any("measure soft masks" in r.getMessage() and r.parameter == "soft" for r in caplog.records)


# --------------------------------------------------------------------------------------------- several files
def test_compute_metrics_pairs_files_and_rejects_bad_pairings(make_nifti):
    masks = [make_nifti(np.pad(np.ones((3, 3, 2), np.float32), ((k, 5 - k), (0, 5), (0, 0)))) for k in (0, 1, 4)]
    table = compute_metrics(masks, references=[masks[0]])
    vol = [r for r in table.rows if r["scope"] == "volume"]
    assert [r["file"] for r in vol] == [str(m) for m in masks] and vol[0]["dice_3d"] == 1 and vol[2]["dice_3d"] == 0
    with pytest.raises(MetricsError, match="2 reference files for 3 inputs"):
        compute_metrics(masks, references=masks[:2])
    with pytest.raises(MetricsError, match="cannot be combined"):
        compute_metrics(masks, references=masks[:1], cords=masks[:1])
    measure = compute_metrics(masks, cords=masks)
    assert measure.mode == "measure" and len(measure.rows) == 3 * 2 and "wm_area_mm2" in measure.columns


# --------------------------------------------------------------------------------------------- real data
def test_t2s_manual_gm_areas_per_slice(shared_data):
    t2s = shared_data / "sct_testing_data" / "t2s"
    result = morphometry(t2s / "t2s_gmseg_manual.nii.gz", t2s / "t2s_seg.nii.gz")
    areas = [r["gm_area_mm2"] for r in result.rows]
    img = nib.load(str(t2s / "t2s_gmseg_manual.nii.gz"))
    counts = (np.asarray(img.dataobj) >= 0.5).sum(axis=(0, 1))   # stored LAS: slices are [:, :, k]
    pixel = float(np.linalg.norm(np.cross(img.affine[:3, 0], img.affine[:3, 1])))
    assert len(areas) == 9 and pixel == pytest.approx(0.25, rel=0.01)
    assert areas == pytest.approx(list(counts * pixel))
    assert areas == pytest.approx([14.5, 16.25, 16.25, 17.25, 16.75, 13.5, 11.0, 11.75, 12.5], abs=0.01)
    assert all(0.1 < r["gm_cord_ratio"] < 0.3 for r in result.rows)
    same = compare(t2s / "t2s_gmseg_manual.nii.gz", t2s / "t2s_gmseg_manual.nii.gz").rows[-1]
    assert same["dice"] == 1 and same["hausdorff_mm"] == 0 and same["dice_3d"] == 1


def test_compare_slices_accepts_plain_arrays():
    a = np.zeros((12, 12, 2), bool)
    a[2:8, 2:8, :] = True
    rows = compare_slices(a, np.roll(a, 2, axis=0), (0.5, 0.5))
    assert len(rows) == 2 and rows[0]["hausdorff_mm"] == pytest.approx(1.0) and rows[0]["seg_area_mm2"] == 9.0
