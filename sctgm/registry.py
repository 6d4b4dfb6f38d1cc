"""The model registry (data_registry.json) and model resolution.

Interim version: models are read from the folder named by ``SCTGM_MIRROR`` (or ``mirror=``), or from
a path given directly; verified by sha256 before use. ``sct-gm fetch-model`` (cache, downloads,
conversion to safetensors) extends this module behind the same :func:`ensure_model` call.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from .exceptions import ModelError, ModelIntegrityError, UnknownModelError

MIRROR_ENV = "SCTGM_MIRROR"


@dataclass(frozen=True)
class InstalledModel:
    """A model ready to load: where its weights are and what preprocessing it expects."""

    name: str
    version: str
    filters: int
    weights_path: Path
    weights_format: str  # "keras-hdf5" or "safetensors"
    sha256: str  # of the registered weights file the model came from
    preprocessing: dict[str, Any] = field(default_factory=dict)


def load_registry() -> dict[str, Any]:
    """The packaged data_registry.json."""
    text = resources.files("sctgm").joinpath("data_registry.json").read_text()
    return json.loads(text)


def sha256_of(path: str | os.PathLike[str], chunk_bytes: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk_bytes):
            h.update(block)
    return h.hexdigest()


def _from_path(path: Path) -> InstalledModel:
    from . import weights

    if not path.exists():
        raise UnknownModelError(f"{path}: no such model file")
    if path.suffix == ".safetensors":
        _, filters = weights.load_safetensors(path)
        fmt = "safetensors"
    else:
        _, filters = weights.state_dict_from_keras(path)
        fmt = "keras-hdf5"
    defaults = load_registry()["models"]["challenge"]["preprocessing"]
    return InstalledModel(path.stem, "user", filters, path, fmt, sha256_of(path), dict(defaults))


def ensure_model(name_or_path: str | None = None, *, mirror: str | None = None,
                 cache_dir: str | None = None) -> InstalledModel:
    """Resolve a registered model name (default: the registry's default) or a path to weights."""
    reg = load_registry()
    name = name_or_path or reg["default"]
    if name not in reg["models"]:
        p = Path(name).expanduser()
        if p.suffix in (".hdf5", ".h5", ".safetensors") or p.exists():
            return _from_path(p)
        raise UnknownModelError(f"unknown model '{name}'; registered models: {', '.join(sorted(reg['models']))}")
    entry = reg["models"][name]
    wfile = next(f for f in entry["files"] if f["role"] == "weights")
    source = mirror or os.environ.get(MIRROR_ENV)
    if not source:
        raise ModelError(f"model '{name}' is not installed; set {MIRROR_ENV} to a folder holding {wfile['name']}")
    path = Path(source) / wfile["name"]
    if not path.is_file():
        raise ModelError(f"model '{name}': {path} not found")
    if sha256_of(path) != wfile["sha256"]:
        raise ModelIntegrityError(f"model '{name}': {path} does not match its registered sha256")
    return InstalledModel(name, entry["version"], int(entry["architecture"]["filters"]), path,
                          wfile["format"], wfile["sha256"], dict(entry["preprocessing"]))
