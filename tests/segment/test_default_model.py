"""The default model (issue 20) and the models scripts pin: `-m large` and `-m large-robust` keep
giving exactly the masks they gave before the default changed."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

import sctgm

from sctgm.io import load_image
from sctgm.segment.pipeline import Segmenter

from ..conftest import LABELLED, MODELS_DIR

#: sha256 of the uint8 GM mask with the default options, recorded with main at 1b443c3 (before
#: issue 20): scripts that pin a model must get these bytes.
PINNED = {
    ("large", "t2s"): "cb259f063ddfefdf3ca0a767ccae332fc38b88dfa178e977495bc1de3bce0055",
    ("large", "mt1"): "2aa9cd5fdf2c22f665e038ef07f64df70386ce5edeee9368774d388f49c45bbd",
    ("large-robust", "t2s"): "e71505929b5eeffcdb44a3ef3a057f9b5905c97e34a893c4ba5bc1b65e0511af",
    ("large-robust", "mt1"): "21636807319ea88f0b5705669dbdc684439a27888092559d10bd8905006ba953",
}


@pytest.mark.slow
@pytest.mark.parametrize("model", ["large", "large-robust"])
def test_pinned_models_give_exactly_the_masks_they_gave_before(model: str) -> None:
    if not MODELS_DIR.exists():
        pytest.skip(f"{MODELS_DIR} is absent")
    seg = Segmenter.from_name(model, device="cpu", mirror=str(MODELS_DIR))
    assert seg.partner is None
    for case in ("t2s", "mt1"):
        gm = seg.segment_image(load_image(LABELLED[case][0])).gm
        assert hashlib.sha256(gm.astype("uint8").tobytes()).hexdigest() == PINNED[(model, case)], (model, case)


def test_the_default_is_the_combination_and_its_recipe_names_both_networks() -> None:
    from sctgm.model.registry import load_registry
    from sctgm.recipe import Combination, Recipe

    reg = load_registry()
    assert reg["default"] == "large-ensemble"
    entry = reg["models"]["large-ensemble"]
    recipe = Recipe.from_entry(entry, "large-ensemble")
    assert recipe.combine == Combination("large-robust", 0.8, True)
    assert Recipe.from_entry(recipe.to_entry(), "x") == recipe  # the record round-trips
    # its first network is large itself: same files, same network, same preprocessing but for the
    # rule back to the native grid (the footprint area: docs/robustness.md), which `large` keeps linear
    large = reg["models"]["large"]
    assert entry["files"] == large["files"] and entry["architecture"] == large["architecture"]
    assert entry["preprocessing"] == {**large["preprocessing"], "to_native": "area"}
    assert recipe.preprocessing.to_native == "area"
    assert Recipe.from_entry(large, "large").preprocessing.to_native == "linear"
    assert Recipe.from_entry(reg["models"]["large-robust"], "large-robust").preprocessing.to_native == "linear"
    assert Recipe.from_entry(large, "large").combine is None
    # so a sidecar names its first network `large`, the network it runs, not the combination
    from sctgm.model.registry import InstalledModel, network_record
    first = InstalledModel("large-ensemble", "v", Path("w"), "safetensors", large["files"][0]["sha256"], recipe)
    assert network_record(first) == ("large", large["version"]) and large["version"] != entry["version"]
    assert network_record(InstalledModel("large", "v", Path("w"), "safetensors", "x",
                                         Recipe.from_entry(large, "large"))) == ("large", "v")
    assert network_record(InstalledModel("large-ensemble", "v", Path("w"), "safetensors", "0" * 64, recipe)) \
        == ("large-ensemble", "v")  # weights of no registered single network: its own
    card = Path(sctgm.__file__).parent / "model" / "cards" / "large-ensemble.md"
    text = card.read_text()
    assert "`large`" in text and "`large-robust`" in text and "docs/robustness.md" in text
    assert "large-ensemble" in entry["description"] and "cards/large-ensemble.md" in entry["description"]


@pytest.mark.parametrize("block, message", [
    ({"disagree_dice": 0.8}, "'with'"),
    ({"with": "large-robust", "disagree_dice": 1.5}, "disagree_dice"),
    ({"with": "large-robust", "gurad": True}, "'combine'"),
    ({"with": "large robust"}, "registered model name"),
])
def test_a_bad_combine_block_is_refused_naming_the_model(block: dict, message: str) -> None:
    from sctgm.exceptions import ModelError
    from sctgm.model.registry import load_registry
    from sctgm.recipe import Recipe

    entry = {**load_registry()["models"]["large"], "combine": block}
    with pytest.raises(ModelError, match=message) as err:
        Recipe.from_entry(entry, "mine")
    assert "mine" in str(err.value)


def test_a_combination_of_a_combination_is_refused(tiny_model) -> None:
    from sctgm.exceptions import ModelError

    tiny_model("tiny-a")
    tiny_model("tiny-b")
    import json
    import os

    path = Path(os.environ["SCTGM_REGISTRY"])
    reg = json.loads(path.read_text())
    reg["models"]["tiny-b"]["combine"] = {"with": "tiny-a"}
    reg["models"]["tiny-c"] = {**reg["models"]["tiny-a"], "combine": {"with": "tiny-b"}}
    path.write_text(json.dumps(reg))
    seg = Segmenter.from_name("tiny-b", device="cpu")
    assert seg.partner is not None and seg.identity.name == "tiny-b"
    with pytest.raises(ModelError, match="itself combines"):
        Segmenter.from_name("tiny-c", device="cpu")


def test_a_bare_weight_file_is_one_network_even_though_the_default_combines(tiny_weights) -> None:
    from sctgm.model.install import ensure_model

    model = ensure_model(str(tiny_weights))
    assert model.recipe.combine is None
    # nor the combination's rule back to the native grid: `large`'s weights in a file give `large`'s masks
    assert model.recipe.preprocessing.to_native == "linear"
    from sctgm.model.registry import load_registry
    from sctgm.recipe import Recipe

    reg = load_registry()
    default = Recipe.from_entry(reg["models"][reg["default"]], reg["default"])
    assert default.preprocessing.to_native == "area"
    assert default.one_network().preprocessing == Recipe.from_entry(reg["models"]["large"], "large").preprocessing
    single_area = Recipe.from_entry({**reg["models"]["large"], "preprocessing": {"to_native": "area"}}, "mine")
    assert single_area.one_network() == single_area  # a single network's own rule is kept (train --init mine)


def test_to_native_is_written_only_where_it_is_not_linear_and_an_unknown_rule_is_refused() -> None:
    """Entries of sct-gm before the rule (and every single published model) read as 'linear', and a
    'linear' record writes no key, so older readers still read the models sct-gm trains."""
    from sctgm.exceptions import ModelError
    from sctgm.recipe import Preprocessing

    assert Preprocessing.from_entry({}).to_native == "linear"
    assert "to_native" not in Preprocessing().to_entry()
    area = Preprocessing.from_entry({"to_native": "area"})
    assert area.to_entry()["to_native"] == "area" and Preprocessing.from_entry(area.to_entry()) == area
    with pytest.raises(ModelError, match="to_native = 'nearest'.*mine|mine.*to_native = 'nearest'"):
        Preprocessing.from_entry({"to_native": "nearest"}, "mine")


def test_a_partner_may_differ_from_the_combination_only_in_the_rule_back_to_the_native_grid(tiny_model) -> None:
    """The combination's rule applies to both networks' masks, so a partner whose own rule is linear is
    accepted; one that expects another threshold (or grid) is still refused."""
    import json
    import os

    from sctgm.exceptions import ModelError

    tiny_model("tiny-a")
    tiny_model("tiny-b")
    path = Path(os.environ["SCTGM_REGISTRY"])
    reg = json.loads(path.read_text())
    reg["models"]["tiny-b"]["combine"] = {"with": "tiny-a"}
    reg["models"]["tiny-b"]["preprocessing"] = {**reg["models"]["tiny-b"].get("preprocessing", {}), "to_native": "area"}
    path.write_text(json.dumps(reg))
    seg = Segmenter.from_name("tiny-b", device="cpu")
    assert seg.partner is not None and seg.model.preprocessing.to_native == "area"
    identity_area = seg.identity.sha256
    reg["models"]["tiny-b"]["preprocessing"]["to_native"] = "linear"
    path.write_text(json.dumps(reg))
    assert Segmenter.from_name("tiny-b", device="cpu").identity.sha256 != identity_area  # outputs are redone
    reg["models"]["tiny-b"]["preprocessing"] = {**reg["models"]["tiny-b"]["preprocessing"], "threshold": 0.3}
    path.write_text(json.dumps(reg))
    with pytest.raises(ModelError, match="preprocessing"):
        Segmenter.from_name("tiny-b", device="cpu")
