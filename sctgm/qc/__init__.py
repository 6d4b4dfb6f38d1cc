"""HTML quality-control report for GM segmentations.

``add_entry`` adds one subject to a QC folder; open ``<qc_dir>/index.html`` in a browser (works
from ``file://``, no network). See ``docs/qc.md``.
"""

from __future__ import annotations

from .entry import QcEntryWriter, add_entry, build_entry
from .report import read_entries, rebuild_index

__all__ = ["QcEntryWriter", "add_entry", "build_entry", "read_entries", "rebuild_index"]
