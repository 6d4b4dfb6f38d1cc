"""The model registry (data_registry.json, plus a user file named by ``SCTGM_REGISTRY``) and the records
that describe a model: :class:`InstalledModel`, :class:`ModelStatus`.

An entry says where a model's files are (URLs, size, sha256) and its recipe (:class:`sctgm.recipe.Recipe`:
which network it is, ``architecture``; how images are prepared for it, ``preprocessing``; its
``contrast`` and ``precision``), which everything above reads. Installing and verifying models is
:mod:`sctgm.model.install`'s job; see docs/models.md for the format.
"""

from __future__ import annotations

import json
import os
import re
import stat
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from ..exceptions import ModelError, UnknownModelError
from ..filesystem import MAX_JSON_BYTES
from ..recipe import DEFAULT_NETWORK, Preprocessing, Recipe

__all__ = ["InstalledModel", "ModelStatus", "Preprocessing", "Recipe", "load_registry", "read_model_file",
           "registered_names", "unknown_model"]

REGISTRY_ENV = "SCTGM_REGISTRY"
WEIGHTS_FILE = "model.safetensors"
MANIFEST_FILE = "manifest.json"
#: The registry file of a model folder (``sct-gm train`` writes it): its local sources stay in its folder.
MODEL_FILE = "model.json"
WEIGHTS_FORMATS = ("keras-hdf5", "safetensors")
#: The network of the published models (see :mod:`sctgm.networks`).
DEFAULT_ARCHITECTURE = DEFAULT_NETWORK
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")
_VERSION_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")
_FILE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")
_SHA_RE = re.compile(r"^[0-9a-f]{64}$")


# ------------------------------------------------------------------------------------------ records

@dataclass(frozen=True)
class InstalledModel:
    """A model ready to load: where its weights are (``weights_path``, a ``weights_format`` of
    :data:`WEIGHTS_FORMATS`; ``sha256`` of the registered weights file it came from) and its
    :class:`~sctgm.recipe.Recipe` (network, preprocessing, threshold, enhancement, contrast, precision)."""

    name: str
    version: str
    weights_path: Path
    weights_format: str
    sha256: str
    recipe: Recipe

    @property
    def architecture(self) -> dict[str, Any]:
        """The recipe's network: ``{"name": ..., "filters": ..., ...}`` (:mod:`sctgm.networks`)."""
        return self.recipe.network

    @property
    def filters(self) -> int:
        return int(self.recipe.network.get("filters", 0))

    @property
    def preprocessing(self) -> Preprocessing:
        return self.recipe.preprocessing


@dataclass(frozen=True)
class ModelStatus:
    """One row of ``sct-gm fetch-model --list``. ``state``: "installed", "missing" or "corrupt";
    ``size_bytes``: total of the registered files; ``path``: the install folder (present or not)."""

    name: str
    version: str
    size_bytes: int
    state: str
    path: Path
    description: str
    default: bool


# ---------------------------------------------------------------------------------------- registry

def _check_entry(name: str, entry: Any, origin: str) -> None:
    def bad(problem: str) -> ModelError:
        return ModelError(f"{origin}: model '{name}': {problem}")

    if not _NAME_RE.match(name):
        raise bad("names use letters, digits, '_' and '-' only")
    if not isinstance(entry, dict):
        raise bad("entry is not an object")
    for key in ("description", "version", "architecture", "preprocessing", "files", "sources"):
        if key not in entry:
            raise bad(f"'{key}' is missing")
    if not _VERSION_RE.match(str(entry["version"])):
        raise bad(f"version '{entry['version']}' is not a plain token")
    architecture = entry["architecture"]
    if not isinstance(architecture, dict):
        raise bad(f"'architecture' must be an object (name, filters), not {type(architecture).__name__}")
    if not isinstance(architecture.get("filters"), int) or isinstance(architecture.get("filters"), bool):
        raise bad("architecture.filters must be an integer")
    if not isinstance(architecture.get("name", DEFAULT_ARCHITECTURE), str):
        raise bad("architecture.name must be a string")
    try:
        Recipe.from_entry(entry, name)
    except ModelError as exc:
        raise ModelError(f"{origin}: {exc}") from None
    files = entry["files"]
    if not isinstance(files, list) or not files:
        raise bad("'files' must be a non-empty list")
    for f in files:
        if not isinstance(f, dict):
            raise bad(f"each entry of 'files' must be an object (name, role, format, size, sha256), not {f!r}")
        fname = f.get("name", "")
        # a trained model's folder (sct-gm train) registers its own model.safetensors as its weights
        own_weights = fname == WEIGHTS_FILE and f.get("role") == "weights" and f.get("format") == "safetensors"
        if not is_plain_file_name(fname) or fname == MANIFEST_FILE or (fname == WEIGHTS_FILE and not own_weights):
            raise bad(f"file name '{fname}' must be a plain file name other than "
                      f"{WEIGHTS_FILE}/{MANIFEST_FILE}")
        if not isinstance(f.get("size"), int) or not _SHA_RE.match(str(f.get("sha256", ""))):
            raise bad(f"file '{fname}' needs an integer 'size' and a lower-case hex 'sha256'")
    weights = [f for f in files if f.get("role") == "weights"]
    if len(weights) != 1 or weights[0].get("format") not in WEIGHTS_FORMATS:
        raise bad(f"exactly one file with role 'weights' and format in {WEIGHTS_FORMATS} is needed")
    if not isinstance(entry["sources"], list):
        raise bad(f"'sources' must be a list, not {type(entry['sources']).__name__}")
    for s in entry["sources"]:
        if not isinstance(s, dict) or s.get("kind") not in ("files", "zip") or not isinstance(s.get("url"), str):
            raise bad(f"source {s!r} needs kind 'files' or 'zip' and a 'url'")
        size = s.get("size")
        if size is not None and (not isinstance(size, int) or isinstance(size, bool) or size < 0):
            raise bad(f"source {s['url']!r}: 'size' must be a number of bytes, not {size!r}")
        if s.get("sha256") is not None and not _SHA_RE.fullmatch(str(s["sha256"])):
            raise bad(f"source {s['url']!r}: 'sha256' must be 64 lower-case hex digits, not {s['sha256']!r}")


def is_plain_file_name(name: Any) -> bool:
    """True for a file name a registry or manifest may hold: letters, digits, ``_.+-``, no folder."""
    return isinstance(name, str) and _FILE_RE.fullmatch(name) is not None


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object whose keys are all different (json keeps the last of a repeated key silently: a
    model defined twice in a registry would be half-edited without a word)."""
    seen: dict[str, Any] = {}
    for key, value in pairs:
        if key in seen:
            raise ValueError(f"'{key}' is defined twice")
        seen[key] = value
    return seen


def _read_json(text: str) -> Any:
    try:
        return json.loads(text, object_pairs_hook=_unique_keys)
    except RecursionError:  # '[[[[...' a hundred thousand deep
        raise ValueError("nested too deeply") from None


def _read_json_file(path: Path) -> Any:
    """The JSON value of a registry or model file: a regular file (a FIFO is neither opened for good nor
    waited on) of at most MAX_JSON_BYTES, each object's keys distinct. OSError or ValueError otherwise."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ValueError("not a regular file")
        if st.st_size > MAX_JSON_BYTES:
            raise ValueError(f"larger than {MAX_JSON_BYTES} bytes")
        with os.fdopen(fd, "rb", closefd=False) as fh:
            raw = fh.read(MAX_JSON_BYTES + 1)
    finally:
        os.close(fd)
    if len(raw) > MAX_JSON_BYTES:
        raise ValueError(f"larger than {MAX_JSON_BYTES} bytes")
    return _read_json(raw.decode("utf-8"))  # UnicodeDecodeError is a ValueError


def _packaged_registry() -> dict[str, Any]:
    """The packaged data_registry.json, each entry validated."""
    packaged = resources.files("sctgm").joinpath("data_registry.json")
    try:
        reg = _read_json(packaged.read_text())
    except ValueError as exc:
        raise ModelError(f"{packaged}: the packaged registry is not valid ({exc}); reinstall sct-gm") from None
    for name, entry in list(reg["models"].items()):
        _check_entry(name, entry, "data_registry.json")
        # weights shipped inside the package (large-robust): a relative folder, as in a model.json
        reg["models"][name] = _relative_sources(entry, Path(str(packaged)))
    return reg


def packaged_names() -> set[str]:
    """The names of the models sct-gm ships in its registry: no other model may take one (it would
    be installed in, or served from, that model's cache folder)."""
    return set(_packaged_registry()["models"])


def load_registry(extra: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """The packaged data_registry.json, plus the models of ``extra`` (default: ``$SCTGM_REGISTRY``),
    each entry validated. A user file may set ``default`` but not redefine a packaged model."""
    reg = _packaged_registry()
    extra = extra or os.environ.get(REGISTRY_ENV) or None
    if extra:
        try:
            user = _read_json_file(Path(extra).expanduser())
        except (OSError, ValueError) as exc:
            raise ModelError(f"{REGISTRY_ENV}={extra}: not a readable JSON registry ({exc})") from None
        models = user.get("models", {}) if isinstance(user, dict) else None
        if not isinstance(models, dict):
            raise ModelError(f"{REGISTRY_ENV}={extra}: a registry is a JSON object whose 'models' is an object "
                             "(model name: entry), as in docs/models.md")
        if not isinstance(user.get("default", ""), str):
            raise ModelError(f"{REGISTRY_ENV}={extra}: 'default' must be a model name, not "
                             f"{type(user['default']).__name__}")
        for name, entry in models.items():
            entry = _relative_sources(entry, Path(extra).expanduser())
            if name in reg["models"]:
                raise ModelError(f"{extra}: model '{name}' is already registered by sct-gm; "
                                 "choose another name")
            _check_entry(name, entry, str(extra))
            if Path(extra).name == MODEL_FILE:
                # a model folder's model.json (sct-gm train's, or one from elsewhere) is confined however
                # it is used: SCTGM_REGISTRY=MODEL_DIR/model.json must not read what `fetch-model MODEL_DIR`
                # refuses to. A registry of the user's own (any other name) may list any folder, as a
                # mirror may.
                _confine_sources(name, entry, Path(extra))
            reg["models"][name] = entry
        reg["default"] = user.get("default", reg["default"])
    if reg["default"] not in reg["models"]:
        raise ModelError(f"registry default '{reg['default']}' is not a registered model")
    return reg


def _relative_sources(entry: Any, registry_file: Path) -> Any:
    """A local source with a relative path as url (a trained model's model.json says ".", a zip beside
    it "w.zip") is relative to the registry file's folder, not to the working folder."""
    if not isinstance(entry, dict) or not isinstance(entry.get("sources"), list):
        return entry
    sources = []
    for s in entry["sources"]:
        url = s.get("url") if isinstance(s, dict) else None
        if isinstance(s, dict) and s.get("kind") in ("files", "zip") and isinstance(url, str) and "://" not in url \
                and not Path(url).expanduser().is_absolute():
            s = {**s, "url": str((registry_file.parent / url).resolve())}
        sources.append(s)
    return {**entry, "sources": sources}


def read_model_file(path: str | os.PathLike[str]) -> tuple[str, dict[str, Any]]:
    """(name, entry) of a trained model's ``model.json`` (a registry file holding one model, as
    ``sct-gm train`` writes), validated; relative sources resolved against its folder."""
    path = Path(path).expanduser()
    try:
        doc = _read_json_file(path)
        if not isinstance(doc, dict) or "models" not in doc:
            raise ValueError("no 'models' object")
        models = doc["models"]
    except (OSError, ValueError) as exc:
        raise ModelError(f"{path}: not a readable model file (a registry JSON with one model: {exc})") from None
    if not isinstance(models, dict) or len(models) != 1:
        raise ModelError(f"{path}: a model file holds exactly one model, not {len(models) if isinstance(models, dict) else '?'}")
    (name, entry), = models.items()
    _check_entry(name, entry, str(path))
    entry = _relative_sources(entry, path)
    _confine_sources(name, entry, path)
    return name, entry


def _confine_sources(name: str, entry: dict[str, Any], model_file: Path) -> None:
    """A model or registry file's local sources must lie in its own folder: a model.json from elsewhere
    (a download, a shared folder) must not make sct-gm read ``/etc`` or ``../../`` files whose sha256
    happen to match. Remote sources (http, https) are not local paths."""
    from .download import local_path

    folder = model_file.expanduser().absolute().parent.resolve()
    for s in entry["sources"]:
        local = local_path(s["url"])
        if local is None:
            continue
        where = local.resolve()
        if where != folder and folder not in where.parents:
            raise ModelError(f"{model_file}: model '{name}': source {s['url']!r} is outside the model's folder "
                             f"{folder}; a model file's local sources must be that folder or inside it")


def unknown_model(name: str, reg: dict[str, Any]) -> UnknownModelError:
    return UnknownModelError(f"unknown model '{name}'; registered models: {', '.join(sorted(reg['models']))}")


def registered_names() -> tuple[list[str], str]:
    """(sorted registered model names, the default name)."""
    reg = load_registry()
    return sorted(reg["models"]), reg["default"]


def network_record(model: InstalledModel) -> tuple[str, str]:
    """The name and version a sidecar gives the network ``model`` runs: its own, or for a
    combination's first network (``large-ensemble`` runs `large`'s weights) those of the registered
    single-network model with the same weights file and network, so that a reader is not told of a
    network that does not exist."""
    if model.recipe.combine is None:
        return model.name, model.version
    for name, entry in load_registry()["models"].items():
        weights = [f.get("sha256") for f in entry.get("files", []) if f.get("role") == "weights"]
        if entry.get("combine") is None and weights == [model.sha256] \
                and entry.get("architecture") == model.recipe.network:
            return str(name), str(entry.get("version", model.version))
    return model.name, model.version
