"""``sct-gm train``: fine-tune a published network (or train one from scratch) on labelled images.
A thin shell over :func:`sctgm.train` (sctgm/training/api.py); see docs/train.md."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Optional

import click

from ..training.defaults import (DEFAULT_BATCH_SIZE, DEFAULT_INIT, DEFAULT_MAX_STEPS, DEFAULT_VAL_FRACTION,
                                 validation_interval)
from . import plural, resolve_verbosity, setup_logging, verbosity_option
from ..networks import BUILTIN, network_named
from .options import greedy_command

#: --arch: the shipped networks' train names (sctgm/networks/).
TRAIN_ARCHITECTURES = [network_named(name).train_name for name in BUILTIN]

_GREEDY = ("-i", "--input", "-r", "--ref", "--suffix", "--participant-label", "--val")


@greedy_command(*_GREEDY, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-i", "--input", "inputs", multiple=True, type=click.Path(path_type=Path),
              help="Image(s) to train on (3D NIfTI, axial slices); one -r per -i.")
@click.option("-r", "--ref", "refs", multiple=True, type=click.Path(path_type=Path),
              help="Manual GM mask(s) (0/1) on each image's grid; only slices holding GM are used.")
@click.option("--bids", "bids_root", type=click.Path(path_type=Path), default=None,
              help="BIDS dataset: GM masks from derivatives/labels (_label-GM_seg or _gmseg-manual).")
@click.option("--suffix", "suffixes", multiple=True,
              help="BIDS: image suffix(es) [default: T2star and T2starw, the BIDS name].")
@click.option("--participant-label", "participants", multiple=True, help="BIDS: only these participants.")
@click.option("--gmchallenge", type=click.Path(path_type=Path), default=None,
              help="Folder in the GM challenge's layout (siteN-scNN-image + -mask-r1..r4; majority vote).")
@click.option("-o", "--output", type=click.Path(), required=True,  # a str: `-o ""` stays empty, refused as such
              help="MODEL_DIR to create (model.safetensors, model.json, logs, curves, validation metrics).")
@click.option("--init", default=DEFAULT_INIT, show_default=True,
              help="Start from: large, challenge, a registered name, a model folder / weight file, or none.")
@click.option("--arch", type=click.Choice(TRAIN_ARCHITECTURES), default=None,
              help="Network (with --init none) [default: dilated, or the init's].")
@click.option("--filters", type=click.IntRange(1, 512), default=None, help="Filters (with --init none).")
@click.option("--val", "val_subjects", multiple=True, help="Validation subjects (sub-03 ...).")
@click.option("--val-fraction", type=click.FloatRange(0, 1, max_open=True), default=DEFAULT_VAL_FRACTION,
              show_default=True, help="Share of subjects held out (one subject: a block of its slices).")
@click.option("--max-steps", type=click.IntRange(1), default=None,
              help=f"Optimizer steps [default: {DEFAULT_MAX_STEPS}].")
@click.option("--epochs", type=click.FloatRange(0, min_open=True), default=None,
              help="Passes over the training slices (instead of --max-steps).")
@click.option("--lr", type=click.FloatRange(0, min_open=True), default=None,
              help="Peak learning rate [default: 1e-4 fine-tuning, 1e-3 from scratch].")
@click.option("--batch-size", type=click.IntRange(1), default=DEFAULT_BATCH_SIZE, show_default=True,
              help="Crops per step.")
@click.option("--augment", type=click.Choice(["standard", "robust", "none"]), default="standard", show_default=True,
              help="Augmentation recipe: robust adds frequent, strong noise, bias field and blur (docs/train.md).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of every random draw.")
@click.option("--device", default="auto", show_default=True, help="auto (CUDA when present), cpu, cuda or cuda:N.")
@click.option("--threads", type=click.IntRange(1, 1024), default=None,
              help="CPU threads for torch [default: the available cores].")
@click.option("--resume", is_flag=True, help="Continue the interrupted run of -o (same command otherwise).")
@click.option("--overwrite", is_flag=True, help="Replace an existing MODEL_DIR (or an interrupted run).")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar, no progress lines, no warnings.")
@verbosity_option
@click.pass_context
def train(ctx: click.Context, inputs: tuple[Path, ...], refs: tuple[Path, ...], bids_root: Optional[Path],
          suffixes: tuple[str, ...], participants: tuple[str, ...], gmchallenge: Optional[Path], output: str,
          init: str, arch: Optional[str], filters: Optional[int], val_subjects: tuple[str, ...], val_fraction: float,
          max_steps: Optional[int], epochs: Optional[float], lr: Optional[float], batch_size: int, augment: str, seed: int,
          device: str, threads: Optional[int], resume: bool, overwrite: bool, quiet: bool,
          verbosity: Optional[int]) -> None:
    """Fine-tune a GM network on labelled images and write a model folder that
    `sct-gm segment -m MODEL_DIR` uses.

    \b
      sct-gm train -i sub-01_T2star.nii.gz -r sub-01_T2star_gmseg.nii.gz -o mymodel
      sct-gm train --bids ds --val sub-03 -o mymodel --init large
      sct-gm train --gmchallenge training-data -o unet --init none --arch unet
    """
    from ..training.api import train as run_train
    from ..training.options import TrainOptions, TrainSources
    from .progress import counting_bar, progress_lines_shown

    verbose, quiet = resolve_verbosity(ctx, verbosity, quiet)
    setup_logging(verbose, quiet=quiet)
    if max_steps and epochs:
        raise click.UsageError("give --max-steps or --epochs, not both")
    _check_dependent_options(ctx, bids_root, suffixes, participants, val_subjects)

    def describe(p: object) -> str:
        v, loss = getattr(p, "val_dice", None), getattr(p, "loss", None)
        return ("init" if loss is None else f"loss {loss:.3f}") + (f"  val Dice {v:.3f}" if v is not None else "")

    lines = progress_lines_shown(quiet)  # off a terminal (a log file, a cluster job): a line per validation
    unvalidated = val_fraction == 0 and not val_subjects  # then a line as often as validations would come
    with counting_bar(quiet, "training", "steps", describe) as bar:
        def progress(p: object) -> None:
            step, total = p.step, p.max_steps  # type: ignore[attr-defined]
            every = validation_interval(total)
            if lines and (getattr(p, "val_dice", None) is not None
                          or (unvalidated and (step % every == 0 or step == total))):
                click.echo(validation_line(p), err=True)
            if bar is not None:
                bar(p.step, p.max_steps, p)  # type: ignore[attr-defined]

        try:
            data = TrainSources(images=inputs, masks=refs, bids=bids_root, suffixes=suffixes or None,
                                participants=participants, gmchallenge=gmchallenge)
            options = TrainOptions(init=init, arch=arch, filters=filters, val=val_subjects, val_fraction=val_fraction,
                                   max_steps=max_steps, epochs=epochs, lr=lr, batch_size=batch_size, seed=seed,
                                   device=device, threads=threads, augment=augment)
            result = run_train(data, output, options,
                               resume=resume, overwrite=overwrite, progress=progress,
                               command_line=shlex.join(["sct-gm", *sys.argv[1:]]))
        except KeyboardInterrupt:
            click.echo(f"sct-gm: interrupted; {output} was not written, the last checkpoint is kept: run the same "
                       f"command with --resume to continue", err=True)
            ctx.exit(130)
    dice = "no validation" if result.val_dice is None else (
        f"validation Dice {result.val_dice:.3f} at threshold {result.threshold:g} (step {result.best_step}; "
        f"the init: {result.init_val_dice:.3f})")
    click.echo(f"{result.model_dir}: {plural(result.steps, 'step')}, {dice}; use it with: sct-gm segment -m {result.model_dir}")


def _check_dependent_options(ctx: click.Context, bids_root: Optional[Path], suffixes: tuple[str, ...],
                             participants: tuple[str, ...], val_subjects: tuple[str, ...]) -> None:
    """An option that would be ignored is a usage error (never silently dropped), as in `segment`."""
    bids_only = [flag for flag, given in (("--suffix", suffixes), ("--participant-label", participants)) if given]
    if bids_root is None and bids_only:
        raise click.UsageError(f"BIDS options only apply with --bids DATASET (given: {', '.join(bids_only)})")
    if val_subjects and ctx.get_parameter_source("val_fraction") not in (None, click.core.ParameterSource.DEFAULT):
        raise click.UsageError("--val names the validation subjects and --val-fraction draws them: give one, not both")


def _duration(seconds: float) -> str:
    s = int(round(seconds))
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


def validation_line(p: object) -> str:
    """One line per validation (step, loss, validation Dice with the best and the init's, lr, elapsed,
    ETA), the way nnU-Net and ivadomed log, for logs and cluster jobs."""
    step, total, seconds = p.step, p.max_steps, p.seconds  # type: ignore[attr-defined]
    loss = "loss      -" if p.loss is None else f"loss {p.loss:6.4f}"  # type: ignore[attr-defined]
    lr = "lr       -" if p.lr is None else f"lr {p.lr:.2e}"  # type: ignore[attr-defined]
    best = "" if p.best_dice is None else f" (best {p.best_dice:.4f} at {p.best_step})"  # type: ignore[attr-defined]
    init = " (init)" if step == 0 else ""
    eta = _duration(seconds / step * (total - step)) if step else "?"
    val = "no validation" if p.val_dice is None else f"val Dice {p.val_dice:.4f}"  # type: ignore[attr-defined]
    return (f"sct-gm: step {step:>{len(str(total))}}/{total}  {loss}  {val}{init}{best}  "
            f"{lr}  elapsed {_duration(seconds)}  ETA {eta}")
