"""Networks and initial weights for training."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from sctgm.exceptions import ModelError, SctGmError
from sctgm.training.models import build_model, model_from_weights, read_state_dict
from sctgm.model.weights import save_safetensors


def test_unknown_architecture_is_refused() -> None:
    with pytest.raises(SctGmError, match="unknown"):
        build_model("resnet", 8)


def test_unet_weights_round_trip_through_safetensors(tmp_path: Path) -> None:
    torch.manual_seed(0)
    net = build_model("unet", 4, depth=2)
    sd = {k: v.numpy() for k, v in net.state_dict().items() if not k.endswith("num_batches_tracked")}
    save_safetensors(sd, 4, tmp_path / "m.safetensors")
    again, arch = model_from_weights(tmp_path / "m.safetensors")
    assert arch == {"name": "unet", "filters": 4, "depth": 2} and again.depth == 2 and again.filters == 4
    assert all(torch.equal(again.state_dict()[k], torch.from_numpy(v)) for k, v in sd.items())


def test_weights_of_another_network_are_refused(tmp_path: Path) -> None:
    sd = {k: v.numpy() for k, v in build_model("dilated", 4).state_dict().items()
          if not k.endswith("num_batches_tracked")}
    del sd["predictions.weight"]
    save_safetensors(sd, 4, tmp_path / "m.safetensors")
    with pytest.raises(ModelError, match="missing"):
        model_from_weights(tmp_path / "m.safetensors")


def test_published_weights_load_for_fine_tuning(shared_models: Path) -> None:
    model, arch = model_from_weights(shared_models / "challenge_model.hdf5")
    sd, found = read_state_dict(shared_models / "challenge_model.hdf5")
    assert arch == found == {"name": "perone2018-dilated", "filters": 32}
    assert np.array_equal(model.state_dict()["conv2d_1.conv.weight"].numpy(), sd["conv2d_1.conv.weight"])
