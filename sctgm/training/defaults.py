"""The defaults of ``sct-gm train``, one constant each, with the measurement behind them
(docs/train.md, "Defaults"). Change a default here and nowhere else.

Until the colleague's slice-block cross-validation (bench/finetune.py) fixes them, these follow the
issue's recipe: fine-tune the published ``challenge`` network (``large`` is ~3.3x slower a step on
the CPU, 30 s vs 9 s under load in docs/train.md, and does not fit 200 steps in 10 minutes on 2
cores), 200 steps of 4 crops, Dice + BCE, AdamW at 1e-4 with warm-up and cosine decay, BatchNorm
statistics frozen.
"""

from __future__ import annotations

#: The model fine-tuned when --init is not given.
DEFAULT_INIT = "challenge"
#: Architecture and width of a network trained from scratch (--init none).
DEFAULT_ARCH = "dilated"
DEFAULT_FILTERS = {"dilated": 32, "unet": 16}
DEFAULT_UNET_DEPTH = 3
#: Optimisation.
DEFAULT_MAX_STEPS = 200
DEFAULT_BATCH_SIZE = 4
DEFAULT_LR = 1e-4
DEFAULT_LR_SCRATCH = 1e-3  # --init none: random weights learn faster at a higher rate
DEFAULT_WARMUP_STEPS = 10
#: BatchNorm when fine-tuning: "frozen" (published statistics kept) or "train".
DEFAULT_BN_FINETUNE = "frozen"
#: Validation: share of subjects held out, validations per run, patience (validations without
#: improvement before stopping early).
DEFAULT_VAL_FRACTION = 0.2
VALIDATIONS_PER_RUN = 10
DEFAULT_PATIENCE = 5
#: Checkpoint every this many validations.
CHECKPOINT_EVERY_VALIDATIONS = 1
