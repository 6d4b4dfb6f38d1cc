"""``sctgm.train``: labelled images -> a model folder that ``segment -m`` uses (the library side of
``sct-gm train``; the CLI is a thin shell over :func:`train`).

The run works in a temporary folder beside MODEL_DIR (``.<name>.partial``), where its checkpoint is
replaced atomically every few steps; the outputs are written there and the folder is renamed to
MODEL_DIR at the very end, so MODEL_DIR is either absent or complete. Ctrl-C leaves the partial
folder with its last good checkpoint: the same command with ``resume=True`` (``--resume``)
continues it and, on a CPU with the same seed, ends with the weights of an uninterrupted run. One run
at a time per MODEL_DIR: the run holds a lock (``.<name>.lock`` beside it, :mod:`.run_lock`) from its
first look at the output to the final rename; another run on the same output is refused at once.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from .._version import __version__
from ..exceptions import InvalidOptionError, OutputError, SctGmError
from ..engines.hardware import require_torch
from ..model.registry import packaged_names
from ..writing import save_json
from .data import TRAIN_MARGIN_PX, LabelledImage, TrainingDataError, read_labelled, sha256_of, slice_set
from .defaults import (CHECKPOINT_EVERY_VALIDATIONS, DEFAULT_ARCH, DEFAULT_BN_FINETUNE, DEFAULT_LR,
                       DEFAULT_LR_SCRATCH, DEFAULT_MAX_STEPS, validation_interval, warmup_steps)
from .options import TrainOptions, TrainSources
from .run_lock import claimed
from . import outputs, sources

RUN_FILE = outputs.RUN_FILE


def _arch_key(network: dict[str, Any]) -> str:
    """The ``--arch`` name of a shipped network (what run.json and the description have always said),
    the registry name of any other."""
    from ..networks import network_named

    try:
        return network_named(str(network["name"])).train_name
    except SctGmError:
        return str(network["name"])


@dataclass(frozen=True)
class TrainOutcome:
    """What :func:`train` made: the model folder and how well the model did on validation."""

    model_dir: Path
    model_json: Path
    weights: Path
    threshold: float
    val_dice: float | None  # pooled window Dice at ``threshold`` (None without validation)
    init_val_dice: float | None  # the same for the init, before any step (None without validation)
    validation: list[dict[str, Any]]  # validation.csv's rows
    steps: int
    best_step: int
    stopped_early: bool
    seconds: float
    split: str


#: Signature keys (config keys below "config") -> the library argument that sets them.
_SIGNATURE_PARAMETERS = {"data": "images", "init": "init", "arch": "arch", "filters": "filters", "split": "val",
                         "device": "device", "threads": "threads", "max_steps": "max_steps",
                         "batch_size": "batch_size", "lr": "lr", "seed": "seed", "augment": "augment", "bn": "bn",
                         "patience": "patience"}


#: The order in which a resume's differences are named: a cause before what follows from it (another init
#: has other filters; another validation split puts other slices in the data's records).
_RESUME_ORDER = ("init", "arch", "filters", "data", "split", "device", "threads", "config")


def _without_split(data: Any) -> Any:
    """The data record without each image's training and validation slices (which the split decides)."""
    if not isinstance(data, list):
        return data
    return [{k: v for k, v in d.items() if k not in ("train_slices", "val_slices")} if isinstance(d, dict) else d
            for d in data]


def _check_resume(partial: Path, before: dict[str, Any], now: dict[str, Any], *,
                  split_parameter: str = "val_fraction") -> None:
    """Refuse to resume a run whose checkpoint was made with other data or options, naming the first
    argument that differs (``split_parameter``: the argument that set this run's validation split)."""
    now = json.loads(json.dumps(now))
    if before == now:
        return

    def differs(key: str) -> bool:
        if key == "data":
            return _without_split(before.get(key)) != _without_split(now.get(key))
        return before.get(key) != now.get(key)

    diffs = [k for k in _RESUME_ORDER if differs(k)] or [k for k in sorted(set(before) | set(now))
                                                         if before.get(k) != now.get(k)]
    values = (before, now)
    if diffs[:1] == ["config"]:
        old, new = before.get("config") or {}, now["config"]
        diffs = [k for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]
        values = (old, new)
    key = next((k for k in diffs if k in _SIGNATURE_PARAMETERS), diffs[0] if diffs else "?")
    parameter = split_parameter if key == "split" else _SIGNATURE_PARAMETERS.get(key)
    old, new = values[0].get(key), values[1].get(key)
    if key == "init" and isinstance(old, dict) and isinstance(new, dict) and old.get("name") != new.get("name"):
        what = f"init {old.get('name')!r}, this run has {new.get('name')!r}"
    elif key == "split":
        what = f"the validation split {old!r}, this run has {new!r}"
    elif key in ("data", "init", "augment") or not diffs:
        what = f"other {'training data' if key == 'data' else key}"
    else:
        what = f"{key} {old!r}, this run has {new!r}"
    raise TrainingDataError(f"{partial}: the interrupted run had {what}; resuming needs the same data and options "
                            f"(or overwrite it to start again)", parameter=parameter or "resume")


def _init_model(init: str, arch: str | None, filters: int | None, seed: int):  # -> (module, Recipe, dict)
    """The network to train, its recipe (network, preprocessing, ...) and what model.json records
    about the init."""
    import torch

    from ..recipe import Preprocessing, Recipe
    from .models import model_from_weights, network_of

    if arch is not None:
        try:
            network_of(arch)
        except InvalidOptionError as exc:
            raise TrainingDataError(str(exc), parameter="arch") from None
    if init == "none":
        network = network_of(arch or DEFAULT_ARCH)
        architecture = network.architecture(filters=filters)
        with torch.random.fork_rng(devices=[]):  # seeded initial weights, global RNG left as it was
            torch.manual_seed(seed)
            model = network.torch_module(architecture)
        return model, Recipe(architecture, Preprocessing(threshold=0.5)), {"name": "none", "sha256": None}
    from ..exceptions import UnknownModelError
    from ..model.install import ensure_model

    try:
        installed = ensure_model(init)
    except UnknownModelError as exc:
        raise UnknownModelError(f"init model {init!r}: {exc} (or none, to start from random weights)",
                                parameter="init") from None
    model, architecture = model_from_weights(installed.weights_path, installed.architecture)
    if arch is not None and network_of(arch).name != architecture["name"]:
        raise TrainingDataError(f"init model {init!r} is a {_arch_key(architecture)} network; architecture {arch!r} "
                                f"does not fit it (init 'none' trains a {arch} from scratch)", parameter="arch")
    if filters is not None and filters != architecture.get("filters"):
        raise TrainingDataError(f"init model {init!r} has {architecture.get('filters')} filters; {filters} filters "
                                f"do not fit it", parameter="filters")
    # a combination's first network is what is trained: the trained model is one network
    recipe = installed.recipe.one_network()
    return model, recipe, {"name": installed.name, "version": installed.version, "sha256": installed.sha256}


def _items(images: Sequence[Any], masks: Sequence[Any], bids: Any, suffixes: Sequence[str] | None,
           participants: Sequence[str], gmchallenge: Any) -> list[LabelledImage]:
    items: list[LabelledImage] = []
    if images or masks:
        items += sources.from_pairs(images, masks)
    if bids:
        items += sources.from_bids(bids, suffixes=suffixes, participants=participants)
    if gmchallenge:
        items += sources.from_gmchallenge(gmchallenge)
    if not items:
        raise TrainingDataError("no labelled data: give image and GM mask pairs, a BIDS dataset or a GM challenge "
                                "folder", parameter="images")
    return items


def _augment_config(augment: Any) -> Any:
    """An :class:`~sctgm.training.augment.AugmentConfig` from itself or a preset's name."""
    from .augment import PRESETS, AugmentConfig

    if isinstance(augment, AugmentConfig):
        return augment
    if isinstance(augment, str) and augment in PRESETS:
        return PRESETS[augment]
    raise InvalidOptionError(f"augmentation {augment!r}: expected one of {', '.join(PRESETS)} or an AugmentConfig",
                             parameter="augment")


def _noisy_validation(val_sets: list[Any], sigmas_std: Sequence[float], seed: int) -> list[Any]:
    """A copy of each validation set per noise level (Rician, standardised units, seeded)."""
    from .augment import rician_copies
    from .loop import SliceSet

    return [SliceSet(f"{s.name}+noise{sd:g}", rician_copies(s.images, sd, seed=seed * 1000 + 100 * k + j),
                     list(s.targets))
            for k, sd in enumerate(sigmas_std) for j, s in enumerate(val_sets)]


def train(data: TrainSources, output: str | os.PathLike[str], options: TrainOptions = TrainOptions(), *,
          resume: bool = False, overwrite: bool = False, progress: Callable[[Any], None] | None = None,
          command_line: str | None = None) -> TrainOutcome:
    """Fine-tune ``options.init`` (a registered model, a model folder / weight file, or ``"none"``)
    on the labelled images of ``data``, and write MODEL_DIR ``output`` (see docs/train.md).
    ``resume``: continue the interrupted run of ``output``; ``overwrite``: replace a model folder
    sct-gm train wrote; ``progress`` receives :class:`~sctgm.training.loop.TrainProgress` after every
    step. Raises :class:`~sctgm.exceptions.MissingExtraError` without torch (``sctgm[torch]``)."""
    require_torch("sct-gm train (sctgm.train)", parameter=None)
    if Path(output).expanduser().name in ("", ".."):  # '', '.', '..': the current folder or its parent
        raise OutputError(f"output {os.fspath(output)!r}: not a folder name; the trained model is a new folder (e.g. "
                          f"models/my_gm)", parameter="output")
    out = Path(output).expanduser().absolute()
    if out.name in packaged_names():  # the model takes its folder's name: sidecars and QC would say "large"
        raise OutputError(f"{out}: '{out.name}' is a model sct-gm ships; the trained model takes its folder's name, "
                          f"so choose another (e.g. {out.name}-mysite)", parameter="output")
    partial = out.parent / f".{out.name}.partial"
    with claimed(out, partial, resume=resume, overwrite=overwrite):  # one run per MODEL_DIR, to the rename
        return _train(data, out, partial, options, resume=resume, progress=progress, command_line=command_line)


def _train(data: TrainSources, out: Path, partial: Path, o: TrainOptions, *, resume: bool,
           progress: Callable[[Any], None] | None, command_line: str | None) -> TrainOutcome:
    """:func:`train` once MODEL_DIR ``out`` is checked and its lock held."""
    import torch

    from ..engines.hardware import available_cores
    from .checkpoint import load_checkpoint
    from .loop import TrainConfig, train_loop
    from .models import resolve_device

    init, arch, filters, val, val_fraction, max_steps, epochs, lr, batch_size, seed, device, threads, bn, patience, \
        augment = (o.init, o.arch, o.filters, o.val, o.val_fraction, o.max_steps, o.epochs, o.lr, o.batch_size,
                   o.seed, o.device, o.threads, o.bn, o.patience, o.augment)
    if not 0.0 <= val_fraction < 1.0:
        raise TrainingDataError(f"validation fraction {val_fraction}: expected a share in [0, 1)",
                                parameter="val_fraction")
    augment_cfg = None if augment is None else _augment_config(augment)  # before reading any data
    items = _items(data.images, data.masks, data.bids, data.suffixes, data.participants, data.gmchallenge)
    model, recipe, init_record = _init_model(init, arch, filters, seed)
    prep = recipe.preprocessing
    arch_key, n_filters = _arch_key(recipe.network), recipe.network.get("filters")
    volumes = [read_labelled(it, prep, margin_px=TRAIN_MARGIN_PX) for it in items]
    parts = sources.split(volumes, val_subjects=val, val_fraction=val_fraction, seed=seed)
    train_sets = [slice_set([v for v in parts.train if v.subject == s], training=True)
                  for s in sorted({v.subject for v in parts.train})]
    val_sets = [slice_set([v for v in parts.val if v.subject == s], training=False)
                for s in sorted({v.subject for v in parts.val})]
    n_train = sum(len(s.images) for s in train_sets)
    if max_steps is None:
        max_steps = (math.ceil(epochs * math.ceil(n_train / batch_size)) if epochs else DEFAULT_MAX_STEPS)
    val_every = validation_interval(max_steps)
    crop = min([prep.crop_px] + [min(v.prepared.window_px) for v in volumes])
    pretrained = init != "none"
    cfg_kwargs: dict[str, Any] = {} if augment_cfg is None else {"augment": augment_cfg}
    cfg = TrainConfig(max_steps=max(1, int(max_steps)), batch_size=batch_size, crop_px=crop,
                      lr=lr or (DEFAULT_LR if pretrained else DEFAULT_LR_SCRATCH),
                      warmup_steps=warmup_steps(max(1, int(max_steps))),
                      bn=bn or (DEFAULT_BN_FINETUNE if pretrained else "train"), val_every=val_every,
                      patience=patience if val_sets else 0,
                      checkpoint_every=val_every * CHECKPOINT_EVERY_VALIDATIONS, seed=seed,
                      default_threshold=prep.threshold, precision=recipe.precision,  # no validation: the init's
                      **cfg_kwargs)  # threshold; validation at the model's precision, as inference
    if val_sets and cfg.augment.val_noise_std:  # the robust recipe validates on noisy copies too
        val_sets = val_sets + _noisy_validation(val_sets, cfg.augment.val_noise_std, seed)
    data_record = [{"image": str(it.image), "image_sha256": sha256_of(it.image),
                    "masks": [{"path": str(m), "sha256": sha256_of(m)} for m in it.masks],
                    "subject": it.subject, "challenge_vote": it.challenge,
                    "train_slices": [k for v in parts.train if v.name == str(it.image) for k in v.slices],
                    "val_slices": [k for v in parts.val if v.name == str(it.image) for k in v.slices]}
                   for it in items]
    dev = resolve_device(device)
    n_threads = threads or available_cores()
    signature = {"data": data_record, "init": init_record, "arch": arch_key, "filters": n_filters,
                 "config": json.loads(json.dumps(asdict(cfg), default=str)), "split": parts.how,
                 "device": str(dev), "threads": n_threads}  # the thread count changes the float sums
    sealed = json.dumps(signature, sort_keys=True)
    checkpoint_path = partial / outputs.CHECKPOINT
    continuing = resume and checkpoint_path.is_file()
    if continuing:
        _check_resume(partial, json.loads(load_checkpoint(checkpoint_path).get("signature") or "{}"), signature,
                      split_parameter="val" if val else "val_fraction")
    else:  # a new run, or a run killed before its first checkpoint: start from step 0
        partial.mkdir(exist_ok=resume)

    threads_before = torch.get_num_threads()
    torch.set_num_threads(n_threads)
    try:
        for stale in partial.iterdir():  # temporary files of a run killed while writing them
            if outputs.is_run_temp(stale.name):
                stale.unlink(missing_ok=True)
        save_json(signature, partial / RUN_FILE)
        result = train_loop(model, train_sets, val_sets, cfg, device=dev, pretrained=pretrained,
                            checkpoint_path=checkpoint_path, resume=continuing, progress=progress, signature=sealed,
                            on_validation=lambda log: (outputs.write_log(partial, log),
                                                       outputs.write_curves(partial, log)))
        recipe_out = recipe.with_threshold(result.threshold)
        name = outputs.model_name(out)
        outputs.write_weights(partial, result.state_dict, int(n_filters or 0))
        training: dict[str, Any] = {
            "data": data_record, "init": init_record, "seed": seed, "sctgm_version": __version__,
            "command_line": command_line or "sctgm.train()", "device": str(dev),
            "config": signature["config"], "validation_split": parts.how,
            "metrics": {"val_window_dice": result.val_dice, "init_val_window_dice": result.init_dice,
                        "threshold": result.threshold, "steps": result.steps,
                        "best_step": result.best_step, "stopped_early": result.stopped_early,
                        "seconds": round(result.seconds, 1), "data_seconds": round(result.data_seconds, 1)},
        }
        outputs.write_model_json(partial, name=name, recipe=recipe_out,
                                 training=training, description=f"{arch_key} network trained by sct-gm "
                                 f"{__version__} from init '{init_record['name']}'")
        outputs.write_log(partial, result.log)
        outputs.write_curves(partial, result.log)
        rows = outputs.validation_metrics(partial, parts.val, threads=threads) if parts.val else []
        outputs.write_validation(partial, rows)
        if rows:  # the per-subject metrics into model.json too (written again: same weights, same sha256)
            training["metrics"]["validation"] = rows
            outputs.write_model_json(partial, name=name, recipe=recipe_out,
                                     training=training, description=f"{arch_key} network trained by sct-gm "
                                     f"{__version__} from init '{init_record['name']}'")
        (partial / outputs.CHECKPOINT).unlink(missing_ok=True)
        (partial / RUN_FILE).unlink(missing_ok=True)
    except KeyboardInterrupt:
        raise  # the partial folder keeps its last good checkpoint for --resume
    except OSError as exc:  # a full disk while writing the outputs: say where (the checkpoint is kept)
        raise OutputError(f"{exc.filename or partial}: cannot be written ({exc.strerror or exc}); the last "
                          f"checkpoint is kept: free space, then resume") from None
    except BaseException:
        if not (partial / outputs.CHECKPOINT).is_file():
            shutil.rmtree(partial, ignore_errors=True)
        raise
    finally:
        torch.set_num_threads(threads_before)
    _publish(partial, out)
    return TrainOutcome(out, out / outputs.MODEL_JSON, out / "model.safetensors", result.threshold, result.val_dice,
                        result.init_dice, rows, result.steps, result.best_step, result.stopped_early, result.seconds, parts.how)


def _publish(partial: Path, out: Path) -> None:
    """Rename the finished folder to MODEL_DIR (replacing an old one only now, with --overwrite)."""
    old = None
    if out.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
        os.replace(out, old / "x")
    os.replace(partial, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
