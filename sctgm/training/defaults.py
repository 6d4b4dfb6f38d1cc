"""The defaults of ``sct-gm train``, one constant each, with the measurement behind them
(docs/train.md, "Defaults"). Change a default here and nowhere else.

Measured with ``bench/finetune.py``-style slice-block cross-validation on t2s_uncropped (fit on
slices 0-4, test on 5-10 and the reverse; Dice through the real segmentation, last model scored):
fine-tuning ``challenge`` with BatchNorm frozen lost 0.26 Dice on one fold (0.874 -> 0.614) while
BatchNorm in train mode stayed within -0.012/+0.009 on both folds, so BatchNorm trains; lr 3e-4 tied
1e-4; held-out Dice stopped improving after 20-30 steps and a ``challenge`` step takes ~4.5 s on two
quiet cores, so 100 steps (~7.5 min) rather than 200 (~15 min, over the 10-minute budget). ``large``
is ~3.4x slower a step and does not fit the budget, hence ``challenge``.
"""

from __future__ import annotations

#: The model fine-tuned when --init is not given.
DEFAULT_INIT = "challenge"
#: Network trained from scratch (--init none); its sizes are the network module's DEFAULTS
#: (sctgm/networks/dilated.py: 32 filters; unet.py: 16 filters, depth 3).
DEFAULT_ARCH = "dilated"
#: Optimisation.
DEFAULT_MAX_STEPS = 100
DEFAULT_BATCH_SIZE = 4
DEFAULT_LR = 1e-4
DEFAULT_LR_SCRATCH = 1e-3  # --init none: random weights learn faster at a higher rate
DEFAULT_WARMUP_STEPS = 10
#: Warm-up is at most this share of the run (100 steps: 10; --max-steps 10: 1), so a short run leaves
#: warm-up and decays like a long one instead of ending at a fraction of its learning rate.
WARMUP_FRACTION = 0.1


def warmup_steps(max_steps: int) -> int:
    """Linear warm-up steps of a run of ``max_steps``: DEFAULT_WARMUP_STEPS, at most WARMUP_FRACTION of it."""
    return min(DEFAULT_WARMUP_STEPS, int(WARMUP_FRACTION * max_steps))
#: BatchNorm when fine-tuning: "frozen" (published statistics kept) or "train".
DEFAULT_BN_FINETUNE = "train"
#: Validation: share of subjects held out, validations per run, patience (validations without
#: improvement before stopping early).
DEFAULT_VAL_FRACTION = 0.2
VALIDATIONS_PER_RUN = 10


def validation_interval(max_steps: int) -> int:
    """Steps between validations (and between progress lines of a run without validation)."""
    return max(1, max_steps // VALIDATIONS_PER_RUN)
DEFAULT_PATIENCE = 5
#: Checkpoint every this many validations.
CHECKPOINT_EVERY_VALIDATIONS = 1
