"""Cheaper arithmetic on the CPU: the BatchNorm fold (exact, border included), the bf16 engine's masks
against fp32, and the fallback to fp32 where the CPU or the install cannot run bf16."""

from __future__ import annotations

import json
import logging

import nibabel as nib
import numpy as np
import pytest

from sctgm.engines import hardware
from sctgm.engines.fold import fold_batchnorms
from sctgm.engines.onnx import OnnxNetwork
from sctgm.networks.dilated import onnx_graph
from sctgm.exceptions import InvalidOptionError
from sctgm.io import load_image
from sctgm.model.install import ensure_model
from sctgm.segment.pipeline import Segmenter

from ..conftest import LABELLED, MODELS_DIR, cord_phantom_volume, dice, random_state_dict

BF16_HERE = hardware.cpu_has_bf16() and hardware.openvino_available()
needs_bf16 = pytest.mark.skipif(not BF16_HERE, reason="this CPU has no bf16 instructions, or OpenVINO is absent")


def _shifted_state_dict(seed: int) -> dict[str, np.ndarray]:
    """Random weights whose BatchNorms shift by a lot (|beta| ~ 1), so that a fold that got the
    zero-padded border wrong would show there."""
    sd = random_state_dict(4, seed=seed)
    rng = np.random.default_rng(seed + 100)
    for key in sd:
        if key.endswith("bn.bias") or key == "concat_bn.bias":
            sd[key] = rng.normal(0, 1.0, sd[key].shape).astype(np.float32)
    return sd


def _logits_session(model):
    """An ONNX Runtime session over ``model`` that returns the logits (the Sigmoid's input)."""
    import onnx

    model = onnx.ModelProto.FromString(model.SerializeToString())
    sigmoid = next(n for n in model.graph.node if n.op_type == "Sigmoid")
    model.graph.output[0].name = sigmoid.input[0]
    return OnnxNetwork(model.SerializeToString(), threads=1).session


@pytest.mark.parametrize("shape", [(2, 1, 64, 64), (1, 1, 37, 50), (1, 1, 200, 200)])
def test_folded_graph_equals_the_unfolded_one_border_included(shape):
    import onnx

    original = onnx.ModelProto.FromString(onnx_graph(_shifted_state_dict(1), {"filters": 4}))
    folded = fold_batchnorms(original)
    assert not [n for n in folded.graph.node if n.op_type == "BatchNormalization"]  # every BN folded
    x = np.random.default_rng(0).normal(size=shape).astype(np.float32)
    want = _logits_session(original).run(None, {"x": x})[0]
    got = _logits_session(folded).run(None, {"x": x})[0]
    assert np.abs(want).max() > 1  # logits, not a saturated constant
    np.testing.assert_allclose(got, want, atol=1e-4, rtol=0)
    # the border is where a naive fold goes wrong: the same graph folded without the correction
    naive = _logits_session(fold_batchnorms(original, exact_border=False)).run(None, {"x": x})[0]
    border = np.ones(shape, bool)
    border[..., 3:-3, 3:-3] = False
    assert np.abs(naive - want)[border].max() > 1e-2


def test_a_batchnorm_after_its_convolution_folds_backwards_exactly():
    """The U-Net's conv -> BN -> ReLU: the BN goes into the convolution before it."""
    import onnx
    import torch

    from sctgm.networks.unet import onnx_graph as unet_graph
    from sctgm.networks.unet import torch_module

    torch.manual_seed(0)
    net = torch_module({"filters": 4, "depth": 2}).eval()
    for module in net.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-1, 1)
            module.running_var.uniform_(0.5, 2)
            module.bias.data.uniform_(-1, 1)
    sd = {k: v.numpy() for k, v in net.state_dict().items() if not k.endswith("num_batches_tracked")}
    original = onnx.ModelProto.FromString(unet_graph(sd))
    folded = fold_batchnorms(original)
    assert not [n for n in folded.graph.node if n.op_type == "BatchNormalization"]
    x = np.random.default_rng(1).normal(size=(1, 1, 48, 40)).astype(np.float32)
    np.testing.assert_allclose(OnnxNetwork(folded.SerializeToString()).run(x),
                               OnnxNetwork(original.SerializeToString()).run(x), atol=1e-5)


def _phantom(make_nifti):
    return load_image(make_nifti(cord_phantom_volume((60, 56, 4)), zooms_mm=(0.5, 0.5, 5.0)))


@needs_bf16
def test_bf16_masks_of_the_tiny_model_agree_with_fp32(tiny_model, make_nifti):
    name = tiny_model()
    fp32 = Segmenter.from_name(name, device="cpu")
    bf16 = Segmenter.from_name(name, device="cpu", precision="bf16")
    assert (bf16.network.engine, bf16.network.precision) == ("openvino", "bf16")
    image = _phantom(make_nifti)
    x = np.random.default_rng(0).normal(size=(2, 1, 200, 200)).astype(np.float32)
    p32, p16 = fp32.network.runner.run(x), bf16.network.runner.run(x)
    assert 0 < np.abs(p16 - p32).max() < 0.05  # really bf16 (not fp32 again), and close to it
    a, b = fp32.segment_image(image).gm, bf16.segment_image(image).gm
    assert a.sum() > 0 and dice(a, b) > 0.99


@pytest.mark.parametrize("probe", ["cpu_has_bf16", "openvino_available"])
def test_without_bf16_the_network_runs_fp32_with_one_warning(probe, tiny_model, make_nifti, monkeypatch, caplog):
    monkeypatch.setattr(f"sctgm.engines.choice.{probe}", lambda: False)
    name = tiny_model()
    with caplog.at_level(logging.WARNING, logger="sctgm"):
        seg = Segmenter.from_name(name, device="cpu", precision="bf16")
        seg.segment_image(_phantom(make_nifti))
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING and "bf16" in r.getMessage()]
    assert len(warnings) == 1 and "fp32" in warnings[0].getMessage()
    assert (seg.network.engine, seg.network.precision) == ("onnxruntime", "fp32")
    fp32 = Segmenter.from_name(name, device="cpu")
    x = np.random.default_rng(0).normal(size=(1, 1, 64, 64)).astype(np.float32)
    np.testing.assert_array_equal(seg.network.runner.run(x), fp32.network.runner.run(x))


def test_an_openvino_that_ignores_the_fp32_layers_runs_fp32_with_one_warning(tiny_model, make_nifti, monkeypatch,
                                                                               caplog):
    """OpenVINO before 2026.3 drops the marks that keep the first convolution in fp32, silently, and
    bf16's masks then miss the bar (docs/speed.md): the engine checks the compiled layers and falls
    back to fp32, once, for both networks of the default."""
    pytest.importorskip("openvino")
    from sctgm.engines.openvino import OpenVinoNetwork

    monkeypatch.setattr("sctgm.engines.choice.cpu_has_bf16", lambda: True)
    monkeypatch.setattr(OpenVinoNetwork, "fp32_nodes_honoured", lambda self: False)
    name = tiny_model()
    model = ensure_model(name)
    with caplog.at_level(logging.WARNING, logger="sctgm"):
        seg = Segmenter(model, device="cpu", precision="bf16", partner=ensure_model(tiny_model("tiny-b")))
        seg.segment_image(_phantom(make_nifti))
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "2026.3" in warnings[0] and "running in fp32" in warnings[0], warnings
    assert (seg.network.engine, seg.network.precision) == ("onnxruntime", "fp32")
    assert (seg.partner.engine, seg.partner.precision) == ("onnxruntime", "fp32")


def test_an_unknown_precision_is_refused(tiny_model):
    with pytest.raises(InvalidOptionError, match="precision 'int4'") as info:
        Segmenter.from_name(tiny_model(), device="cpu", precision="int4")
    assert info.value.parameter == "precision"


def test_the_sidecar_records_the_precision_that_ran(tiny_model, make_nifti, tmp_path, monkeypatch):
    from sctgm.segment.files import segment_file

    monkeypatch.setattr("sctgm.engines.choice.cpu_has_bf16", lambda: False)  # the same answer on every CPU
    image = make_nifti(cord_phantom_volume((60, 56, 4)), zooms_mm=(0.5, 0.5, 5.0))
    result = segment_file(image, tmp_path / "out_gmseg.nii.gz", model=tiny_model(), device="cpu", precision="bf16")
    params = json.loads(result.sidecar.read_text())["GeneratedBy"][0]["Parameters"]
    assert (params["precision"], params["engine"]) == ("fp32", "onnxruntime")


def _mt1_with_bias_field():
    """mt1 times the seeded bias field of bench/precision_cpu.py (its variant 'bias' of case 3): the
    volume where bf16 with every layer in bf16 fell to Dice 0.9909 against fp32 on ``large``."""
    from sctgm.segment.degrade import smooth_bias_field

    image, manual, cord = LABELLED["mt1"]
    img = nib.load(str(image))
    data = np.asanyarray(img.dataobj).astype(np.float32)
    data = data * smooth_bias_field(data.shape, img.header.get_zooms()[:3], np.random.default_rng(1000 + 10 * 2 + 4))
    return nib.Nifti1Image(data, img.affine, img.header), manual, cord


@needs_bf16
@pytest.mark.parametrize("model,cases", [("challenge", tuple(LABELLED)), ("large", ("t2s", "mt1", "mt1 + bias"))])
def test_bf16_masks_hold_on_the_labelled_cases(shared_models, model, cases, tmp_path):
    """The bar of docs/speed.md: Dice >= 0.995 against fp32, and against the manual mask no more
    than 0.002 below fp32's (bench/precision_cpu.py also runs the noise variants)."""
    fp32 = Segmenter.from_name(model, device="cpu", mirror=str(MODELS_DIR))
    bf16 = Segmenter.from_name(model, device="cpu", mirror=str(MODELS_DIR), precision="bf16")
    assert bf16.network.precision == "bf16"
    for case in cases:
        if case == "mt1 + bias":
            volume, manual, cord = _mt1_with_bias_field()
            image = tmp_path / "mt1_bias.nii.gz"
            nib.save(volume, str(image))
        else:
            image, manual, cord = LABELLED[case]
        cord_image = load_image(cord, what="cord mask", allow_constant=True) if cord else None
        a = fp32.segment_image(load_image(image), cord=cord_image).gm
        b = bf16.segment_image(load_image(image), cord=cord_image).gm
        truth = np.asanyarray(nib.load(str(manual)).dataobj) > 0.5
        assert dice(a, b) >= 0.995, case
        assert dice(b, truth) >= dice(a, truth) - 0.002, case


def test_int8_quantisation_of_the_tiny_model_follows_the_fp32_graph():
    """The int8 graph bench/precision_cpu.py measures: int8 weights, int8 convolutions, probabilities
    that follow fp32's (not a constant, not another function)."""
    import onnx

    from sctgm.engines.quantise import quantise_int8

    rng = np.random.default_rng(3)
    original = onnx.ModelProto.FromString(onnx_graph(random_state_dict(4, seed=2), {"filters": 4}))
    windows = rng.normal(size=(4, 1, 64, 64)).astype(np.float32)
    int8 = quantise_int8(fold_batchnorms(original), windows, exclude=("logits",))
    assert sum(n.op_type == "QuantizeLinear" for n in int8.graph.node) >= 10
    x = rng.normal(size=(2, 1, 64, 64)).astype(np.float32)
    want = _logits_session(original).run(None, {"x": x})[0]
    got = _logits_session(int8).run(None, {"x": x})[0]
    assert np.corrcoef(want.ravel(), got.ravel())[0, 1] > 0.99
    assert np.abs(got - want).max() > 0  # it is quantised, not the fp32 graph again


def test_a_recipe_that_says_bf16_runs_it_and_an_explicit_precision_overrides_it(tiny_model, tmp_path, monkeypatch,
                                                                                caplog):
    name = tiny_model()
    registry = tmp_path / "tiny_registry.json"
    entries = json.loads(registry.read_text())
    entries["models"][name]["precision"] = "bf16"
    registry.write_text(json.dumps(entries))
    seg = Segmenter.from_name(name, device="cpu")
    assert seg.model.recipe.precision == "bf16"
    assert seg.network.precision == ("bf16" if BF16_HERE else "fp32")
    monkeypatch.setattr("sctgm.engines.choice.cpu_has_bf16", lambda: False)
    with caplog.at_level(logging.WARNING, logger="sctgm"):
        assert Segmenter.from_name(name, device="cpu", precision="fp32").network.precision == "fp32"
    assert not [r for r in caplog.records if "bf16" in r.getMessage()]  # asked for fp32: nothing to say
