"""Shared fixtures: the ../shared data, an isolated HOME/cache, and a seeded NIfTI factory."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
MODELS_DIR = SHARED / "models" / "deepseg_gm"
DATA_DIR = SHARED / "data"
REFERENCE_DIR = SHARED / "reference" / "sct_deepseg_gm"

#: The three labelled cases: (name, image, manual GM mask, cord mask or None).
LABELLED = {
    "t2s_uncropped": (DATA_DIR / "sct_testing_data/t2s/t2s_uncropped.nii.gz",
                      DATA_DIR / "sct_testing_data/t2s/t2s_uncropped_gmseg_manual.nii.gz", None),
    "t2s": (DATA_DIR / "sct_testing_data/t2s/t2s.nii.gz",
            DATA_DIR / "sct_testing_data/t2s/t2s_gmseg_manual.nii.gz",
            DATA_DIR / "sct_testing_data/t2s/t2s_seg.nii.gz"),
    "mt1": (DATA_DIR / "sct_testing_data/mt/mt1.nii.gz",
            DATA_DIR / "sct_testing_data/mt/mt1_gmseg_goldstandard.nii.gz",
            DATA_DIR / "sct_testing_data/mt/mt1_seg.nii.gz"),
}


def _require(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"{path} is absent: the shared data folder (../shared beside the repo) is needed")
    return path


@pytest.fixture(scope="session")
def shared_models() -> Path:
    return _require(MODELS_DIR)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    return _require(DATA_DIR)


@pytest.fixture(scope="session")
def reference_dir() -> Path:
    return _require(REFERENCE_DIR)


@pytest.fixture
def server(shared_models: Path):
    """An HTTP server on 127.0.0.1 serving the published model files (see tests/serve.py)."""
    from .serve import ModelServer

    with ModelServer(shared_models) as s:
        yield s


@pytest.fixture(autouse=True)
def isolated_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No test reads or writes the real HOME or cache; the model mirror points at ../shared."""
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_CACHE_HOME", str(home / ".cache"))
    monkeypatch.delenv("SCTGM_HOME", raising=False)
    monkeypatch.setenv("SCTGM_MIRROR", str(MODELS_DIR))
    return home


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """3D Dice of two masks binarised at >= 0.5 (1.0 when both are empty)."""
    a, b = np.asarray(a) >= 0.5, np.asarray(b) >= 0.5
    s = a.sum() + b.sum()
    return 1.0 if s == 0 else float(2 * (a & b).sum() / s)


@pytest.fixture
def make_nifti(tmp_path: Path):
    """Factory: write a small NIfTI of chosen data, voxel size (mm, along the R, A, S world axes), nibabel
    axis codes of the array and dtype; returns its path."""
    counter = {"n": 0}

    def _make(data: np.ndarray | None = None, *, shape: tuple[int, ...] = (40, 40, 5),
              zooms_mm: tuple[float, ...] = (0.5, 0.5, 5.0), axcodes: str = "LAS",
              dtype: type = np.float32, name: str | None = None, seed: int = 0,
              slope: float | None = None, inter: float = 0.0) -> Path:
        if data is None:
            data = np.random.default_rng(seed).normal(100, 20, size=shape).astype(np.float32)
        affine = np.diag(list(zooms_mm[:3]) + [1.0])
        from nibabel import orientations as o
        t = o.ornt_transform(o.axcodes2ornt(("R", "A", "S")), o.axcodes2ornt(tuple(axcodes)))
        affine = affine @ o.inv_ornt_aff(t, data.shape[:3]) if tuple(axcodes) != ("R", "A", "S") else affine
        img = nib.Nifti1Image(np.asarray(data).astype(dtype), affine)
        img.set_qform(affine, code=1)
        img.set_sform(affine, code=1)
        if slope is not None:
            img.header.set_slope_inter(slope, inter)
        counter["n"] += 1
        path = tmp_path / (name or f"img{counter['n']}.nii.gz")
        nib.save(img, str(path))
        return path

    return _make


@pytest.fixture(autouse=True)
def restore_sctgm_logger():
    """CLI runs (CliRunner) install a stderr handler on the 'sctgm' logger and stop propagation;
    undo that after each test so caplog sees the library's records in later tests."""
    import logging

    logger = logging.getLogger("sctgm")
    handlers, level, propagate = list(logger.handlers), logger.level, logger.propagate
    yield
    logger.handlers[:] = handlers
    logger.setLevel(level)
    logger.propagate = propagate


# ------------------------------------------------------------------------------------ tiny model

def random_state_dict(filters: int = 4, seed: int = 0) -> dict[str, np.ndarray]:
    """Random weights for :class:`sctgm.networks.dilated.DilatedGMNet` (keys and shapes from the torch
    module), batch-norm statistics kept near identity so activations stay finite."""
    from sctgm.networks.dilated import DilatedGMNet

    rng = np.random.default_rng(seed)
    out = {}
    for key, tensor in DilatedGMNet(filters).state_dict().items():
        shape = tuple(tensor.shape)
        if key.endswith("running_var"):
            out[key] = rng.uniform(0.5, 1.5, shape)
        elif key.endswith("num_batches_tracked"):
            continue
        elif key.endswith("bn.weight") or key == "concat_bn.weight":
            out[key] = rng.uniform(0.5, 1.5, shape)
        else:
            out[key] = rng.normal(0, 0.3, shape)
    return {k: np.asarray(v, dtype=np.float32) for k, v in out.items()}


@pytest.fixture(scope="session")
def tiny_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random-weight 4-filter model as a safetensors file (made once per session)."""
    from sctgm.model.weights import save_safetensors

    folder = tmp_path_factory.mktemp("tiny_model")
    save_safetensors(random_state_dict(4), 4, folder / "tiny.safetensors")
    return folder / "tiny.safetensors"


@pytest.fixture
def tiny_model(tiny_weights: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Factory: register the tiny model (``SCTGM_REGISTRY``) under ``name`` with these preprocessing
    values (the rest default) and return its name. Installs from a local folder: no network, no
    ../shared, seconds."""
    from sctgm.model.install import sha256_of

    entries: dict[str, dict] = {}

    def _register(name: str = "tiny", **preprocessing: object) -> str:
        entries[name] = {
            "description": "random 4-filter test model", "version": "t1",
            "architecture": {"name": "perone2018-dilated", "filters": 4},
            "preprocessing": {"orientation": "LAS", "spacing_mm": 0.25, "crop_px": 200, "standardisation": "volume",
                              "threshold": 0.5, **preprocessing},
            "files": [{"name": tiny_weights.name, "role": "weights", "format": "safetensors",
                       "size": tiny_weights.stat().st_size, "sha256": sha256_of(tiny_weights)}],
            "sources": [{"kind": "files", "url": str(tiny_weights.parent)}],
        }
        path = tmp_path / "tiny_registry.json"
        path.write_text(json.dumps({"models": entries}))
        monkeypatch.setenv("SCTGM_REGISTRY", str(path))
        monkeypatch.delenv("SCTGM_MIRROR", raising=False)  # installed from its own folder
        return name

    return _register


@pytest.fixture
def tiny_segmenter(tiny_model):
    """A :class:`~sctgm.segment.pipeline.Segmenter` on the tiny model (ONNX Runtime, CPU)."""
    from sctgm.segment.pipeline import Segmenter

    return Segmenter.from_name(tiny_model(), device="cpu")


def cord_phantom_volume(shape: tuple[int, int, int] = (60, 56, 4), seed: int = 0) -> np.ndarray:
    """A bright disc (cord) with a darker butterfly-ish core (GM) in noise, the same on every slice."""
    rng = np.random.default_rng(seed)
    x, y = np.mgrid[: shape[0], : shape[1]]
    cx, cy = shape[0] / 2 + 3, shape[1] / 2 - 2
    r = np.hypot(x - cx, y - cy)
    sl = 100 + 60 * (r < 10) - 30 * (r < 4)
    return (sl[..., None] + rng.normal(0, 5, shape)).astype(np.float32)


def interrupt_training_at(monkeypatch: pytest.MonkeyPatch, step: int):
    """Make training raise KeyboardInterrupt right after writing its checkpoint at ``step`` (as a
    Ctrl-C would land); returns the real ``save_checkpoint`` to put back before resuming."""
    import sctgm.training.loop as loop

    save = loop.save_checkpoint

    def interrupt(path, state):
        save(path, state)
        if state["step"] == step:
            raise KeyboardInterrupt

    monkeypatch.setattr(loop, "save_checkpoint", interrupt)
    return save
