"""Dependencies by use: without torch (``pip install sctgm``) a CPU segmentation runs, and what needs
torch (``sct-gm train``, ``--engine torch``) says so in one line with exit code 2 and the extra to
install. torch is hidden from the process here (``sys.modules["torch"] = None`` makes every
``import torch`` fail, as on a machine without it)."""

from __future__ import annotations

import sys

import pytest

from sctgm.exceptions import MissingExtraError

from .conftest import cord_phantom_volume
from .model.test_model_safety import one_line as _one_line
from .model.test_model_safety import run as _run


@pytest.fixture
def no_torch(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "torch", None)


def test_cpu_segmentation_needs_no_torch(no_torch, tiny_model, make_nifti, tmp_path) -> None:
    image = make_nifti(cord_phantom_volume(), zooms_mm=(0.5, 0.5, 5.0))
    res = _run("segment", "-i", str(image), "-m", tiny_model(), "-o", str(tmp_path / "gm.nii.gz"), "-q")
    assert res.exit_code == 0, res.stderr
    assert (tmp_path / "gm.nii.gz").is_file() and sys.modules["torch"] is None  # nothing got torch in


def test_the_torch_engine_without_torch_is_one_line(no_torch, tiny_model, make_nifti, tmp_path) -> None:
    image = make_nifti(cord_phantom_volume(), zooms_mm=(0.5, 0.5, 5.0))
    _one_line(_run("segment", "-i", str(image), "-m", tiny_model(), "--engine", "torch", "-o",
                   str(tmp_path / "gm.nii.gz")), 2, "PyTorch", "pip install 'sctgm[torch]'")
    assert not (tmp_path / "gm.nii.gz").exists()


def test_training_without_torch_is_one_line(no_torch, make_nifti, tmp_path) -> None:
    image = make_nifti(cord_phantom_volume(), zooms_mm=(0.5, 0.5, 5.0))
    _one_line(_run("train", "-i", str(image), "-r", str(image), "-o", str(tmp_path / "m")), 2,
              "sct-gm train", "pip install 'sctgm[torch]'")
    assert not (tmp_path / "m").exists()


def test_the_library_says_it_too(no_torch, tmp_path) -> None:
    import sctgm

    with pytest.raises(MissingExtraError, match=r"sctgm\[torch\]") as err:
        sctgm.train(sctgm.TrainSources(["a.nii.gz"], ["b.nii.gz"]), tmp_path / "m")
    assert err.value.exit_code == 2
