"""bf16 with chosen layers kept in fp32 (OpenVINO on the CPU, ``--precision bf16``): the marked
layers carry OpenVINO's keep-precision attribute, really run in fp32, the compile cache keeps the
mixed graph apart from the plain one, and the shipped path runs the network's chosen layers."""

from __future__ import annotations

import numpy as np
import pytest

from sctgm.engines import hardware
from sctgm.networks.dilated import NETWORK, onnx_graph
from sctgm.exceptions import ModelError
from sctgm.segment.pipeline import Segmenter

from ..conftest import random_state_dict

needs_openvino = pytest.mark.skipif(not hardware.openvino_available(), reason="OpenVINO is not installed")
needs_bf16 = pytest.mark.skipif(not (hardware.cpu_has_bf16() and hardware.openvino_available()),
                                reason="this CPU has no bf16 instructions, or OpenVINO is absent")
KEEP = "DisablePrecisionConversion_0"  # the attribute's key in a node's runtime info


def _logits_graph(filters: int = 8, seed: int = 1) -> tuple[bytes, list[str]]:
    """The dilated network with random weights, its logits as output (probabilities saturate), and
    the names of its convolutions."""
    import onnx

    model = onnx.ModelProto.FromString(onnx_graph(random_state_dict(filters, seed=seed), {"filters": filters}))
    sigmoid = next(n for n in model.graph.node if n.op_type == "Sigmoid")
    model.graph.node.remove(sigmoid)
    model.graph.output[0].name = sigmoid.input[0]
    return model.SerializeToString(), [n.name for n in model.graph.node if n.op_type == "Conv"]


def _x() -> np.ndarray:
    return np.random.default_rng(0).normal(size=(1, 1, 64, 64)).astype(np.float32)


@needs_openvino
def test_the_named_nodes_and_only_they_carry_the_keep_precision_attribute():
    import openvino as ov

    from sctgm.engines.openvino import read_model

    graph, _ = _logits_graph()
    core = ov.Core()
    marked = read_model(core, graph, ["conv2d_2", "logits"])
    names = {op.get_friendly_name() for op in marked.get_ordered_ops() if KEEP in op.get_rt_info().keys()}
    # a prefix takes the block (conv, its bias, ReLU, BatchNorm); 'logits' is not 'logits_x'
    assert names == {"conv2d_2/conv/WithoutBiases", "conv2d_2/conv", "conv2d_2/relu", "conv2d_2/bn",
                     "logits/WithoutBiases", "logits"}
    assert not [op for op in read_model(core, graph).get_ordered_ops() if KEEP in op.get_rt_info().keys()]
    # the same function otherwise: in fp32 both compile to the same numbers
    plain = core.compile_model(read_model(core, graph), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    kept = core.compile_model(marked, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    np.testing.assert_array_equal(kept(_x())[0], plain(_x())[0])


def _runtime_precisions(net) -> dict[str, str]:
    """Compiled layer (its original ONNX-derived names) -> the precision it runs in."""
    out = {}
    for op in net.compiled.get_runtime_model().get_ordered_ops():
        info = op.get_rt_info()
        if "runtimePrecision" in info.keys() and "originalLayersNames" in info.keys():
            out[info["originalLayersNames"].astype(str)] = info["runtimePrecision"].astype(str)
    return out


@needs_bf16
def test_layers_kept_in_fp32_run_in_fp32_and_bring_the_output_to_fp32s():
    from sctgm.engines.openvino import OpenVinoNetwork

    graph, convs = _logits_graph()
    f32 = OpenVinoNetwork(graph, precision="fp32", threads=1).run(_x())
    plain = OpenVinoNetwork(graph, threads=1)
    mixed = OpenVinoNetwork(graph, threads=1, fp32_nodes=convs)
    conv_layers = lambda net: {k: v for k, v in _runtime_precisions(net).items() if "/WithoutBiases" in k}  # noqa: E731
    assert set(conv_layers(plain).values()) == {"bf16"} and len(conv_layers(plain)) == len(convs)
    assert set(conv_layers(mixed).values()) == {"f32"} and len(conv_layers(mixed)) == len(convs)
    assert mixed.fp32_nodes_honoured()
    plain.fp32_nodes = tuple(convs)  # what an OpenVINO that drops the marks would compile: caught
    assert not plain.fp32_nodes_honoured()
    rms = lambda a: float(np.sqrt(np.mean((a - f32) ** 2)))  # noqa: E731
    b, m = plain.run(_x()), mixed.run(_x())
    assert rms(b) > 0.01  # bf16 moves these logits (else the comparison says nothing)
    assert rms(m) < 0.5 * rms(b)  # the convolutions' rounding is most of it (concat_bn and the pool stay bf16)
    one = OpenVinoNetwork(graph, threads=1, fp32_nodes=["logits"])
    assert conv_layers(one)["logits/WithoutBiases,logits"] == "f32"
    assert sum(v == "f32" for v in conv_layers(one).values()) == 1


@needs_bf16
def test_the_compile_cache_keeps_the_mixed_graph_apart_from_the_plain_one(tmp_path):
    from sctgm.engines.openvino import OpenVinoNetwork

    graph, convs = _logits_graph()
    plain = OpenVinoNetwork(graph, threads=1, cache_dir=tmp_path).run(_x())
    mixed_cached = OpenVinoNetwork(graph, threads=1, cache_dir=tmp_path, fp32_nodes=convs).run(_x())
    mixed = OpenVinoNetwork(graph, threads=1, fp32_nodes=convs).run(_x())
    assert len(list((tmp_path / "openvino").iterdir())) == 2  # one compiled form each
    np.testing.assert_array_equal(mixed_cached, mixed)
    assert np.abs(mixed_cached - plain).max() > 0
    again = OpenVinoNetwork(graph, threads=1, cache_dir=tmp_path, fp32_nodes=convs).run(_x())  # from the cache
    np.testing.assert_array_equal(again, mixed)


def test_the_dilated_network_names_layers_of_its_graph():
    import onnx

    graph = onnx.ModelProto.FromString(onnx_graph(random_state_dict(4, seed=0), {"filters": 4}))
    nodes = {n.name for n in graph.graph.node}
    assert NETWORK.bf16_fp32_nodes  # chosen by bench/bf16_layers.py (docs/speed.md)
    assert all(any(n == k or n.startswith(k + "/") for n in nodes) for k in NETWORK.bf16_fp32_nodes)


@needs_bf16
def test_precision_bf16_keeps_the_networks_chosen_layers_in_fp32(tiny_model):
    seg = Segmenter.from_name(tiny_model(), device="cpu", precision="bf16")
    assert (seg.network.engine, seg.network.precision) == ("openvino", "bf16")
    assert seg.network.runner.fp32_nodes == NETWORK.bf16_fp32_nodes
    kept = {k for k, v in _runtime_precisions(seg.network.runner).items() if v == "f32" and "/WithoutBiases" in k}
    assert {k.split("/")[0] for k in kept} == {k.split("/")[0] for k in NETWORK.bf16_fp32_nodes}


def test_a_node_name_the_graph_lacks_is_refused_in_one_line():
    pytest.importorskip("openvino")
    from sctgm.engines.openvino import OpenVinoNetwork

    graph, _ = _logits_graph()
    with pytest.raises(ModelError, match=r"\['conv2d_1/typo'\] name no layer"):
        OpenVinoNetwork(graph, threads=1, fp32_nodes=["conv2d_1/typo"])


@needs_bf16
def test_the_sidecar_records_the_fp32_layers_and_a_resume_redoes_outputs_made_without_them(tiny_model, make_nifti):
    """bf16 outputs of the path that ran every layer in bf16 recorded only `precision: bf16`: a batch
    resumed now must redo them, not keep them as this path's."""
    import json

    from sctgm.batch import BatchSettings, segment_files

    from ..conftest import cord_phantom_volume

    image = make_nifti(cord_phantom_volume(seed=1), name="sub-01_T2star.nii.gz")
    settings = BatchSettings(model=tiny_model(), device="cpu", precision="bf16")
    assert [r.status for r in segment_files([str(image)], settings).records] == ["ok"]
    sidecar = image.with_name("sub-01_T2star_gmseg.json")
    meta = json.loads(sidecar.read_text())
    params = meta["GeneratedBy"][0]["Parameters"]
    assert params["precision"] == "bf16" and params["precision_fp32_layers"] == list(NETWORK.bf16_fp32_nodes)
    assert [r.status for r in segment_files([str(image)], settings).records] == ["skipped"]
    del params["precision_fp32_layers"]  # as the earlier path wrote it
    sidecar.write_text(json.dumps(meta))
    assert [r.status for r in segment_files([str(image)], settings).records] == ["ok"]
    fp32 = BatchSettings(model="tiny", device="cpu")
    assert [r.status for r in segment_files([str(image)], fp32).records] == ["ok"]
    assert "precision_fp32_layers" not in json.loads(sidecar.read_text())["GeneratedBy"][0]["Parameters"]


@needs_openvino
def test_one_network_called_from_threads_gives_each_call_its_own_output():
    """A Segmenter shared by threads: each call of the OpenVINO network gets the output of its own
    batch (one infer request, one call at a time), never "busy" nor another call's output."""
    from concurrent.futures import ThreadPoolExecutor

    from sctgm.engines.openvino import OpenVinoNetwork

    graph, _ = _logits_graph()
    net = OpenVinoNetwork(graph, precision="fp32", threads=1)
    rng = np.random.default_rng(3)
    batches = [rng.normal(size=(1, 1, size, size)).astype(np.float32) for size in (48, 64, 80, 96) * 6]
    alone = [net.run(b) for b in batches]
    with ThreadPoolExecutor(4) as pool:
        together = list(pool.map(net.run, batches))
    for a, t in zip(alone, together):
        np.testing.assert_array_equal(a, t)
