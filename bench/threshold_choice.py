"""How `sct-gm train` should choose its stored threshold on the validation slices (docs/train.md,
"Threshold"): each rule picks a threshold on a validation set V and is scored on held-out slices T
(pooled Dice at the chosen threshold), with the same windows and the same threshold grid as
training validation (sctgm.training.loop.DEFAULT_THRESHOLDS).

Validation sets: by subject (V = one labelled volume, T = the other five) and by contiguous blocks
of k slices within a volume (V = the block, T = the volume's other slices), never interleaved
neighbours. Models: the published `challenge` and `large`, and `large-robust` (a model sct-gm
fine-tuned), on the six labelled volumes of ../shared (t2s_uncropped, mt1, the four GM-challenge
volumes). Prints Markdown tables: mean held-out Dice, mean regret (the best threshold on T minus
the chosen one's Dice), and how much the choice jumps between validation sets (SD of its index in
the grid, number of distinct thresholds).

    OMP_NUM_THREADS=1 nice -n 10 python bench/threshold_choice.py
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from cases import LABELLED, MODELS_DIR, SHARED  # noqa: E402

GM_CHALLENGE = SHARED / "data" / "gm_challenge_2018"


def _items():
    from sctgm.training import sources

    pairs = [LABELLED[c][:2] for c in ("t2s_uncropped", "mt1")]
    return (sources.from_pairs([p[0] for p in pairs], [p[1] for p in pairs])
            + sources.from_bids(GM_CHALLENGE, suffixes=None))


def _probabilities(model_name: str, items) -> tuple[list[tuple[str, list[np.ndarray], list[np.ndarray]]], float]:
    """Per volume: (subject, probabilities, targets) of its validation windows; the model's threshold."""
    from sctgm.engines.choice import load_network, predict
    from sctgm.model.install import ensure_model
    from sctgm.training.data import read_labelled

    installed = ensure_model(model_name, mirror=str(MODELS_DIR))
    net = load_network(installed, "cpu", engine="onnxruntime", threads=int(os.environ.get("OMP_NUM_THREADS", "1")))
    out = []
    for it in items:  # the windows training validates on, predicted as segment does (ONNX Runtime: faster)
        v = read_labelled(it, installed.preprocessing)
        probs = predict(net, np.asarray(v.inputs, dtype=np.float32))
        out.append((v.subject, list(probs), [np.asarray(t) for t in v.targets]))
    return out, installed.preprocessing.threshold


def _scores(probs, targets, thresholds) -> dict[float, float]:
    from sctgm.training.loop import validation_dice

    return validation_dice(probs, targets, thresholds)


def _per_slice(probs, targets, thresholds) -> dict[float, float]:
    from sctgm.training.loop import pooled_dice

    return {th: float(np.mean([pooled_dice(p > th, t) for p, t in zip(probs, targets)])) for th in thresholds}


def _rules(default: float) -> dict[str, Callable]:
    from sctgm.training.loop import choose_threshold

    def argmax(near: float):
        return lambda sc, n, p, t, ths: max(sc, key=lambda th: (sc[th], -abs(th - near)))

    rules = {
        "argmax, ties nearest 0.5 (before)": argmax(0.5),
        "argmax, ties nearest the init's": argmax(default),
        "per-slice mean Dice, argmax": lambda sc, n, p, t, ths: (lambda s: max(s, key=lambda th: (s[th], -abs(th - default))))(
            _per_slice(p, t, ths)),
        "smoothed over 3": lambda sc, n, p, t, ths: choose_threshold(sc, n, default, min_voxels=0, smooth=3),
        "smoothed over 5": lambda sc, n, p, t, ths: choose_threshold(sc, n, default, min_voxels=0, smooth=5),
    }
    for m in (500, 1000, 2000, 4000):
        rules[f"smoothed over 3, >= {m} GM voxels"] = (
            lambda m: lambda sc, n, p, t, ths: choose_threshold(sc, n, default, min_voxels=m, smooth=3))(m)
    for m in (1000, 2000, 4000):
        rules[f"argmax (ties nearest the init's), >= {m} GM voxels"] = (
            lambda m: lambda sc, n, p, t, ths: choose_threshold(sc, n, default, min_voxels=m, smooth=1))(m)
    rules["the init's threshold, always"] = lambda sc, n, p, t, ths: default
    return rules


def _folds(volumes, scheme: str):
    """(validation probs, targets), (test probs, targets) pairs."""
    if scheme == "subject":
        for i, (_, p, t) in enumerate(volumes):
            rest = [(q, u) for j, (_, pp, tt) in enumerate(volumes) if j != i for q, u in zip(pp, tt)]
            yield (p, t), ([q for q, _ in rest], [u for _, u in rest])
        return
    k = int(scheme.split()[1])
    for _, p, t in volumes:
        for s in range(0, len(p) - k + 1, k):
            val = range(s, s + k)
            test = [j for j in range(len(p)) if j not in val]
            if test:
                yield ([p[j] for j in val], [t[j] for j in val]), ([p[j] for j in test], [t[j] for j in test])


def main() -> None:
    from sctgm.training.loop import DEFAULT_THRESHOLDS

    ths = DEFAULT_THRESHOLDS
    items = _items()
    schemes = ("subject", "block 2", "block 4")
    table: dict[str, dict[str, list]] = {}
    for model in ("challenge", "large", "large-robust"):
        volumes, default = _probabilities(model, items)
        print(f"{model}: {len(volumes)} volumes, {sum(len(p) for _, p, _ in volumes)} slices, "
              f"GM voxels per slice (fine grid) {np.mean([float((t >= 0.5).sum()) for _, _, tt in volumes for t in tt]):.0f}",
              file=sys.stderr, flush=True)
        rules = _rules(default)
        for scheme in schemes:
            for (vp, vt), (tp, tt) in _folds(volumes, scheme):
                sc = _scores(vp, vt, ths)
                test = _scores(tp, tt, ths)
                n = int(sum(int((t >= 0.5).sum()) for t in vt))
                for name, rule in rules.items():
                    th = rule(sc, n, vp, vt, ths)
                    row = table.setdefault(name, {}).setdefault(scheme, [])
                    row.append((test[th], max(test.values()) - test[th], ths.index(th), model))
    for scheme in schemes:
        print(f"\n{scheme} validation ({len(table['the init' + chr(39) + 's threshold, always'][scheme])} "
              f"validation sets over 3 models)\n")
        print("| rule | held-out Dice | regret | SD of the choice (grid steps) | distinct thresholds per model |")
        print("|---|---|---|---|---|")
        for name, by_scheme in table.items():
            rows = by_scheme[scheme]
            sd = np.mean([np.std([r[2] for r in rows if r[3] == m]) for m in ("challenge", "large", "large-robust")])
            distinct = "/".join(str(len({r[2] for r in rows if r[3] == m})) for m in ("challenge", "large", "large-robust"))
            print(f"| {name} | {np.mean([r[0] for r in rows]):.4f} | {np.mean([r[1] for r in rows]):.4f} | "
                  f"{sd:.2f} | {distinct} |")


if __name__ == "__main__":
    main()
