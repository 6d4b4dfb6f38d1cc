"""Several files at once: one tidy table (rows of every file, one block per file), CSV and JSON.

CSV conventions: one row per (file, slice) with ``scope`` = 'slice', then the file's summary rows
(``scope`` = 'volume' when comparing, 'level' per vertebral level when measuring with --levels);
units in column names; provenance columns ``file`` (paths as given), ``sctgm_version``. Empty
cell: the column does not apply to that row (e.g. ``slice`` on a summary row); ``NaN``: the metric is
undefined there (e.g. a distance on a slice with an empty mask). JSON writes both as ``null``.
Files are written atomically after every metric is computed, so a failure never leaves a partial file.
"""

from __future__ import annotations

import csv
import json
import math
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO, Union

from .._version import __version__
from ..exceptions import MetricsError, OutputError
from ..filesystem import same_file
from ..naming import FLOAT_DIGITS, split_nifti_name
from ..writing import atomic_path, check_writable, save_json
from .compare import COLUMNS as COMPARE_COLUMNS
from .compare import ComparisonResult, compare_masks
from .grid import load_mask
from .morphometry import MorphometryResult, morphometry_masks

PathLike = Union[str, "os.PathLike[str]"]
Result = Union[ComparisonResult, MorphometryResult]


@dataclass(frozen=True)
class MetricsTable:
    """The results of one ``sct-gm metrics`` run: mode 'compare' (with references) or 'measure'."""

    mode: str
    columns: tuple[str, ...]
    results: list[Result]

    @property
    def rows(self) -> list[dict[str, Any]]:
        return [row for result in self.results for row in result.rows]

    def write_csv_to(self, stream: TextIO) -> None:
        """Write the table as CSV to an open text stream (``sct-gm metrics -o -``: standard output), with
        Unix line ends (the files have CSV's CRLF; a pipe into cut or awk would keep the CR)."""
        write_csv_rows(stream, self.columns, self.rows, line_end="\n")

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (NaN as None)."""
        def clean(v: Any) -> Any:
            return None if isinstance(v, float) and not math.isfinite(v) else v
        return {"sctgm_version": __version__, "mode": self.mode, "columns": list(self.columns),
                "rows": [{k: clean(v) for k, v in row.items()} for row in self.rows]}


def _paired(option: str, values: Sequence[PathLike], n: int) -> list[PathLike | None]:
    if len(values) == 0:
        return [None] * n
    if len(values) == 1:
        return [values[0]] * n
    if len(values) == n:
        return list(values)
    raise MetricsError(f"{len(values)} {option} files for {n} inputs; give {option} once (used for every "
                       f"input) or once per input, in the same order")


#: Columns a batch puts before the metrics (``sct-gm segment --metrics``, :func:`sctgm.batch.write_metrics`).
BATCH_KEY_COLUMNS = ("subject", "session", "input")
#: Every column name of a metrics CSV sct-gm writes: compare, measure (with cord and levels), batch keys.
METRICS_COLUMNS = frozenset((*COMPARE_COLUMNS, *BATCH_KEY_COLUMNS, *MorphometryResult(
    Path(), Path(), Path(), False, [], []).columns))


def is_metrics_header(columns: Sequence[str]) -> bool:
    """True for the header of a metrics CSV sct-gm wrote: ``sctgm_version`` and only its column names."""
    return "sctgm_version" in columns and set(columns) <= METRICS_COLUMNS


def is_metrics_json(path: Path) -> bool:
    """True when ``path`` is a metrics JSON sct-gm wrote (:meth:`MetricsTable.to_json`'s keys)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError):
        return False
    return isinstance(data, dict) and set(data) == {"sctgm_version", "mode", "columns", "rows"}


def table_header(path: Path, delimiter: str) -> tuple[str, ...] | None:
    """The first line of the text file ``path`` split at ``delimiter``, or None when it cannot be read
    (or is not a regular file: a FIFO is never opened, it would wait for a writer forever)."""
    try:
        if not path.is_file():
            return None
        with open(path, encoding="utf-8", newline="") as fh:
            line = fh.readline(65536)
    except (OSError, UnicodeDecodeError):
        return None
    return tuple(line.rstrip("\r\n").split(delimiter))


def is_metrics_csv(path: Path) -> bool:
    """True when ``path`` is a metrics CSV sct-gm wrote (:func:`is_metrics_header`)."""
    header = table_header(path, ",")
    return header is not None and is_metrics_header(header)


def check_table_path(path: PathLike, kind: str, *, ours: Callable[[Path], bool] | None = None,
                     overwrite: bool = False, example: str = "metrics") -> Path:
    """Fail early when ``path`` cannot receive a .csv/.json output (missing folder, a folder, a NIfTI
    name) and, when ``ours`` is given, when it exists, ``ours(path)`` says sct-gm did not write it and
    ``overwrite`` is False (sct-gm never replaces a file it did not write). ``example``: the name the
    message suggests (``<example>.<kind>``)."""
    p = Path(path)
    if split_nifti_name(p)[1]:
        raise OutputError(f"{p}: is a NIfTI name; the {kind} output needs a name such as {example}.{kind}")
    check_writable(p, hint=f"give a file name such as {example}.{kind}")
    if ours is not None and not overwrite and (p.exists() or p.is_symlink()) and not ours(p):
        raise OutputError(f"{p}: exists and is not a {kind} table sct-gm wrote (not its header); move it away, or "
                          f"allow replacing it", parameter="overwrite")
    return p


def _cell(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return "NaN" if math.isnan(v) else format(v, f".{FLOAT_DIGITS}g")
    return str(v)


def write_csv(table: MetricsTable, path: PathLike) -> Path:
    """Write ``table`` as CSV, atomically."""
    return write_rows_csv(table.columns, table.rows, path)


def write_rows_csv(columns: Sequence[str], rows: Iterable[dict[str, Any]], path: PathLike) -> Path:
    """Write ``rows`` (dicts; a missing key is an empty cell) under ``columns`` as CSV with this
    module's cell conventions, atomically."""
    p = check_table_path(path, "csv")
    try:
        with atomic_path(p) as tmp, open(tmp, "w", newline="", encoding="utf-8") as fh:
            write_csv_rows(fh, columns, rows)
    except OSError as exc:
        raise OutputError(f"{p}: cannot be written ({exc.strerror or exc})") from None
    return p


def write_csv_rows(stream: TextIO, columns: Sequence[str], rows: Iterable[dict[str, Any]],
                   line_end: str = "\r\n") -> None:
    """Write the header and ``rows`` to ``stream`` as CSV with this module's cell conventions."""
    writer = csv.writer(stream, lineterminator=line_end)
    writer.writerow(columns)
    for row in rows:
        writer.writerow([_cell(row.get(c)) for c in columns])


def compute_metrics(inputs: Sequence[PathLike], *, references: Sequence[PathLike] = (),
                    cords: Sequence[PathLike] = (), levels: Sequence[PathLike] = (), soft: bool = False,
                    csv_path: PathLike | None = None, json_path: PathLike | None = None, overwrite: bool = False,
                    progress: Callable[[int, int, Path], None] | None = None) -> MetricsTable:
    """Compare each of ``inputs`` with its reference (when ``references`` are given) or measure it
    (GM area; WM area and GM/cord ratio with ``cords``; per level with ``levels``). ``references``,
    ``cords`` and ``levels`` each hold one path (used for every input) or one per input. Writes the
    CSV/JSON when asked, only once every file has been processed; an existing file there that is not
    a metrics table of sct-gm is refused unless ``overwrite``. ``progress(i, n, path)`` is called
    before each input."""
    if not inputs:
        raise MetricsError("no input mask given")
    if references and (cords or levels):
        raise MetricsError("a reference (compare mode) cannot be combined with a cord mask or levels "
                           "(measure mode); run the two separately")
    if references and soft:
        raise MetricsError("soft masks apply to measuring areas; a comparison binarises both masks at 0.5, "
                           "so compare without soft", parameter="soft")
    if csv_path is not None and json_path is not None and same_file(csv_path, json_path):
        raise OutputError(f"{json_path}: given for both the CSV and the JSON table; the second would replace the "
                          f"first: give two names")
    for out, kind, ours in ((csv_path, "csv", is_metrics_csv), (json_path, "json", is_metrics_json)):
        if out is not None:
            check_table_path(out, kind, ours=ours, overwrite=overwrite)
    n = len(inputs)
    results: list[Result] = []
    if references:
        refs = [r for r in _paired("reference", references, n) if r is not None]  # all set: references given
        for i, (seg, ref) in enumerate(zip(inputs, refs)):
            if progress:
                progress(i, n, Path(seg))
            results.append(compare_masks(load_mask(seg, what="segmentation"),
                                         load_mask(ref, what="reference mask")))
        table = MetricsTable("compare", COMPARE_COLUMNS, results)
    else:
        cord_paths, level_paths = _paired("cord mask", cords, n), _paired("levels", levels, n)
        for i, (seg, cord, lv) in enumerate(zip(inputs, cord_paths, level_paths)):
            if progress:
                progress(i, n, Path(seg))
            results.append(morphometry_masks(
                load_mask(seg, what="GM mask"),
                load_mask(cord, what="cord mask") if cord is not None else None,
                load_mask(lv, what="vertebral level image", labels=True) if lv is not None else None,
                soft=soft))
        table = MetricsTable("measure", results[0].columns, results)  # type: ignore[union-attr]
    if csv_path is not None:
        write_csv(table, csv_path)
    if json_path is not None:
        save_json(table.to_json(), check_table_path(json_path, "json"))
    return table

