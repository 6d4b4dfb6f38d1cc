"""The QC folder on disk: entries, the index, the static page, one lock.

Layout of a QC folder::

    qc/
      index.html            static page (copied from sctgm/qc/assets), reads index.js
      index.js              window.SCTGM_QC = {...}: every entry, regenerated on each add
      _assets/qc.js, qc.css the page's code and style (no network, no CDN)
      report.json           report id (keys the browser's saved ratings) and creation date
      entries/<id>/         entry.json, image.png, overlay.png
      .sctgm-qc.lock        file lock held while an entry is added

Data reaches the page through ``index.js`` (a script setting a global) rather than ``fetch()``,
which Chromium refuses on ``file://`` pages. Writers take the lock, move a fully written entry
folder into place with one rename, then rewrite ``index.js`` atomically from every
``entry.json``: readers never see a partial file, and concurrent writers never lose an entry.
"""

from __future__ import annotations

import json
import logging
import os
import re
import secrets
import shutil
import time
import uuid
from importlib import resources
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from ..exceptions import OutputError, QcError
from ..io import atomic_path, folder_is_writable

log = logging.getLogger(__name__)

ENTRIES_DIR = "entries"
INDEX_JS = "index.js"
INDEX_HTML = "index.html"
ASSETS_DIR = "_assets"
REPORT_JSON = "report.json"
LOCK_NAME = ".sctgm-qc.lock"
ENTRY_JSON = "entry.json"
#: Seconds a writer waits for the folder lock before giving up.
LOCK_TIMEOUT_S = 300.0

#: Package asset file -> path inside the QC folder.
_ASSETS = {"index.html": INDEX_HTML, "qc.js": f"{ASSETS_DIR}/qc.js", "qc.css": f"{ASSETS_DIR}/qc.css"}


def check_qc_dir(qc_dir: str | os.PathLike[str]) -> Path:
    """Fail early, before any work, when ``qc_dir`` cannot be a QC folder (nothing is created)."""
    p = Path(qc_dir)
    if p.exists() and not p.is_dir():
        raise OutputError(f"{p}: exists and is not a folder; give a folder for the QC report")
    anchor = p
    while not anchor.exists():
        if anchor.parent == anchor:
            break
        anchor = anchor.parent
    if anchor.exists() and not folder_is_writable(anchor):
        raise OutputError(f"{p}: cannot create or write the QC folder ({anchor} is not writable)")
    return p


def safe_id_part(name: str, max_len: int = 40) -> str:
    """A file-system and URL safe fragment of ``name`` (letters, digits, '-', '_', '.')."""
    s = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._-")
    return s[:max_len] or "entry"


def new_entry_id(stem: str) -> str:
    """Unique, sortable id: UTC time, a safe form of ``stem``, and random hex."""
    return f"{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}_{safe_id_part(stem)}_{secrets.token_hex(3)}"


def write_entry(qc_dir: str | os.PathLike[str], entry: dict[str, Any], files: dict[str, bytes]) -> Path:
    """Add one entry (its JSON record and its files) to ``qc_dir`` and regenerate the index.

    ``entry["id"]`` is replaced by a fresh unique id if that folder already exists. Safe for
    concurrent writers (folder lock; the entry folder appears with one rename; index files are
    written atomically). Returns the entry folder.
    """
    root = check_qc_dir(qc_dir)
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"{root}: cannot create the QC folder ({exc.strerror or exc})") from None
    lock = FileLock(str(root / LOCK_NAME), timeout=LOCK_TIMEOUT_S)
    try:
        with lock:
            entries = root / ENTRIES_DIR
            entries.mkdir(exist_ok=True)
            final = entries / entry["id"]
            while final.exists():
                entry = {**entry, "id": new_entry_id(entry.get("image_name", "entry"))}
                final = entries / entry["id"]
            staging = entries / f".{entry['id']}.part"
            try:
                staging.mkdir()
                for name, data in files.items():
                    (staging / name).write_bytes(data)
                (staging / ENTRY_JSON).write_text(json.dumps(entry, indent=1, ensure_ascii=True) + "\n")
                os.replace(staging, final)
            except BaseException:
                shutil.rmtree(staging, ignore_errors=True)
                raise
            _install_assets(root)
            rebuild_index(root)
    except Timeout:
        raise QcError(f"{root}: another process has held the QC folder lock ({LOCK_NAME}) for over "
                      f"{LOCK_TIMEOUT_S:.0f} s; if none is running, delete the lock file and retry") from None
    except OSError as exc:
        raise OutputError(f"{root}: cannot write the QC entry ({exc.strerror or exc})") from None
    return final


def read_entries(qc_dir: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Every readable ``entries/*/entry.json`` of ``qc_dir``, newest first."""
    out = []
    for f in sorted((Path(qc_dir) / ENTRIES_DIR).glob(f"*/{ENTRY_JSON}")):
        if f.parent.name.startswith("."):
            continue
        try:
            out.append(json.loads(f.read_text()))
        except (OSError, ValueError) as exc:
            log.warning("%s: skipped, not a readable QC entry (%s)", f, exc)
    out.sort(key=lambda e: (e.get("timestamp", 0), e.get("id", "")), reverse=True)
    return out


def rebuild_index(qc_dir: str | os.PathLike[str]) -> Path:
    """Rewrite ``index.js`` from the entry folders (call with the folder lock held)."""
    root = Path(qc_dir)
    report = _report_info(root)
    data = {"report": report, "entries": read_entries(root)}
    # ensure_ascii: only ASCII in the script; "</" cannot close anything in a separate .js file,
    # and every string reaches the DOM through textContent.
    text = "window.SCTGM_QC = " + json.dumps(data, ensure_ascii=True, separators=(",", ":")) + ";\n"
    _write_text(root / INDEX_JS, text)
    return root / INDEX_JS


def _report_info(root: Path) -> dict[str, Any]:
    path = root / REPORT_JSON
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        info = {"report_id": uuid.uuid4().hex, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        _write_text(path, json.dumps(info, indent=1) + "\n")
        return info


def _install_assets(root: Path) -> None:
    (root / ASSETS_DIR).mkdir(exist_ok=True)
    pkg = resources.files("sctgm.qc") / "assets"
    for src, dst in _ASSETS.items():
        text = (pkg / src).read_text(encoding="utf-8")
        target = root / dst
        try:
            if target.read_text(encoding="utf-8") == text:
                continue
        except (OSError, UnicodeDecodeError):
            pass
        _write_text(target, text)


def _write_text(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
