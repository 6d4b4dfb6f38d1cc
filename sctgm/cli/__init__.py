"""The ``sct-gm`` command: a thin Click shell over the library.

Commands are imported lazily (only the one being run), so ``sct-gm --help`` starts fast. Every
:class:`~sctgm.exceptions.SctGmError` becomes one line on stderr and its exit code, with the flag of
the argument it is about (library messages name arguments, never flags); any other exception (a bug)
becomes one ``internal error`` line and exit code 70. The traceback is shown only with ``-v/--verbose``.
A usage error (Click's: an unknown option, a bad value, options that exclude each other) is one
``sct-gm: error:`` line too, exit code 2. ``-v`` takes SCT's levels (``-v 0|1|2``; ``-v`` alone is 2) on
the group and on every command.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import signal
import sys
import threading
import traceback
from collections.abc import Iterator
from typing import Any

import click

from .._version import __version__

#: Exit code after SIGTERM (128 + 15, what a shell reports for a process SIGTERM ended): a scheduler's
#: cancel (SLURM's scancel, `timeout`, a CI job cancelled) ends a command as Ctrl-C does.
TERMINATED_EXIT_CODE = 143


@contextlib.contextmanager
def sigterm_as_ctrl_c() -> Iterator[list[int]]:
    """While a command runs from the shell, SIGTERM goes to the Ctrl-C handler in effect (Python's, or a
    batch's while it holds Ctrl-C during its bookkeeping): the images being written finish or are
    removed, the interruption message says how to resume, and no worker's resources leak. Yields the
    signals received (SIGTERM's exit code is then :data:`TERMINATED_EXIT_CODE`, not Ctrl-C's 130)."""
    got: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield got
        return

    def forward(signum: int, frame: Any) -> None:
        if got:  # `timeout` signals the command, then its group: one SIGTERM, one interruption
            return
        got.append(signum)
        handler = signal.getsignal(signal.SIGINT)
        if callable(handler):
            handler(signal.SIGINT, frame)
        else:  # Ctrl-C ignored (a background job of a shell without job control): SIGTERM still ends it
            raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, forward)
    try:
        yield got
    finally:
        signal.signal(signal.SIGTERM, previous)


#: command name -> "module:attribute" (imported only when that command runs or its help is shown).
COMMANDS: dict[str, str] = {
    "segment": "sctgm.cli.segment_cmd:segment",
    "fetch-model": "sctgm.cli.fetch_cmd:fetch_model",
    "qc": "sctgm.cli.qc_cmd:qc",
    "metrics": "sctgm.cli.metrics_cmd:metrics",
    "train": "sctgm.cli.train_cmd:train",
}


class _LazyGroup(click.Group):
    def main(self, args: Any = None, prog_name: str | None = None, complete_var: str | None = None,
             standalone_mode: bool = True, **extra: Any) -> Any:
        args = normalise_verbosity(list(sys.argv[1:] if args is None else args))
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode, **extra)
        with sigterm_as_ctrl_c() as terminated:
            try:
                self._standalone(args, prog_name, complete_var, **extra)
            except SystemExit as exc:
                # ended by SIGTERM: what a shell reports for it (`qc --serve` ends its Ctrl-C with success)
                if terminated and exc.code in (130, 0, None):
                    sys.exit(TERMINATED_EXIT_CODE)
                raise

    def _standalone(self, args: list[str], prog_name: str | None, complete_var: str | None, **extra: Any) -> None:
        """The command run from the shell: every ending an exit code and at most one line."""
        try:
            rv = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click.exceptions.NoArgsIsHelpError as exc:
            if exc.ctx is None or exc.ctx.parent is None:  # `sct-gm` alone: the help, as is
                click.echo(exc.ctx.get_help() if exc.ctx is not None else exc.format_message(), err=True)
            else:  # a command alone (Click's no_args_is_help): one line, as every other error
                click.echo(f"sct-gm: error: no arguments given (see sct-gm {exc.ctx.info_name} --help)", err=True)
            sys.exit(exc.exit_code)
        except click.UsageError as exc:  # one line, like every other error (Click prints usage + hint + error)
            command = next((a for a in args if a in COMMANDS), None)  # the first command name given
            where = f"sct-gm {command}" if command else "sct-gm"
            message = " ".join(exc.format_message().split()).rstrip(".")
            click.echo(f"sct-gm: error: {message} (see {where} --help)", err=True)
            sys.exit(exc.exit_code)
        except click.ClickException as exc:
            exc.show()
            sys.exit(exc.exit_code)
        except click.exceptions.Abort:
            click.echo("sct-gm: interrupted", err=True)
            sys.exit(130)
        sys.exit(rv if isinstance(rv, int) else 0)

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        target = COMMANDS.get(name)
        if target is None:
            return None
        module, attr = target.split(":")
        return getattr(importlib.import_module(module), attr)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        # Short help without importing every command module (keeps --help fast).
        rows = [(name, _SHORT_HELP.get(name, "")) for name in self.list_commands(ctx)]
        with formatter.section("Commands"):
            formatter.write_dl(rows)

    def invoke(self, ctx: click.Context) -> Any:
        from ..exceptions import SctGmError

        try:
            return super().invoke(ctx)
        except SctGmError as exc:
            _fail(ctx)
            click.echo(f"sct-gm: error: {one_line(str(exc))}{self._fix_for(ctx, exc)}", err=True)
            ctx.exit(exc.exit_code)
        except KeyboardInterrupt:
            click.echo("sct-gm: interrupted; no output was written for the unfinished file", err=True)
            ctx.exit(130)
        except (click.exceptions.Exit, click.ClickException, click.exceptions.Abort):
            raise  # Click's own endings (--help, usage errors, exit codes): Click reports them
        except Exception as exc:  # noqa: BLE001 - the catch-all: a bug, said in one line
            verbose = _fail(ctx)
            hint = "" if verbose else " (run with -v for the traceback)"
            text = " ".join(str(exc).split())
            click.echo(f"sct-gm: error: internal error: {type(exc).__name__}: {text}{hint}", err=True)
            ctx.exit(INTERNAL_ERROR_EXIT_CODE)
        finally:
            _held_warnings(show=True)  # the command ended without an error (exit codes included)

    def _option_for(self, ctx: click.Context, parameter: str | None) -> str | None:
        """The flag of the running command that sets the library argument ``parameter`` (None: none)."""
        name = ctx.invoked_subcommand
        if parameter is None or name is None:
            return None
        return _option_in(self.get_command(ctx, name), parameter)

    def _fix_for(self, ctx: click.Context, exc: Exception) -> str:
        """What to add to the one-line message of ``exc``: its flag in this command, or the command
        that fixes it (e.g. `sct-gm fetch-model NAME --force`); empty when there is none."""
        parameter = getattr(exc, "parameter", None)
        option = self._option_for(ctx, parameter)
        if option:
            return f" (option {option})"
        model = getattr(exc, "model", None)
        if parameter in _FETCH_OPTIONS and model:
            return f" (or run `sct-gm fetch-model {model} {_FETCH_OPTIONS[parameter]}`)"
        return ""


def plural(n: int, noun: str) -> str:
    """``1 image``, ``2 images``: a count with its noun agreeing."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def one_line(text: str) -> str:
    """``text`` with its control characters escaped (``\\n`` for a newline): one line on the terminal."""
    from ..naming import escape_controls

    return escape_controls(text)


#: Exit code of an unexpected exception (a bug): distinct from every SctGmError's (1-5), Click's usage
#: error (2) and Ctrl-C (130); 70 is EX_SOFTWARE of sysexits.h.
INTERNAL_ERROR_EXIT_CODE = 70

#: fetch-model options that fix a model error raised while another command runs.
_FETCH_OPTIONS = {"force": "--force", "mirror": "--mirror DIR"}

#: Library argument (``SctGmError.parameter``) -> the Click parameter names that set it, where they differ.
_PARAMETER_NAMES: dict[str, tuple[str, ...]] = {
    "cord_mask": ("cord_masks", "cord"),
    "cord_masks": ("cord_masks", "cords"),
    "metrics_csv": ("metrics_csv",),
    "summary": ("summary_path",),
    "output": ("output", "csv_path"),
    "crop_px": ("crop", "crop_px"),
    "derivatives": ("derivatives",),
    "images": ("inputs",),
    "masks": ("refs",),
    "val": ("val_subjects",),
}


def _option_in(command: click.Command | None, parameter: str | None) -> str | None:
    """The flag(s) of ``command`` setting the library argument ``parameter``, e.g. '-s/--cord-mask'."""
    wanted = _PARAMETER_NAMES.get(parameter, (parameter,)) if parameter else ()
    for param in command.params if command is not None else ():
        if isinstance(param, click.Option) and param.name in wanted:
            return "/".join(param.opts)
    return None


def _fail(ctx: click.Context) -> bool:
    """Drop (or, with -v, show) the held warnings and print the traceback with -v; returns verbose."""
    verbose = bool(ctx.obj and ctx.obj.get("verbose"))
    _held_warnings(show=verbose)  # a failed command says one line (everything with -v)
    if verbose:
        traceback.print_exc()
    return verbose


_SHORT_HELP: dict[str, str] = {
    "segment": "Segment the spinal cord gray matter of 3D NIfTI images.",
    "fetch-model": "Download, verify and install model weights.",
    "metrics": "Compare a segmentation with a reference, or measure GM/WM areas.",
    "qc": "Add an entry to an HTML quality-control report.",
    "train": "Fine-tune a GM network (or train one) on labelled images.",
}


class _WarningHandler(logging.Handler):
    """Library warnings (logging) become one line each on stderr (except those a batch job collects
    for its summary, see :func:`sctgm.batch.jobs.captured_warnings`). Without -v, warnings are held until
    the command ends: shown when it succeeds, dropped when it fails, so that a failure is exactly one
    line (a warning about a repaired input, then an error about another file, would read as two)."""

    def __init__(self, hold: bool) -> None:
        super().__init__()
        self.held: list[str] | None = [] if hold else None

    def emit(self, record: logging.LogRecord) -> None:
        if getattr(record, "sctgm_captured", False):  # a batch job's warning: shown in its summary row
            return
        prefix = "warning: " if record.levelno >= logging.WARNING else ""
        ctx = click.get_current_context(silent=True)  # a library argument: name its flag in this command
        option = _option_in(ctx.command, getattr(record, "parameter", None)) if ctx is not None else None
        flag = f" (option {option})" if option else ""
        self.say(f"sct-gm: {prefix}{one_line(record.getMessage())}{flag}", hold=record.levelno >= logging.WARNING)

    def say(self, line: str, hold: bool = True) -> None:
        if hold and self.held is not None:
            self.held.append(line)
        else:
            click.echo(line, err=True)


def _held_warnings(show: bool) -> None:
    """Print (``show``) or drop the warnings the CLI's handler holds."""
    for h in logging.getLogger("sctgm").handlers:
        if isinstance(h, _WarningHandler) and h.held:
            lines, h.held = h.held, []
            for line in lines if show else ():
                click.echo(line, err=True)


def normalise_verbosity(args: list[str]) -> list[str]:
    """``-v`` (or ``--verbose``) without a level becomes ``--verbose=2`` so that the token after it (a
    command name, a model name) is never taken as its value; ``-v N`` stays (a level out of 0-2 is then
    refused by the option itself, naming the range). ``--`` ends the scan."""
    out: list[str] = []
    for i, tok in enumerate(args):
        if tok == "--":
            return out + args[i:]
        if tok in ("-v", "--verbose") and (i + 1 >= len(args) or not args[i + 1].lstrip("-").isdigit()):
            tok = "--verbose=2"
        out.append(tok)
    return out


def verbosity_option(func: Any) -> Any:
    """The ``-v [0|1|2]`` option of every command (SCT's: 0 errors only, 1 default, 2 debug)."""
    return click.option("-v", "--verbose", "verbosity", type=click.IntRange(0, 2), default=None, is_flag=False,
                        flag_value=2, metavar="[0|1|2]",
                        help="Verbosity, as in SCT: 0 errors only (like -q), 1 default, 2 (or -v alone) debug "
                             "messages and tracebacks on errors.")(func)


def resolve_verbosity(ctx: click.Context, level: int | None, quiet: bool = False) -> tuple[bool, bool]:
    """(verbose, quiet) from the command's ``-v`` level (else the group's) and its ``-q``; records
    ``verbose`` where the error handler reads it."""
    obj = ctx.find_root().ensure_object(dict)
    if level is None:
        level = obj.get("verbosity", 1)
    obj["verbosity"], obj["verbose"] = level, level >= 2
    return level >= 2, quiet or level == 0


def setup_logging(verbose: bool, quiet: bool = False) -> None:
    logger = logging.getLogger("sctgm")
    pending: list[str] = []
    for h in list(logger.handlers):
        if isinstance(h, _WarningHandler):
            pending += h.held or []
            logger.removeHandler(h)
    handler = _WarningHandler(hold=not verbose)
    for line in pending:  # held by the handler this one replaces (a command sets logging up again)
        handler.say(line)
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG if verbose else logging.ERROR if quiet else logging.WARNING)
    logger.propagate = False


@click.group(cls=_LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="sct-gm")
@verbosity_option
@click.pass_context
def main(ctx: click.Context, verbosity: int | None) -> None:
    """Spinal cord gray matter segmentation (Perone et al. 2018), fast and robust to any NIfTI."""
    level = 1 if verbosity is None else verbosity
    ctx.ensure_object(dict).update(verbosity=level, verbose=level >= 2)
    setup_logging(level >= 2, quiet=level == 0)


def run() -> None:  # pragma: no cover - console entry for `python -m sctgm`
    main(prog_name="sct-gm", args=sys.argv[1:])
