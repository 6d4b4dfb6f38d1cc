"""The port of the published network, checked without trusting the port."""

from __future__ import annotations

import h5py
import nibabel as nib
import numpy as np
import pytest
import torch
from nibabel.processing import resample_from_to

from sctgm.networks.dilated import DilatedGMNet
from sctgm.model.weights import load_safetensors, save_safetensors, state_dict_from_keras

from ..conftest import LABELLED


def _net(path) -> DilatedGMNet:
    sd, filters = state_dict_from_keras(path)
    net = DilatedGMNet(filters).eval()
    net.load_state_dict({k: torch.from_numpy(v) for k, v in sd.items()}, strict=True)
    return net


def _numpy_conv_relu_bn(x: np.ndarray, h5: h5py.File, conv: str, bn: str) -> np.ndarray:
    """Keras Conv2D('same', relu) then BatchNormalization(eps=1e-3), channels-last, in plain numpy
    straight from the HDF5 arrays: x (H, W, Cin) -> (H, W, Cout)."""
    g = h5["model_weights"] if "model_weights" in h5 else h5
    k = g[conv][conv]["kernel:0"][()]  # (3, 3, Cin, Cout)
    b = g[conv][conv]["bias:0"][()]
    xp = np.pad(x, ((1, 1), (1, 1), (0, 0)))
    h, w = x.shape[:2]
    y = np.zeros((h, w, k.shape[3]), dtype=np.float64) + b
    for i in range(3):
        for j in range(3):
            y += xp[i:i + h, j:j + w, :] @ k[i, j]
    y = np.maximum(y, 0)
    p = g[bn][bn]
    return (y - p["moving_mean:0"][()]) / np.sqrt(p["moving_variance:0"][()] + 1e-3) * p["gamma:0"][()] + p["beta:0"][()]


@pytest.mark.parametrize("model", ["challenge", "large"])
def test_first_layers_match_an_independent_numpy_computation(shared_models, model):
    path = shared_models / f"{model}_model.hdf5"
    x = np.random.default_rng(1).normal(size=(23, 31, 1))
    with h5py.File(path, "r") as h5:
        ref1 = _numpy_conv_relu_bn(x, h5, "conv2d_1", "batch_normalization_1")
        ref2 = _numpy_conv_relu_bn(ref1, h5, "conv2d_2", "batch_normalization_2")
    net = _net(path)
    with torch.no_grad():
        t = torch.from_numpy(x.transpose(2, 0, 1)[None].astype(np.float32))
        out1 = net.conv2d_1(t)
        out2 = net.conv2d_2(out1)
    np.testing.assert_allclose(out1[0].numpy().transpose(1, 2, 0), ref1, atol=1e-4)
    np.testing.assert_allclose(out2[0].numpy().transpose(1, 2, 0), ref2, atol=1e-3)


def test_safetensors_round_trip_is_exact(shared_models, tmp_path):
    sd, filters = state_dict_from_keras(shared_models / "challenge_model.hdf5")
    save_safetensors(sd, filters, tmp_path / "m.safetensors")
    sd2, filters2 = load_safetensors(tmp_path / "m.safetensors")
    assert filters2 == filters == 32
    assert sd.keys() == sd2.keys()
    for k in sd:
        np.testing.assert_array_equal(sd[k], sd2[k])


def _reference_grid_input(case: str) -> tuple[np.ndarray, tuple[slice, slice]]:
    """The reference's own 0.25 mm grid (its README): shape round(n * pixdim / 0.25), affine
    A @ diag(n/m), nibabel resample_from_to, linear, mode nearest, input dtype kept; 200x200 centre
    crop only when both sides exceed 200; standardised over the stack."""
    img = nib.load(str(LABELLED[case][0]))
    n0, n1, nz = img.shape
    z = img.header["pixdim"][1:4]
    m0, m1 = round(n0 * z[0] / 0.25), round(n1 * z[1] / 0.25)
    affine = img.affine @ np.diag([n0 / m0, n1 / m1, 1, 1])
    fine = np.asanyarray(resample_from_to(img, ((m0, m1, nz), affine), order=1, mode="nearest").dataobj)
    fine = fine.astype(np.float32)
    box = (slice(0, m0), slice(0, m1))
    if m0 > 200 and m1 > 200:
        box = (slice((m0 - 200) // 2, (m0 - 200) // 2 + 200), slice((m1 - 200) // 2, (m1 - 200) // 2 + 200))
    crop = fine[box]
    return (crop - crop.mean()) / crop.std(), box


@pytest.mark.slow
@pytest.mark.parametrize("case", list(LABELLED))
@pytest.mark.parametrize("model", ["challenge", "large"])
def test_sigmoid_matches_reference_softpred(shared_models, reference_dir, case, model):
    x, box = _reference_grid_input(case)
    net = _net(shared_models / f"{model}_model.hdf5")
    with torch.no_grad():
        p = net(torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1)[:, None])))[:, 0].numpy()
    ref = np.asanyarray(nib.load(str(reference_dir / f"{case}_{model}_softpred_0p25mm.nii.gz")).dataobj)[box]
    p = p.transpose(1, 2, 0)
    diff = np.abs(p - ref)
    if case != "t2s_uncropped":
        assert diff.max() < 1e-3, f"max |sigmoid - reference| = {diff.max():.2e}"
        return
    # t2s_uncropped is uint8 at exactly 2x the network's spacing: 31% of its 0.25 mm voxels are exact
    # .5 ties that the reference's resampling rounds to uint8 (its README), and which way each tie
    # went depended on the floating-point noise of its scipy 1.7 build. That input cannot be rebuilt
    # bit for bit; the outputs agree everywhere but on a few dozen of the 440,000 voxels, all on the
    # GM's edge where the published networks' sigmoid is a step.
    assert (diff < 1e-3).mean() > 0.9995, f"{(diff >= 1e-3).sum()} voxels differ by >= 1e-3"
    a, b = p > 0.999, ref > 0.999
    assert 2 * (a & b).sum() / (a.sum() + b.sum()) > 0.98
