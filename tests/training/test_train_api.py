"""sctgm.train on phantom NIfTI files (random orientations): the issue's must-holds at the product
level. One small U-Net is trained once per module and reused."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import sctgm
from sctgm.io import load_image
from sctgm.training.phantom import write_phantom_nifti

from ..conftest import interrupt_training_at

AXCODES = ("LAS", "RPI", "PIR", "SLA", "ASR")


def train_on(images, masks, *, output, resume=False, **options):
    """sctgm.train on image/mask pairs with these options (TrainOptions fields)."""
    return sctgm.train(sctgm.TrainSources(images, masks), output, sctgm.TrainOptions(**options), resume=resume)


def phantom_pairs(folder: Path, n: int = 4, seed: int = 0, shape: tuple[int, int, int] = (48, 48, 6)):
    rng = np.random.default_rng(seed)
    pairs = [write_phantom_nifti(folder, rng, name=f"sub-{i + 1:02d}_T2star", axcodes=AXCODES[i % len(AXCODES)],
                                 shape=shape) for i in range(n)]
    return [str(a) for a, _ in pairs], [str(b) for _, b in pairs]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    folder = tmp_path_factory.mktemp("train")
    images, masks = phantom_pairs(folder / "data")
    result = train_on(images, masks, output=folder / "model", init="none", arch="unet", filters=8,
                         max_steps=60, val=["sub-03"], seed=0, device="cpu", threads=1)
    return result, images, masks


def test_training_from_random_weights_reaches_dice_090(trained):
    result, _, _ = trained
    assert result.val_dice is not None and result.val_dice >= 0.9  # window Dice at the stored threshold
    assert result.validation and result.validation[0]["subject"] == "sub-03"
    assert result.validation[0]["dice"] >= 0.85  # the model used as segment uses it, native grid
    assert result.split == "subjects sub-03"


def test_model_dir_holds_the_documented_files(trained):
    result, images, _ = trained
    names = sorted(p.name for p in result.model_dir.iterdir())
    assert names == ["curves.png", "model.json", "model.safetensors", "training_log.csv", "validation.csv"]
    assert not list(result.model_dir.parent.glob(".model.partial*"))
    doc = json.loads(result.model_json.read_text())
    (name, entry), = doc["models"].items()
    assert name == "model" and entry["architecture"] == {"name": "unet", "filters": 8, "depth": 3}
    assert entry["preprocessing"]["threshold"] == result.threshold
    assert entry["files"][0]["sha256"] == sctgm.training.data.sha256_of(result.weights)
    t = entry["training"]
    assert [d["image"] for d in t["data"]] == images and all(len(d["image_sha256"]) == 64 for d in t["data"])
    assert t["seed"] == 0 and t["init"]["name"] == "none" and t["sctgm_version"] == sctgm.__version__
    log = (result.model_dir / "training_log.csv").read_text().splitlines()
    assert log[0] == "step,loss,val_dice,lr,seconds" and len(log) == 62  # step 0 (the init) + 60 steps
    assert log[1].startswith("0,,") and log[1].split(",")[2] != ""
    header = (result.model_dir / "validation.csv").read_text().splitlines()[0].split(",")
    assert header[2:12] == ["dice", "jaccard", "conformity", "sensitivity", "specificity", "precision",
                            "mean_surface_distance_mm", "hausdorff_mm", "skeleton_hausdorff_mm", "skeleton_median_mm"]
    assert (result.model_dir / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_segment_uses_the_trained_model_on_both_engines_identically(trained):
    from sctgm.segment.pipeline import Segmenter
    from sctgm.model.install import ensure_model

    result, images, masks = trained
    model = ensure_model(str(result.model_dir))
    assert model.architecture["name"] == "unet" and model.preprocessing.threshold == result.threshold
    image = load_image(images[2])
    a = Segmenter(model, device="cpu", engine="onnxruntime").segment_image(image).gm
    b = Segmenter(ensure_model(str(result.model_json)), device="cpu", engine="torch").segment_image(image).gm
    assert np.array_equal(a, b)
    ref = load_image(masks[2], allow_constant=True).data > 0.5
    assert 2 * (a.astype(bool) & ref).sum() / (a.sum() + ref.sum()) >= 0.85


def test_registry_and_fetch_model_accept_model_json(trained, monkeypatch, tmp_path):
    from sctgm.model.install import ensure_model, install_model_file

    result, _, _ = trained
    monkeypatch.setenv("SCTGM_REGISTRY", str(result.model_json))
    monkeypatch.delenv("SCTGM_MIRROR", raising=False)
    installed = ensure_model("model", cache_dir=tmp_path / "cache")  # a registry entry like any other
    assert installed.weights_path.read_bytes() == result.weights.read_bytes()
    assert installed.weights_path.parent.parent == tmp_path / "cache" / "models" / "model"
    monkeypatch.delenv("SCTGM_REGISTRY")
    again = install_model_file(result.model_dir, cache_dir=tmp_path / "cache2")
    assert again.sha256 == installed.sha256


def test_a_model_with_weights_of_the_same_size_is_not_sought_in_anothers_install(trained, tmp_path, caplog):
    """A fine-tuned model's weights have its init's name and size: the cache's install of the other
    model is not tried as a source (it was, and warned of a sha256 mismatch at every install)."""
    import hashlib
    import logging
    import shutil

    from sctgm.model.install import install_model_file

    result, _, _ = trained
    install_model_file(result.model_dir, cache_dir=tmp_path / "cache")
    other = shutil.copytree(result.model_dir, tmp_path / "other")
    weights = bytearray((other / "model.safetensors").read_bytes())
    weights[-1] ^= 1  # the last float's lowest bit: the same size, other bytes
    (other / "model.safetensors").write_bytes(bytes(weights))
    doc = json.loads((other / "model.json").read_text())
    entry = doc["models"].pop("model")
    entry["files"][0]["sha256"] = hashlib.sha256(bytes(weights)).hexdigest()
    doc["models"]["other"] = entry
    (other / "model.json").write_text(json.dumps(doc))
    with caplog.at_level(logging.WARNING, logger="sctgm"):
        installed = install_model_file(other, cache_dir=tmp_path / "cache")
    assert installed.weights_path.read_bytes() == bytes(weights)
    assert not [r for r in caplog.records if "failed" in r.getMessage()], caplog.text


def test_an_altered_model_folder_is_refused(trained, tmp_path):
    import shutil

    from sctgm.exceptions import ModelIntegrityError
    from sctgm.model.install import ensure_model

    result, _, _ = trained
    copy = shutil.copytree(result.model_dir, tmp_path / "copy")
    with open(copy / "model.safetensors", "ab") as f:
        f.write(b"x")
    with pytest.raises(ModelIntegrityError, match="model.safetensors"):
        ensure_model(str(copy))


class _weights:
    """A model folder's weights, compared array by array (safetensors orders its metadata freely, so
    the bytes of equal weights may differ)."""

    def __init__(self, folder: Path) -> None:
        from sctgm.model.weights import load_safetensors

        self.sd = load_safetensors(folder / "model.safetensors")[0]

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _weights) and self.sd.keys() == other.sd.keys() and all(
            np.array_equal(v, other.sd[k]) for k, v in self.sd.items())


def test_fine_tuning_is_deterministic_under_seed(trained, tmp_path):
    result, images, masks = trained
    kw = dict(init=str(result.model_dir), max_steps=4, val_fraction=0.0, device="cpu", threads=1)
    a = train_on(images[:2], masks[:2], output=tmp_path / "a", seed=3, **kw)
    b = train_on(images[:2], masks[:2], output=tmp_path / "b", seed=3, **kw)
    c = train_on(images[:2], masks[:2], output=tmp_path / "c", seed=4, **kw)
    assert _weights(a.model_dir) == _weights(b.model_dir) != _weights(c.model_dir)
    assert _weights(a.model_dir) != _weights(result.model_dir)  # it did train
    init = json.loads(a.model_json.read_text())["models"]["a"]["training"]["init"]
    assert init["sha256"] == sctgm.training.data.sha256_of(result.weights)


def test_an_interrupted_run_resumes_to_the_uninterrupted_weights(tmp_path, monkeypatch):
    import sctgm.training.loop as loop

    images, masks = phantom_pairs(tmp_path / "data", n=3, shape=(32, 32, 4))
    kw = dict(init="none", arch="unet", filters=4, max_steps=10, seed=1, device="cpu", threads=1)
    full = train_on(images, masks, output=tmp_path / "full", **kw)
    save = interrupt_training_at(monkeypatch, 5)
    with pytest.raises(KeyboardInterrupt):
        train_on(images, masks, output=tmp_path / "cut", **kw)
    assert not (tmp_path / "cut").exists() and (tmp_path / ".cut.partial" / "checkpoint.pt").is_file()
    monkeypatch.setattr(loop, "save_checkpoint", save)
    resumed = train_on(images, masks, output=tmp_path / "cut", resume=True, **kw)
    assert _weights(resumed.model_dir) == _weights(full.model_dir)
    assert resumed.threshold == full.threshold and not (tmp_path / ".cut.partial").exists()


def test_augment_takes_a_preset_name_and_refuses_others(tmp_path):
    from sctgm.exceptions import InvalidOptionError
    images, masks = phantom_pairs(tmp_path / "data", n=1, shape=(32, 32, 4))
    with pytest.raises(InvalidOptionError) as err:
        train_on(images, masks, output=tmp_path / "m", init="none", arch="unet", filters=4, augment="heavy",
                    max_steps=1, device="cpu", threads=1)
    assert err.value.parameter == "augment" and "robust" in str(err.value)
    assert not (tmp_path / "m").exists() and not list(tmp_path.glob(".m.partial*"))


def test_the_robust_recipe_validates_on_noisy_copies(tmp_path, monkeypatch):
    import sctgm.training.loop as loop
    seen = {}
    real = loop.train_loop

    def spy(model, train, val, cfg, **kw):
        seen["val"] = val
        return real(model, train, val, cfg, **kw)

    monkeypatch.setattr(loop, "train_loop", spy)
    images, masks = phantom_pairs(tmp_path / "data", n=2, shape=(32, 32, 4))
    train_on(images, masks, output=tmp_path / "m", init="none", arch="unet", filters=4, augment="robust",
                val=["sub-02"], max_steps=1, device="cpu", threads=1)
    clean, *noisy = seen["val"]
    assert [s.name for s in seen["val"]] == ["sub-02", "sub-02+noise0.15", "sub-02+noise0.35"]
    for s in noisy:
        assert all(np.array_equal(a, b) for a, b in zip(s.targets, clean.targets))
        assert all(not np.array_equal(a, b) for a, b in zip(s.images, clean.images))
