"""The two engines (ONNX Runtime, PyTorch) compute the same function, and the choice between them."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from sctgm import engines as inference  # the engine choice and loading
from sctgm.engines.onnx import OnnxNetwork, graph_cache_path
from sctgm.networks.dilated import onnx_graph
from sctgm.networks.dilated import DilatedGMNet
from sctgm.engines.torch import TorchNetwork
from sctgm.exceptions import InvalidOptionError, SctGmError
from sctgm.model.install import ensure_model
from sctgm.model.weights import state_dict_from_keras

from .test_network import _reference_grid_input


@pytest.mark.parametrize("model", ["challenge", "large"])
@pytest.mark.parametrize("case", ["t2s", "t2s_uncropped"])
def test_onnx_graph_computes_what_the_torch_module_computes(shared_models, model, case):
    sd, filters = state_dict_from_keras(shared_models / f"{model}_model.hdf5")
    x = np.ascontiguousarray(_reference_grid_input(case)[0].transpose(2, 0, 1)[:, None], dtype=np.float32)
    p_torch = TorchNetwork(DilatedGMNet(filters), sd, "cpu").run(x)
    p_onnx = OnnxNetwork(onnx_graph(sd, {"filters": filters})).run(x)
    assert p_onnx.shape == p_torch.shape == x.shape
    assert (p_torch > 0.999).sum() > 100  # the slices do hold GM: the comparison is not of zeros
    # float32 sums in another order: ~1e-4 at most, a tenth of the reference-fidelity tolerance
    np.testing.assert_allclose(p_onnx, p_torch, atol=3e-4)


def test_auto_is_onnxruntime_on_a_cpu_machine(monkeypatch):
    monkeypatch.setattr("sctgm.engines.choice.cuda_may_exist", lambda: False)
    assert inference.choose_engine("auto", "auto") == ("onnxruntime", "cpu")
    assert inference.choose_engine("auto", "cpu") == ("onnxruntime", "cpu")
    assert inference.choose_engine("torch", "auto") == ("torch", "cpu")


def test_auto_falls_back_to_torch_without_onnxruntime(monkeypatch):
    monkeypatch.setattr("sctgm.engines.choice.onnxruntime_available", lambda: False)
    assert inference.choose_engine("auto", "cpu") == ("torch", "cpu")
    with pytest.raises(SctGmError, match="onnxruntime is not installed"):
        inference.choose_engine("onnxruntime", "cpu")


@pytest.mark.parametrize("engine,device,message", [
    ("onnxruntime", "cuda", "runs on the CPU"),
    ("tensorflow", "cpu", "unknown; expected one of auto, onnxruntime, torch"),
    ("torch", "tpu", "not a device name"),
])
def test_impossible_engine_requests_are_refused_with_the_fix(engine, device, message, tiny_model):
    model = ensure_model(tiny_model())
    with pytest.raises(InvalidOptionError, match=message) as info:
        inference.load_network(model, device, engine=engine)
    assert "--" not in str(info.value)  # a library message names arguments, never CLI flags
    assert info.value.parameter in ("engine", "device")


def test_the_onnx_graph_is_cached_and_a_damaged_cache_is_rebuilt(tiny_model, tmp_path, caplog):
    model = ensure_model(tiny_model())
    x = np.random.default_rng(0).normal(size=(2, 1, 64, 64)).astype(np.float32)
    first = inference.load_network(model, "cpu", engine="onnxruntime", cache_dir=tmp_path)
    cached = graph_cache_path(tmp_path, model.sha256, model.architecture)
    assert sorted(p.name for p in cached.parent.iterdir()) == [cached.name, cached.name + ".sha256"]
    whole = cached.read_bytes()
    cached.write_bytes(whole[:1000])  # truncated by a full disk, say
    second = inference.load_network(model, "cpu", engine="onnxruntime", cache_dir=tmp_path)
    assert "damaged or altered; rebuilding" in caplog.text
    np.testing.assert_array_equal(first.runner.run(x), second.runner.run(x))
    assert cached.read_bytes() == whole  # written again, whole


def test_an_altered_graph_that_still_loads_is_not_used(tiny_model, tmp_path, caplog):
    """One flipped byte inside a weight still loads in ONNX Runtime, with wrong probabilities (the tiny
    random model: these tests need no ../shared)."""
    model = ensure_model(tiny_model())
    x = np.random.default_rng(1).normal(size=(1, 1, 64, 64)).astype(np.float32)
    good = inference.load_network(model, "cpu", engine="onnxruntime", cache_dir=tmp_path).runner.run(x)
    cached = graph_cache_path(tmp_path, model.sha256, model.architecture)
    data = bytearray(cached.read_bytes())
    data[len(data) // 2] ^= 0xFF
    cached.write_bytes(bytes(data))
    again = inference.load_network(model, "cpu", engine="onnxruntime", cache_dir=tmp_path).runner.run(x)
    assert "damaged or altered" in caplog.text
    np.testing.assert_array_equal(again, good)


def test_a_damaged_graph_in_a_read_only_cache_is_rebuilt_in_memory(tiny_model, tmp_path, caplog, monkeypatch):
    import sctgm.writing
    from sctgm.exceptions import OutputError

    model = ensure_model(tiny_model())
    inference.load_network(model, "cpu", engine="onnxruntime", cache_dir=tmp_path)
    cached = graph_cache_path(tmp_path, model.sha256, model.architecture)
    cached.write_bytes(b"garbage")

    def read_only(path):  # what atomic_path says of a folder it cannot write (chmod does not stop root)
        raise OutputError(f"{path}: cannot write here (Read-only file system)")

    monkeypatch.setattr(sctgm.writing, "atomic_path", read_only)
    net = inference.load_network(model, "cpu", engine="onnxruntime", cache_dir=tmp_path)
    assert "damaged or altered" in caplog.text
    assert net.runner.run(np.zeros((1, 1, 32, 32), np.float32)).shape == (1, 1, 32, 32)
    assert cached.read_bytes() == b"garbage"  # left as it was: the folder could not be written


def test_the_default_cpu_path_never_imports_torch(shared_data, tmp_path):
    """torch takes seconds to import; on a CPU the segmentation must not need it."""
    code = ("import sys, sctgm; "
            f"sctgm.segment_file({str(shared_data / 'sct_testing_data/t2s/t2s.nii.gz')!r}, "
            f"{str(tmp_path / 'gm.nii.gz')!r}, model='challenge'); "  # device 'auto', as the CLI's default
            "print('torch' in sys.modules, 'onnx' in sys.modules)")
    # no GPU visible, whatever this machine has: the decision must then be made without torch
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env).stdout
    assert (tmp_path / "gm.nii.gz").is_file()
    assert out.split()[0] == "False"
    # a second run finds the cached graph and needs neither torch nor onnx
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env).stdout
    assert out.split() == ["False", "False"]


@pytest.mark.parametrize("model", ["challenge", "large"])
def test_onnxruntime_gives_the_same_bits_with_any_thread_count_and_batch_size(shared_models, model):
    """What lets a batch give every worker the cores it has and still match a sequential run."""
    x = np.ascontiguousarray(_reference_grid_input("t2s")[0].transpose(2, 0, 1), dtype=np.float32)
    model_rec = ensure_model(model)
    base = inference.predict(inference.load_network(model_rec, "cpu", engine="onnxruntime", threads=1), x,
                             batch_size=1)
    assert (base > 0.999).sum() > 100
    for threads, batch in ((2, 1), (2, 4), (3, 9)):
        net = inference.load_network(model_rec, "cpu", engine="onnxruntime", threads=threads)
        np.testing.assert_array_equal(inference.predict(net, x, batch_size=batch), base)


def test_batch_threads_policy(monkeypatch):
    from sctgm.batch.executors import job_threads
    from sctgm.batch.jobs import BatchSettings

    monkeypatch.setattr("sctgm.engines.choice.cuda_may_exist", lambda: False)
    monkeypatch.setattr("sctgm.batch.executors.common.available_cores", lambda: 8)
    ort = BatchSettings(device="cpu")
    assert job_threads(ort) is None and job_threads(ort, 1) is None  # one worker: all cores
    assert job_threads(ort, 3) == 2 and job_threads(ort, 16) == 1  # shared among local workers
    assert job_threads(ort, worker_threads=4) == 4  # a Dask worker's own threads
    assert job_threads(BatchSettings(device="cpu", threads=3), 2) == 3  # --threads wins
    # torch's CPU sums depend on the thread count: one thread everywhere, for identical bytes
    assert job_threads(BatchSettings(device="cpu", engine="torch"), 1, worker_threads=4) == 1


@pytest.mark.parametrize("kwargs,message", [
    ({"batch_size": 0}, "at least 1 slice"), ({"batch_size": -1}, "at least 1 slice"),
    ({"threshold": 1.0}, "strictly between 0 and 1"), ({"threshold": 0.0}, "strictly between 0 and 1"),
    ({"crop_px": 4}, "at least 16"),
])
def test_impossible_options_are_refused_by_the_library_too(kwargs, message):
    from sctgm.segment.pipeline import SegmentOptions

    with pytest.raises(InvalidOptionError, match=message) as info:  # a specific class, not the base
        SegmentOptions(**kwargs)
    assert info.value.parameter == next(iter(kwargs)) and info.value.exit_code == 2


def test_the_torch_engine_gives_the_process_its_thread_count_back(shared_models):
    import torch

    sd, filters = state_dict_from_keras(shared_models / "challenge_model.hdf5")
    before = torch.get_num_threads()
    TorchNetwork(DilatedGMNet(filters), sd, "cpu", threads=1).run(np.zeros((1, 1, 32, 32), np.float32))
    assert torch.get_num_threads() == before
