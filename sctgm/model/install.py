"""The model cache: :func:`ensure_model` installs (download, convert, verify, lock) and checks models.

A registered model is installed once per cache, under ``<cache>/models/<name>/<version>/``: the
registered files as published, ``model.safetensors`` (the weights converted once, verified, loadable
without unpickling) and ``manifest.json`` (size and sha256 of every file). The folder is assembled
under a temporary name beside it and appears by one ``os.rename``, so no process ever sees half a
model; a file lock (``<cache>/models/<name>.lock``) makes concurrent installs download once. Every
use re-checks the installed files against the manifest (sha256 of a few MB).

Cache folder: explicit argument > ``SCTGM_HOME`` > the platform's user cache folder. Sources, in
order: the ``mirror`` argument, ``SCTGM_MIRROR``, then the registry's own addresses. Extra models
(e.g. user-trained ones) come from the registry file named by ``SCTGM_REGISTRY``
(:mod:`sctgm.model.registry`); see docs/models.md.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import logging
import os
import shutil
import stat
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any, Sequence

import filelock
import platformdirs

from .._version import __version__
from .download import DownloadPolicy, Expected, ProgressCallback, fetch_from_sources
from ..exceptions import DownloadError, ModelError, ModelIntegrityError, UnknownModelError
from ..filesystem import modes_from_umask, read_small_json
from . import registry
from ..recipe import Recipe
from .registry import MANIFEST_FILE, WEIGHTS_FILE, InstalledModel, ModelStatus, unknown_model

log = logging.getLogger(__name__)

HOME_ENV = "SCTGM_HOME"
MIRROR_ENV = "SCTGM_MIRROR"


def sha256_of(path: str | os.PathLike[str], chunk_bytes: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk_bytes):
            h.update(block)
    return h.hexdigest()


def resolve_cache_dir(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """The cache folder: ``cache_dir`` > ``$SCTGM_HOME`` > the user cache folder (``~/.cache/sctgm``
    on Linux). Never inside the installed package."""
    chosen = cache_dir or os.environ.get(HOME_ENV) or platformdirs.user_cache_dir("sctgm", appauthor=False)
    path = Path(chosen).expanduser().resolve()
    package = Path(__file__).resolve().parents[1]  # the sctgm package
    if path == package or package in path.parents:
        raise ModelError(f"cache folder {path} is inside the sct-gm package; choose another cache folder "
                         f"(cache_dir) or set {HOME_ENV}", parameter="cache_dir")
    return path


def install_dir(cache: Path, name: str, version: str) -> Path:
    return cache / "models" / name / version


# ------------------------------------------------------------------------------------ verification

def _integrity_error(name: str, problem: str) -> ModelIntegrityError:
    # no Python nor flags in the text: the CLI adds its own fix from `parameter` and `model` (sctgm.cli:
    # "(option --force)" or "(or run `sct-gm fetch-model NAME --force`)")
    err = ModelIntegrityError(f"model '{name}': {problem}; download it again by forcing its install",
                              parameter="force")
    err.model = name  # the CLI names its command for this (sctgm.cli)
    return err


def _manifest_files(folder: Path, name: str) -> dict[str, dict[str, Any]]:
    """manifest.json's ``files`` ({name: {size, sha256}}), read safely: a regular file of bounded size
    (a FIFO there would block every command) holding the types sct-gm writes, else an integrity error."""
    path = folder / MANIFEST_FILE
    manifest = read_small_json(path)
    files = manifest.get("files") if isinstance(manifest, dict) else None
    if not isinstance(files, dict):
        raise _integrity_error(name, f"{path} is missing, unreadable or not a manifest")
    for fname, rec in files.items():
        # plain names only: a manifest must not make sct-gm hash files outside the install folder
        if not registry.is_plain_file_name(fname) or not isinstance(rec, dict) \
                or not isinstance(rec.get("size"), int) or isinstance(rec.get("size"), bool) \
                or not isinstance(rec.get("sha256"), str):
            raise _integrity_error(name, f"{path}: the record of {fname!r} is not a file name with an integer "
                                         "'size' and a 'sha256'")
    return files


def _verify_install(folder: Path, name: str, entry: dict[str, Any]) -> None:
    """Check every installed file against manifest.json, and the manifest against the registry."""
    files = _manifest_files(folder, name)
    if WEIGHTS_FILE not in files:
        raise _integrity_error(name, f"{folder / MANIFEST_FILE} does not list {WEIGHTS_FILE}")
    for f in entry["files"]:
        if files.get(f["name"], {}).get("sha256") != f["sha256"]:
            raise _integrity_error(name, f"the install in {folder} does not match the registered {f['name']}")
    for fname, rec in files.items():
        path = folder / fname
        try:
            mode = path.stat().st_mode
        except FileNotFoundError:
            raise _integrity_error(name, f"{path} is missing") from None
        except OSError as exc:
            raise _integrity_error(name, f"{path} cannot be read ({exc.strerror or exc})") from None
        if not stat.S_ISREG(mode):  # a folder or a FIFO (opening one would block) in place of the file
            raise _integrity_error(name, f"{path} is not a regular file")
        if path.stat().st_size != rec["size"] or sha256_of(path) != rec["sha256"]:
            raise _integrity_error(name, f"{path} does not match its checksum (altered or truncated)")


def _installed(folder: Path, name: str, entry: dict[str, Any]) -> InstalledModel:
    _verify_install(folder, name, entry)
    weights = next(f for f in entry["files"] if f["role"] == "weights")
    return InstalledModel(name, str(entry["version"]), folder / WEIGHTS_FILE, "safetensors", weights["sha256"],
                          Recipe.from_entry(entry, name))


# ------------------------------------------------------------------------------------- downloading

def _installed_copies(name: str, entry: dict[str, Any], models: Path) -> list[dict[str, Any]]:
    """Install folders of other models in this cache whose manifests record every file of ``entry``
    with its registered size and sha256 (the same published weights under another name: ``large`` for
    the default ``large-ensemble``), as ``files`` sources: an offline cache that has ``large`` installs
    the default from it. The transfer verifies each file's sha256 as for any source. (The size alone
    took a fine-tuned model's weights for its init's, and warned of a failed source at each install.)"""
    wanted = {f["name"]: (f["size"], f["sha256"]) for f in entry["files"]}
    found = []
    own = models / name / str(entry["version"])
    for folder in sorted(models.glob("*/*/")):
        if folder == own or folder.name.startswith(".") or not (folder / MANIFEST_FILE).is_file():
            continue  # never its own folder (--force downloads again), nor an install under way; an
            # earlier version of the same model is a copy like any other
        try:
            recorded = _manifest_files(folder, folder.parent.name)
        except ModelIntegrityError:
            continue
        if all((recorded.get(n) or {}).get("size") == size and recorded[n].get("sha256") == sha
               and (folder / n).is_file() for n, (size, sha) in wanted.items()):
            found.append({"kind": "files", "url": str(folder), "origin": "cache"})
    return found


def _sources(entry: dict[str, Any], mirror: str | None,
             cached: Sequence[dict[str, Any]] = ()) -> list[dict[str, Any]]:
    """Registry-style sources ({kind, url, origin, optional size/sha256}) in the order they are tried:
    folders on this disk (``cached`` copies in this cache, a shipped or trained model's folder), then
    the mirrors, then the registry's addresses."""
    out: list[dict[str, Any]] = []
    for address, origin in ((mirror, "mirror"), (os.environ.get(MIRROR_ENV), MIRROR_ENV)):
        if address:
            out.append({"kind": "zip" if address.lower().endswith(".zip") else "files", "url": address,
                        "origin": origin})
    registry = [{**s, "origin": "registry"} for s in entry["sources"]]
    # a folder already on this disk (weights shipped in the package, a trained model's own folder)
    # comes before any mirror: nothing to transfer, and no mirror is expected to hold those files
    on_disk = [s for s in registry if s["kind"] == "files" and "://" not in s["url"] and Path(s["url"]).is_dir()]
    out = list(cached) + on_disk + out + [s for s in registry if s not in on_disk]
    unique: list[dict[str, Any]] = []
    for source in out:
        if all((source["kind"], source["url"]) != (u["kind"], u["url"]) for u in unique):
            unique.append(source)
    return unique


def _download(name: str, entry: dict[str, Any], tmp: Path, mirror: str | None,
              progress: ProgressCallback | None, policy: DownloadPolicy) -> list[str]:
    """Fill ``tmp`` with the registered files, verified; returns the addresses used."""
    wanted = [Expected(f["name"], f["size"], f["sha256"]) for f in entry["files"]]
    cached = _installed_copies(name, entry, tmp.parent.parent)  # tmp: <cache>/models/<name>/.tmp-*
    used, failures, missing = fetch_from_sources(wanted, _sources(entry, mirror, cached), tmp,
                                                 label=f"model '{name}'", policy=policy, progress=progress)
    if missing:
        tried = "; ".join(failures) if failures else "no source is configured"
        err = DownloadError(
            f"model '{name}': could not obtain {', '.join(missing)} from any source: {tried}. To install it "
            f"without network, put {', '.join(f['name'] for f in entry['files'])} in a folder DIR and set "
            f"{MIRROR_ENV}=DIR or pass DIR as the mirror (a base URL works too)", parameter="mirror")
        err.model = name  # the CLI names its command for this (sctgm.cli)
        raise err
    return used


def _install(name: str, entry: dict[str, Any], cache: Path, mirror: str | None,
             progress: ProgressCallback | None, policy: DownloadPolicy) -> None:
    """Build the install folder under a temporary name, then rename it into place (lock held)."""
    parent = install_dir(cache, name, str(entry["version"])).parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        for stale in parent.glob(".tmp-*"):  # left by a process killed mid-install (we hold the lock)
            shutil.rmtree(stale, ignore_errors=True)
        tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=parent))
    except OSError as exc:
        raise _unwritable_cache(name, parent, exc) from None
    final = install_dir(cache, name, str(entry["version"]))
    try:
        used = _download(name, entry, tmp, mirror, progress, policy)
        from .weights import convert_for_install

        filters = convert_for_install(name, entry, tmp)
        names = list(dict.fromkeys([f["name"] for f in entry["files"]] + [WEIGHTS_FILE]))
        manifest = {
            "manifest_version": 1, "name": name, "version": str(entry["version"]), "filters": filters,
            "weights": WEIGHTS_FILE, "weights_format": "safetensors",
            "files": {n: {"size": (tmp / n).stat().st_size, "sha256": sha256_of(tmp / n)} for n in names},
            "sources": used, "sctgm_version": __version__,
            "installed_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        }
        (tmp / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2) + "\n")
        modes_from_umask(tmp)  # readable by the group/others as the umask allows (a shared SCTGM_HOME)
        old = None
        if final.exists():
            old = Path(tempfile.mkdtemp(prefix=".tmp-old-", dir=parent))
            os.replace(final, old / "x")
        os.replace(tmp, final)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        log.info("model '%s' %s installed in %s", name, entry["version"], final)
    except OSError as exc:  # a full disk, or a cache that turned read-only
        raise _unwritable_cache(name, parent, exc) from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            parent.rmdir()  # only succeeds when nothing was installed
        except OSError:
            pass


def _lock(cache: Path, name: str, policy: DownloadPolicy) -> filelock.FileLock:
    models = cache / "models"
    try:
        models.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ModelError(f"model '{name}': cannot create the cache folder {models} ({exc}); choose "
                         f"another cache folder (cache_dir) or set {HOME_ENV}", parameter="cache_dir") from exc
    lock = filelock.FileLock(str(models / f"{name}.lock"), timeout=policy.lock_timeout_s)
    try:
        try:
            lock.acquire(timeout=0)
        except filelock.Timeout:
            log.info("model '%s': waiting for another process installing it (%s)", name, lock.lock_file)
            try:
                lock.acquire()
            except filelock.Timeout as exc:
                raise ModelError(f"model '{name}': another process held {lock.lock_file} for more than "
                                 f"{policy.lock_timeout_s:.0f} s; if none is running, delete that file") from exc
    except OSError as exc:  # a read-only cache: the model is not installed there and cannot be
        raise _unwritable_cache(name, models, exc) from None
    return lock


def _unwritable_cache(name: str, folder: Path, exc: OSError) -> ModelError:
    return ModelError(f"model '{name}': cannot write in the cache folder {folder} ({exc.strerror or exc}) to "
                      f"install it; choose another cache folder (cache_dir) or set {HOME_ENV}", parameter="cache_dir")


# -------------------------------------------------------------------------------------- public API

def _from_path(path: Path, reg: dict[str, Any]) -> InstalledModel:
    """A bare weight file, prepared as the default model is; which network it holds is asked of the
    network modules (:func:`sctgm.networks.recognise`)."""
    from ..networks import recognise
    from . import weights

    if not path.is_file():
        raise UnknownModelError(f"{path}: no such model file; give a registered model name "
                                f"({', '.join(sorted(reg['models']))}) or a .hdf5/.safetensors file")
    default = Recipe.from_entry(reg["models"][reg["default"]], reg["default"])
    if path.suffix == ".safetensors":
        sd, _ = weights.load_safetensors(path)
        fmt = "safetensors"
    else:
        sd, _ = weights.state_dict_from_keras(path)
        fmt = "keras-hdf5"
    network = recognise(sd, str(path))
    # a bare file is one network: the default's preprocessing, never its combination nor its rule back
    # to the native grid (the weights of `large` give `large`'s masks)
    return InstalledModel(path.stem, "user", path, fmt, sha256_of(path), replace(default.one_network(), network=network))


def _from_model_file(path: Path) -> InstalledModel:
    """A trained model used in place: its folder or its model.json (see :func:`registry.read_model_file`);
    every file it lists is checked against its size and sha256."""
    json_path = path / "model.json" if path.is_dir() else path
    if not json_path.is_file():
        raise UnknownModelError(f"{path}: no model.json in this folder; give a model folder written by "
                                f"`sct-gm train`, its model.json, a registered name or a weight file")
    name, entry = registry.read_model_file(json_path)
    folder = json_path.parent
    for f in entry["files"]:
        p = folder / f["name"]
        if not p.is_file() or p.stat().st_size != f["size"] or sha256_of(p) != f["sha256"]:
            raise ModelIntegrityError(f"{p}: missing or altered (its size/sha256 differ from {json_path})")
    weights = next(f for f in entry["files"] if f["role"] == "weights")
    if weights["format"] != "safetensors":
        raise ModelError(f"{json_path}: a model folder's weights must be a safetensors file")
    from .weights import check_architecture, load_safetensors

    check_architecture(entry["architecture"], load_safetensors(folder / weights["name"])[0], str(json_path))
    return InstalledModel(name, str(entry["version"]), folder / weights["name"], "safetensors", weights["sha256"],
                          Recipe.from_entry(entry, name))


def ensure_model(name_or_path: str | None = None, *, mirror: str | None = None,
                 cache_dir: str | os.PathLike[str] | None = None, progress: ProgressCallback | None = None,
                 force: bool = False, policy: DownloadPolicy | None = None) -> InstalledModel:
    """Return a verified model, installing it first if needed.

    ``name_or_path``: a registered name (default: the registry's default), a path to a ``.hdf5`` /
    ``.safetensors`` weight file, or a model folder written by ``sct-gm train`` (or its
    ``model.json``; files checked against their sha256), used in place, not cached. ``mirror``: a folder, base URL or
    ``.zip`` tried before ``$SCTGM_MIRROR`` and the registry's sources. ``progress`` receives
    :class:`~sctgm.model.download.Progress` reports while downloading (None: silent). ``force``: download
    and install again even if installed. Raises :class:`UnknownModelError`, :class:`DownloadError`
    (every source failed; the message lists each), :class:`ModelIntegrityError` (installed files
    altered) or :class:`ModelError`.
    """
    policy = policy or DownloadPolicy()
    reg = registry.load_registry()
    name = name_or_path or reg["default"]
    if name not in reg["models"]:
        path = Path(name).expanduser()
        if path.suffix == ".json" or (path.is_dir() and (path / "model.json").is_file()):
            return _from_model_file(path)
        if path.suffix in (".hdf5", ".h5", ".safetensors") or path.exists() or os.sep in name:
            return _from_path(path, reg)
        raise unknown_model(name, reg)
    return _ensure_entry(name, reg["models"][name], resolve_cache_dir(cache_dir), mirror, progress, force, policy)


def install_model_file(path: str | os.PathLike[str], *, cache_dir: str | os.PathLike[str] | None = None,
                       progress: ProgressCallback | None = None, force: bool = False,
                       policy: DownloadPolicy | None = None) -> InstalledModel:
    """Install a trained model (its folder or ``model.json``, see :func:`registry.read_model_file`) into
    the cache like a registered model (``sct-gm fetch-model MODEL_DIR``)."""
    p = Path(path).expanduser()
    name, entry = registry.read_model_file(p / "model.json" if p.is_dir() else p)
    if name in registry.packaged_names():  # same version or not: its cache folder is the shipped model's
        raise ModelError(f"{p}: model '{name}' is a name sct-gm already registers; choose another name (its "
                         "key under 'models' in model.json)")
    reg = registry.load_registry()
    if name in reg["models"] and reg["models"][name].get("version") != entry.get("version"):
        raise ModelError(f"{p}: model '{name}' is already registered with another version; rename the folder")
    return _ensure_entry(name, entry, resolve_cache_dir(cache_dir), None, progress, force, policy or DownloadPolicy())


def _ensure_entry(name: str, entry: dict[str, Any], cache: Path, mirror: str | None,
                  progress: ProgressCallback | None, force: bool, policy: DownloadPolicy) -> InstalledModel:
    final = install_dir(cache, name, str(entry["version"]))
    if not force and (final / MANIFEST_FILE).is_file():
        try:
            return _installed(final, name, entry)
        except ModelIntegrityError:
            pass  # checked again under the lock: a `--force` elsewhere may be replacing it right now
    lock = _lock(cache, name, policy)
    try:
        if not force and final.exists():
            return _installed(final, name, entry)
        _install(name, entry, cache, mirror, progress, policy)
        return _installed(final, name, entry)
    finally:
        lock.release()


def list_models(names: Sequence[str] | None = None, *,
                cache_dir: str | os.PathLike[str] | None = None) -> list[ModelStatus]:
    """The registered models (or ``names``) and whether each is installed intact in the cache."""
    reg = registry.load_registry()
    cache = resolve_cache_dir(cache_dir)
    unknown = [n for n in names or () if n not in reg["models"]]
    if unknown:
        raise unknown_model(unknown[0], reg)
    rows = []
    for name in names or sorted(reg["models"]):
        entry = reg["models"][name]
        folder = install_dir(cache, name, str(entry["version"]))
        state = "missing"
        if folder.exists():
            try:
                _verify_install(folder, name, entry)
                state = "installed"
            except ModelIntegrityError:
                state = "corrupt"
        rows.append(ModelStatus(name, str(entry["version"]), sum(f["size"] for f in entry["files"]), state,
                                folder, entry["description"], name == reg["default"]))
    return rows
