"""The QC folder on disk: entries, the index, the static page, one lock.

Layout of a QC folder::

    qc/
      index.html            static page (copied from sctgm/qc/assets), reads index.js
      index.js              window.SCTGM_QC = {...}: every entry, regenerated on each add
      _assets/qc.js, qc.css the page's code and style (no network, no CDN)
      report.json           report id (keys the browser's saved ratings) and creation date
      entries/<id>/         entry.json, image.png, overlay.png
      .sctgm-qc.lock        file lock held while an entry is added
      entries/.<id>.<writer>.part/   an entry being written or removed; <writer> names its process

Data reaches the page through ``index.js`` (a script setting a global) rather than ``fetch()``,
which Chromium refuses on ``file://`` pages. Writers take the lock, move a fully written entry
folder into place with one rename, then rewrite ``index.js`` atomically from every
``entry.json``: readers never see a partial file, and concurrent writers never lose an entry.

An entry is keyed by its image and GM mask (absolute paths): adding one for the same pair replaces
the old one (a resumed batch, or the same ``sct-gm qc`` command run twice, never lists an image
twice). A writer killed mid-write (SIGKILL, power loss) leaves an ``entries/.<id>.<writer>.part``
folder: the next writer removes it once its writer is gone (:func:`remove_stale_parts`). The writer
(host and process) is in the folder's name, given by the one mkdir or rename that creates it, so a kill
at any point leaves a part whose writer can be checked (on this host, POSIX; otherwise after an
hour); a record inside it could be missing (a kill between the mkdir and writing the record, or
part-way through removing the folder).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import secrets
import shutil
import socket
import time
import uuid
from importlib import resources
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from ..exceptions import OutputError, QcError
from ..writing import StagedFiles, folder_is_writable, remove_leftover_parts
from . import corrections

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
#: In a part folder written by an earlier sct-gm: "<host> <pid>" of its writer (now in the folder's name,
#: :func:`part_name`); still read, so that such a folder is removed once its writer is gone.
WRITER_FILE = ".writer"
#: A part folder without a writer this host can check (none recorded, or another host's) counts as
#: abandoned after this long; no writer holds the lock (LOCK_TIMEOUT_S) nearly as long.
STALE_PART_S = 3600.0
#: The writer in a part folder's name: 8 hex digits of its host name's hash, then its process id.
_PART_WRITER = re.compile(r"\.(?P<host>[0-9a-f]{8})-(?P<pid>[0-9]+)\.part$")

#: Package asset file -> path inside the QC folder.
_ASSETS = {"index.html": INDEX_HTML, "qc.js": f"{ASSETS_DIR}/qc.js", "qc.css": f"{ASSETS_DIR}/qc.css",
           "editor-canvas.js": f"{ASSETS_DIR}/editor-canvas.js", "editor.js": f"{ASSETS_DIR}/editor.js",
           "editor.css": f"{ASSETS_DIR}/editor.css"}


#: Where the report goes when the folder given holds another tool's QC report (SCT's ``sct_qc``
#: folders have their own index.html): a sub-folder, so that no file of the other tool is replaced.
SUBFOLDER = "sct-gm"
#: The names sct-gm writes at the top of a QC folder.
_OWN_NAMES = (INDEX_HTML, INDEX_JS, ASSETS_DIR, ENTRIES_DIR, REPORT_JSON)


def report_folder(qc_dir: str | os.PathLike[str]) -> Path:
    """The folder the report of ``qc_dir`` lives in: ``qc_dir`` itself, or ``qc_dir/sct-gm``
    (:data:`SUBFOLDER`) when ``qc_dir`` holds files with sct-gm's names (index.html, ...) that are
    another tool's (no sct-gm ``index.js``, ``report.json`` or lock beside them)."""
    p = Path(qc_dir)
    if not p.is_dir() or not any((p / name).exists() for name in _OWN_NAMES) or _is_sctgm_report(p):
        return p
    return p / SUBFOLDER


def _is_sctgm_report(p: Path) -> bool:
    if (p / LOCK_NAME).exists():
        return True
    try:
        with open(p / INDEX_JS, encoding="utf-8") as f:
            if f.read(32).startswith("window.SCTGM_QC"):
                return True
    except (OSError, UnicodeDecodeError):
        pass
    try:
        info = json.loads((p / REPORT_JSON).read_text(encoding="utf-8"))
        return isinstance(info, dict) and "report_id" in info
    except (OSError, ValueError, UnicodeDecodeError):
        return False


def check_qc_dir(qc_dir: str | os.PathLike[str]) -> Path:
    """Fail early, before any work, when ``qc_dir`` cannot be a QC folder (nothing is created);
    returns the folder the report goes to (:func:`report_folder`)."""
    p = Path(qc_dir)
    if p.exists() and not p.is_dir():
        raise OutputError(f"{p}: exists and is not a folder; give a folder for the QC report")
    p = report_folder(p)
    anchor = p
    while not anchor.exists() and not anchor.is_symlink():
        if anchor.parent == anchor:
            break
        anchor = anchor.parent
    if not anchor.is_dir():
        raise OutputError(f"{p}: cannot create the QC folder ({anchor} is not a folder)")
    if not folder_is_writable(anchor):
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

    ``entry["id"]`` is replaced by a fresh unique id if that folder already exists. Entries with the
    same image and GM mask (:func:`entry_key`) are replaced; part folders of killed writers removed.
    Written as a set: the entry folder, the new ``index.js`` and, where missing or outdated,
    ``report.json`` and the page's files are all written first under temporary names, then renamed
    into place; a failure before (a full disk) leaves the folder as it was. Safe for concurrent writers
    (folder lock). Returns the entry folder.
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
            remove_stale_parts(entries)
            replaced = same_key_entries(entries, entry)
            staging = entries / part_name(entry["id"])
            published = False
            try:
                with StagedFiles() as page:
                    staging.mkdir()
                    for name, data in files.items():
                        (staging / name).write_bytes(data)
                    (staging / ENTRY_JSON).write_text(json.dumps(entry, indent=1, ensure_ascii=True) + "\n")
                    _stage_page(root, page, [entry] + [e for e in read_entries(root)
                                                       if entries / str(e.get("id")) not in replaced])
                    os.replace(staging, final)
                    published = True
                    page.commit()
            except BaseException:
                shutil.rmtree(staging, ignore_errors=True)
                if published:
                    shutil.rmtree(final, ignore_errors=True)
                raise
            for old in replaced:  # after the new entry is in place: a crash here leaves a part, never a gap
                gone = old.with_name(part_name(old.name))
                os.replace(old, gone)
                shutil.rmtree(gone, ignore_errors=True)
    except Timeout:
        raise QcError(f"{root}: another process has held the QC folder lock ({LOCK_NAME}) for over "
                      f"{LOCK_TIMEOUT_S:.0f} s; if none is running, delete the lock file and retry") from None
    except OSError as exc:
        raise OutputError(f"{root}: cannot write the QC entry ({exc.strerror or exc})") from None
    return final


def entry_key(entry: dict[str, Any]) -> tuple[str, str] | None:
    """What identifies an entry: its image and GM mask (absolute paths); None for a record without them."""
    image, gmseg = entry.get("image"), entry.get("gmseg")
    return (str(image), str(gmseg)) if image and gmseg else None


def same_key_entries(entries: Path, entry: dict[str, Any]) -> list[Path]:
    """The entry folders in ``entries`` with the key of ``entry`` (:func:`entry_key`): the ones it replaces."""
    key = entry_key(entry)
    if key is None:
        return []
    out = []
    for f in sorted(entries.glob(f"*/{ENTRY_JSON}")):
        if f.parent.name.startswith("."):
            continue
        try:
            other = json.loads(f.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(other, dict) and entry_key(other) == key:
            out.append(f.parent)
    return out


def part_name(entry_id: str) -> str:
    """The name of entry ``entry_id``'s folder while this process writes or removes it: hidden (readers
    skip it), with this process as its writer (:func:`remove_stale_parts`)."""
    return f".{entry_id}.{_host_token()}-{os.getpid()}.part"


def _host_token(host: str | None = None) -> str:
    """A host (this one by default) in a part folder's name: 8 hex digits of its name's hash (a name
    may hold dots)."""
    name = socket.gethostname() if host is None else host
    return hashlib.sha256(name.encode("utf-8", "surrogateescape")).hexdigest()[:8]


def remove_stale_parts(entries: Path, max_age_s: float = STALE_PART_S) -> list[Path]:
    """Remove the ``.<id>.<writer>.part`` folders in ``entries`` whose writer is gone (:func:`_writer_gone`).
    Call with the folder lock held: every writer holds it while its part exists, so a part seen then
    is a dead writer's unless the lock failed (a file system without locks). Each is renamed to this
    process's part name before its files go, so a kill part-way leaves a part the next writer removes
    at once (not one judged by age again). Returns the folders removed (their names when found)."""
    removed = []
    for part in sorted(entries.glob(".*.part")):
        if not part.is_dir() or not _writer_gone(part, max_age_s):
            continue
        mine = part.with_name(part_name(_part_id(part.name)))
        try:
            if mine != part:
                os.replace(part, mine)
        except OSError:
            continue
        shutil.rmtree(mine, ignore_errors=True)
        if not mine.exists():
            log.debug("%s: removed, left by a QC writer that was killed", part)
            removed.append(part)
    return removed


def _part_id(name: str) -> str:
    """The entry id in a part folder's name (``.<id>.<writer>.part``, or an older ``.<id>.part``)."""
    named = _PART_WRITER.search(name)
    return name[1:named.start()] if named else name[1:-len(".part")]


def _writer_gone(part: Path, max_age_s: float) -> bool:
    """Whether the writer of the part folder ``part`` is gone: the folder is older than ``max_age_s``
    (whoever its writer: a pid reused by a live process after a reboot), or its writer, from its name
    or an older version's ``.writer`` record, is a process of this host that no longer runs (a zombie
    counts as gone; so does this process, which holds the lock and has no part yet). Another host's
    part, or any part on Windows (no probe signal), is judged by age alone."""
    try:
        if time.time() - part.stat().st_mtime > max_age_s:
            return True
    except OSError:
        return False
    host, pid = _writer_of(part)
    if host != _host_token() or pid is None or os.name != "posix":
        return False
    return pid == os.getpid() or not _process_alive(pid)


def _writer_of(part: Path) -> tuple[str | None, int | None]:
    """(host token, pid) of a part folder's writer: from its name, or the ``.writer`` record an older
    version wrote inside it; (None, None) when neither says."""
    named = _PART_WRITER.search(part.name)
    if named:
        return named["host"], int(named["pid"])
    try:
        host, pid = (part / WRITER_FILE).read_text().split()
        return _host_token(host), int(pid)
    except (OSError, ValueError):
        return None, None


def _process_alive(pid: int) -> bool:
    """Whether process ``pid`` runs: it exists and, where /proc tells, is not a zombie (a batch worker
    whose parent was killed first stays a zombie until init reaps it, which in a container may be
    never: the fault campaign saw one still there when the resumed batch wrote its entries)."""
    try:
        os.kill(pid, 0)  # signal 0: only checks that the process exists
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, owned by someone else
    except OSError:
        return True  # cannot tell: keep the folder
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            state = f.read().rpartition(b")")[2].split()[:1]  # the state follows "(command name)"
    except FileNotFoundError:
        return not os.path.exists("/proc/self/stat")  # reaped since the probe; or no /proc (macOS): running
    except OSError:
        return True
    return state not in ([b"Z"], [b"X"])


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
    """Rewrite ``index.js`` (and ``report.json`` when missing) from the entry folders (call with the
    folder lock held)."""
    root = Path(qc_dir)
    with StagedFiles() as staged:
        staged.stage(root / INDEX_JS, lambda tmp: tmp.write_text(_index_text(root, staged, read_entries(root)),
                                                                 encoding="utf-8"))
        staged.commit()
    return root / INDEX_JS


def _index_text(root: Path, staged: StagedFiles, entries: list[dict[str, Any]]) -> str:
    """The text of ``index.js`` for ``entries`` (newest first); stages a new ``report.json`` when
    the folder has none."""
    entries = sorted(entries, key=lambda e: (e.get("timestamp", 0), e.get("id", "")), reverse=True)
    # each entry with the slices a reviewer corrected (sctgm.qc.corrections; read from the saved masks'
    # sidecars, so a batch re-run that replaces an entry still shows them)
    data = {"report": _report_info(root, staged), "entries": [{**e, **corrections.index_info(e)} for e in entries]}
    # ensure_ascii: only ASCII in the script; "</" cannot close anything in a separate .js file,
    # and every string reaches the DOM through textContent.
    return "window.SCTGM_QC = " + json.dumps(data, ensure_ascii=True, separators=(",", ":")) + ";\n"


def _report_info(root: Path, staged: StagedFiles) -> dict[str, Any]:
    path = root / REPORT_JSON
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        info = {"report_id": uuid.uuid4().hex, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        staged.stage(path, lambda tmp: tmp.write_text(json.dumps(info, indent=1) + "\n"))
        return info


def install_assets(root: Path) -> None:
    """Copy the page's files from the package into the QC folder (call with the folder lock held)."""
    with StagedFiles() as staged:
        _stage_assets(root, staged)
        staged.commit()


def _stage_page(root: Path, staged: StagedFiles, entries: list[dict[str, Any]]) -> None:
    """Stage the page's files that are missing or outdated, ``report.json`` if missing, and the
    ``index.js`` of ``entries``; first remove the temporary page files of a killed writer (every
    writer stages them with the folder lock held, which the caller holds now)."""
    remove_leftover_parts([root / INDEX_JS, root / REPORT_JSON, *(root / dst for dst in _ASSETS.values())])
    _stage_assets(root, staged)
    index = _index_text(root, staged, entries)
    staged.stage(root / INDEX_JS, lambda tmp: tmp.write_text(index, encoding="utf-8"))


def _stage_assets(root: Path, staged: StagedFiles) -> None:
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
        staged.stage(target, lambda tmp, text=text: tmp.write_text(text, encoding="utf-8"))
