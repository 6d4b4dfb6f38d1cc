"""``sctgm.train``: labelled images -> a model folder that ``segment -m`` uses (the library side of
``sct-gm train``; the CLI is a thin shell over :func:`train`).

The run works in a temporary folder beside MODEL_DIR (``.<name>.partial``), where its checkpoint is
replaced atomically every few steps; the outputs are written there and the folder is renamed to
MODEL_DIR at the very end, so MODEL_DIR is either absent or complete. Ctrl-C leaves the partial
folder with its last good checkpoint: the same command with ``resume=True`` (``--resume``)
continues it and, on a CPU with the same seed, ends with the weights of an uninterrupted run.
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
from ..naming import split_nifti_name
from ..writing import save_json
from .data import TRAIN_MARGIN_PX, LabelledImage, TrainingDataError, read_labelled, sha256_of, slice_set
from .defaults import (CHECKPOINT_EVERY_VALIDATIONS, DEFAULT_ARCH, DEFAULT_BN_FINETUNE, DEFAULT_LR,
                       DEFAULT_LR_SCRATCH, DEFAULT_MAX_STEPS, validation_interval, warmup_steps)
from .options import TrainOptions, TrainSources
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


def _check_output(out: Path, partial: Path, *, resume: bool, overwrite: bool) -> None:
    if split_nifti_name(out.name)[1]:  # `-o model.nii.gz`: a mask's name, surely not the folder meant
        raise OutputError(f"{out}: is a NIfTI name; the trained model is a folder (e.g. models/my_gm)",
                          parameter="output")
    if (out.exists() or out.is_symlink()) and not overwrite:
        hint = "overwrite it to replace it" if resume else "overwrite it or choose another output folder"
        raise OutputError(f"{out}: already exists ({'the run is finished' if resume else 'a model folder'}); {hint}",
                          parameter="overwrite")
    if out.exists() or out.is_symlink():
        _check_own(out, "a model folder")  # --overwrite replaces only what sct-gm train made
    if resume and not partial.is_dir():
        raise OutputError(f"{out}: nothing to resume (no interrupted run in {partial})")
    if not resume and (partial.exists() or partial.is_symlink()):
        if not overwrite:
            raise OutputError(f"{out}: an interrupted run left {partial}; resume it or overwrite it to start "
                              f"again", parameter="resume")
        _check_own(partial, "an interrupted run")
        shutil.rmtree(partial)
    for up in (out.parent, *out.parent.parents):
        if up.exists() and not up.is_dir():
            raise OutputError(f"{up}: is a file, not a folder; the model folder cannot be written under it")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        probe = tempfile.TemporaryFile(dir=out.parent)
        probe.close()
    except OSError as exc:
        raise OutputError(f"{out.parent}: cannot write the model folder there ({exc.strerror or exc})") from None


def _check_own(folder: Path, what: str) -> None:
    """Refuse to remove ``folder`` unless sct-gm train made it: a real folder (not a link) that is empty
    or holds a model.json, run.json or checkpoint, and nothing but the files a run writes."""
    found = sorted(p.name for p in folder.iterdir()) if folder.is_dir() and not folder.is_symlink() else None
    foreign = None if found is None else [n for n in found if n not in outputs.RUN_FILES
                                          and not outputs.is_run_temp(n)]
    if found is None or foreign or (found and not {outputs.MODEL_JSON, RUN_FILE, outputs.CHECKPOINT} & set(found)):
        why = ("it is not a folder" if found is None else f"it holds {', '.join(map(repr, foreign[:3]))}"
               if foreign else "it holds no model.json, run.json or checkpoint")
        raise OutputError(f"{folder}: not {what} written by sct-gm train ({why}); refusing to replace it, "
                          f"choose another output folder", parameter="output")


#: Signature keys (config keys below "config") -> the library argument that sets them.
_SIGNATURE_PARAMETERS = {"data": "images", "init": "init", "arch": "arch", "filters": "filters", "split": "val",
                         "device": "device", "threads": "threads", "max_steps": "max_steps",
                         "batch_size": "batch_size", "lr": "lr", "seed": "seed", "augment": "augment", "bn": "bn",
                         "patience": "patience"}


def _check_resume(partial: Path, before: dict[str, Any], now: dict[str, Any]) -> None:
    """Refuse to resume a run whose checkpoint was made with other data or options, naming the first
    argument that differs."""
    if before == json.loads(json.dumps(now)):
        return
    diffs = [k for k in sorted(set(before) | set(now)) if before.get(k) != now.get(k)]
    if diffs == ["config"]:
        old, new = before.get("config") or {}, now["config"]
        diffs = [k for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]
        values = (old, new)
    else:
        values = (before, now)
    key = next((k for k in diffs if k in _SIGNATURE_PARAMETERS), diffs[0] if diffs else "?")
    parameter = _SIGNATURE_PARAMETERS.get(key)
    if key in ("data", "init", "split", "augment") or not diffs:
        what = f"other {'training data' if key == 'data' else key}"
    else:
        what = f"{key} {values[0].get(key)!r}, this run has {values[1].get(key)!r}"
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
    import torch

    from ..engines.hardware import available_cores
    from .checkpoint import load_checkpoint
    from .loop import TrainConfig, train_loop
    from .models import resolve_device

    o = options
    init, arch, filters, val, val_fraction, max_steps, epochs, lr, batch_size, seed, device, threads, bn, patience, \
        augment = (o.init, o.arch, o.filters, o.val, o.val_fraction, o.max_steps, o.epochs, o.lr, o.batch_size,
                   o.seed, o.device, o.threads, o.bn, o.patience, o.augment)
    out = Path(output).expanduser().absolute()
    partial = out.parent / f".{out.name}.partial"
    _check_output(out, partial, resume=resume, overwrite=overwrite)
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
        _check_resume(partial, json.loads(load_checkpoint(checkpoint_path).get("signature") or "{}"), signature)
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
