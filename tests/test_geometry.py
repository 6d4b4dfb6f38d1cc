"""sctgm.geometry: exact reorientation, and the one definition of zooms, areas, volumes, slice indices."""

from __future__ import annotations

import itertools

import nibabel as nib
import numpy as np
import pytest
from nibabel import orientations as ornt

from sctgm import geometry
from sctgm.exceptions import GridMismatchError
from sctgm.geometry import looks_axial, reorientation_for
from sctgm.io import load_image

ALL_AXCODES = ["".join(c) for p in itertools.permutations([("L", "R"), ("A", "P"), ("S", "I")])
               for c in itertools.product(*p)]


@pytest.mark.parametrize("axcodes", ALL_AXCODES)
def test_reorientation_round_trip_is_exact_for_all_48_orientations(axcodes):
    rng = np.random.default_rng(0)
    canon = rng.normal(size=(7, 8, 9)).astype(np.float32)
    las = nib.Nifti1Image(canon, np.diag([-0.5, 0.6, 5.0, 1.0]))
    stored = las.as_reoriented(ornt.ornt_transform(ornt.axcodes2ornt("LAS"), ornt.axcodes2ornt(tuple(axcodes))))
    assert "".join(nib.aff2axcodes(stored.affine)) == axcodes
    data = np.asanyarray(stored.dataobj)
    reo = reorientation_for(stored.affine, data.shape)
    np.testing.assert_array_equal(reo.apply(data), canon)
    np.testing.assert_array_equal(reo.undo(reo.apply(data)), data)
    np.testing.assert_allclose(reo.canonical_affine(stored.affine), las.affine, atol=1e-9)


def test_sagittal_acquisition_does_not_look_axial():
    assert looks_axial((0.5, 0.5, 5.0))
    assert looks_axial((1.0, 1.0, 1.0))
    assert not looks_axial((3.0, 0.5, 0.5))  # thick along L-R: sagittal
    assert not looks_axial((0.5, 3.0, 0.5))  # thick along A-P: coronal


@pytest.mark.parametrize("axcodes", ["LAS", "RPI", "SAL", "IPR", "ASL"])
def test_zooms_area_volume_and_slice_index_do_not_depend_on_the_stored_orientation(make_nifti, axcodes):
    data = np.zeros((6, 7, 4), np.float32)
    data[1, 2, 3] = 1
    canon = load_image(make_nifti(data, zooms_mm=(0.4, 0.7, 3.0), axcodes="LAS"), allow_constant=True)
    stored = canon.nifti.as_reoriented(ornt.ornt_transform(ornt.axcodes2ornt("LAS"), ornt.axcodes2ornt(tuple(axcodes))))
    img = type(canon)(canon.path, np.asanyarray(stored.dataobj).astype(np.float32), stored)
    reo = reorientation_for(img.affine, img.data.shape)
    assert geometry.canonical_zooms_mm(img.zooms_mm, reo) == pytest.approx((0.4, 0.7, 3.0))
    assert geometry.pixel_area_mm2(reo.canonical_affine(img.affine)) == pytest.approx(0.28)
    assert geometry.voxel_volume_mm3(img.affine) == pytest.approx(0.84)
    k = 3  # canonical slice of the marked voxel
    marked = np.argwhere(img.data == 1)[0]
    assert geometry.file_slice_index(reo, k) == marked[geometry.slice_axis(reo)]


def test_pixel_area_is_exact_on_a_sheared_grid():
    affine = np.array([[0.5, 0.2, 0, 0], [0, 0.5, 0, 0], [0, 0, 3, 0], [0, 0, 0, 1.0]])
    assert geometry.pixel_area_mm2(affine) == pytest.approx(0.25)
    assert geometry.voxel_volume_mm3(affine) == pytest.approx(0.75)


def test_same_grid_check_names_both_files(make_nifti):
    a = load_image(make_nifti(shape=(10, 10, 3)))
    b = load_image(make_nifti(shape=(10, 12, 3)))
    geometry.check_same_grid(a, a)
    with pytest.raises(GridMismatchError, match=r"is not on the grid of .*\(10, 12, 3\) vs \(10, 10, 3\).*; fix it"):
        geometry.check_same_grid(a, b, hint="fix it")
