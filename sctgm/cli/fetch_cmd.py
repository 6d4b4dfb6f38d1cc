"""``sct-gm fetch-model``: download, verify and install model weights, or list them."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Optional

import click

from . import resolve_verbosity, setup_logging, verbosity_option

if TYPE_CHECKING:
    from ..model.registry import ModelStatus


def _human(n: int) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000  # type: ignore[assignment]
    return f"{n} B"


def _render_list(rows: list[ModelStatus]) -> None:
    """A rich table on a terminal; tab-separated lines (one header) otherwise, for scripts: the name
    column holds names only (what `segment -m` takes), the default model is marked in its own last column."""
    if not sys.stdout.isatty():
        click.echo("name\tversion\tsize_bytes\tinstalled\tpath\tdescription\tdefault")
        for r in rows:
            click.echo(f"{r.name}\t{r.version}\t{r.size_bytes}\t{r.state}\t{r.path}\t{r.description}\t"
                       f"{'yes' if r.default else 'no'}")
        return
    from rich.console import Console
    from rich.table import Table

    table = Table()
    for column in ("name", "version", "size", "installed"):
        table.add_column(column, no_wrap=True)
    table.add_column("path", overflow="fold")
    table.add_column("description", ratio=1)
    style = {"installed": "green", "missing": "yellow", "corrupt": "bold red"}
    for r in rows:
        table.add_row(r.name + (" (default)" if r.default else ""), r.version, _human(r.size_bytes),
                      f"[{style[r.state]}]{r.state}[/]", str(r.path), r.description)
    Console().print(table)


@click.command("fetch-model")
@click.argument("names", nargs=-1, metavar="[NAME|MODEL_DIR ...]")
@click.option("--all", "all_models", is_flag=True, help="Fetch every registered model.")
@click.option("--list", "list_models", is_flag=True, help="List the models and whether each is installed.")
@click.option("--force", is_flag=True, help="Download and install again even if installed.")
@click.option("--mirror", metavar="URL_OR_DIR",
              help="Folder, base URL or .zip holding the model files; tried before SCTGM_MIRROR and the "
                   "registry's addresses.")
@click.option("--cache-dir", type=click.Path(file_okay=False, path_type=Path),
              help="Cache folder (default: $SCTGM_HOME, else the user cache folder, ~/.cache/sctgm on "
                   "Linux).")
@click.option("-q", "--quiet", is_flag=True, help="No progress bars, no warnings.")
@verbosity_option
@click.pass_context
def fetch_model(ctx: click.Context, names: tuple[str, ...], all_models: bool, list_models: bool,
                force: bool, mirror: Optional[str], cache_dir: Optional[Path], quiet: bool,
                verbosity: Optional[int]) -> None:
    """Download, verify and install model weights (default: the registry's default model; a model that
    combines two networks installs both).

    Files are checked by size and sha256, converted once to safetensors and installed atomically; a
    file lock lets several processes fetch at once. Offline, point --mirror or SCTGM_MIRROR at a
    folder holding the published files.
    """
    from ..model import install, registry
    from .progress import download_progress

    verbose, quiet = resolve_verbosity(ctx, verbosity, quiet)
    setup_logging(verbose, quiet=quiet)
    if list_models:
        if force or all_models:
            raise click.UsageError("--list does not combine with --force or --all")
        _render_list(install.list_models(names or None, cache_dir=cache_dir))
        return
    if all_models and names:
        raise click.UsageError("give model names or --all, not both")
    registered, default = registry.registered_names()
    wanted = registered if all_models else list(dict.fromkeys(names)) or [default]
    with download_progress(quiet) as progress:
        for name in wanted:
            if name.endswith(".json") or (Path(name).is_dir() and (Path(name) / "model.json").is_file()):
                model = install.install_model_file(name, cache_dir=cache_dir, progress=progress, force=force)
                click.echo(f"{model.name} {model.version}: {model.weights_path}")
                continue
            model = install.ensure_model(name, mirror=mirror, cache_dir=cache_dir, progress=progress,
                                          force=force)
            click.echo(f"{model.name} {model.version}: {model.weights_path}")
            combine = model.recipe.combine
            if combine is not None and combine.with_model not in wanted:  # its second network, too
                other = install.ensure_model(combine.with_model, mirror=mirror, cache_dir=cache_dir,
                                             progress=progress, force=force)
                click.echo(f"{other.name} {other.version}: {other.weights_path}")
