"""Read the published Keras 2 HDF5 weights into the state dict of :mod:`sctgm.networks.dilated`, and
save/load state dicts as safetensors (which load without unpickling).

The Keras file needs only h5py: each layer's arrays sit at ``model_weights/<layer>/<layer>/<array>:0``.
Keras kernels are (kh, kw, in, out) in cross-correlation form, exactly what PyTorch's Conv2d computes
once transposed to (out, in, kh, kw); no spatial flip is needed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from ..exceptions import ModelError
from ..filesystem import read_small_json
from ..networks.dilated import ASPP_BRANCHES
from .registry import WEIGHTS_FILE

# Keras BatchNormalization layers were numbered in creation order; this maps our module paths onto
# them. The ASPP branches' first layers were created before their second layers, interleaved.
_BN_OF_CONV: dict[str, str] = {
    "conv2d_1": "batch_normalization_1",
    "conv2d_2": "batch_normalization_2",
    "rate2_1": "batch_normalization_3",
    "rate2_2": "batch_normalization_4",
    "amort": "batch_normalization_16",
}
for _i, (_name, _, _) in enumerate(ASPP_BRANCHES):
    _BN_OF_CONV[f"{_name}_1"] = f"batch_normalization_{5 + 2 * _i}"
    _BN_OF_CONV[f"{_name}_2"] = f"batch_normalization_{6 + 2 * _i}"
_CONCAT_BN = "batch_normalization_15"


def _module_path(keras_conv: str) -> str:
    """Our module path for a Keras convolution layer name, e.g. rate6_2 -> branches.rate6.1."""
    for name, _, _ in ASPP_BRANCHES:
        if keras_conv.startswith(name + "_"):
            return f"branches.{name}.{int(keras_conv[len(name) + 1:]) - 1}"
    return keras_conv


def keras_layer_arrays(path: str | Path) -> dict[str, dict[str, np.ndarray]]:
    """All weight arrays of a Keras HDF5 file: {layer: {array name without ':0': array}}."""
    import h5py

    try:
        with h5py.File(path, "r") as f:
            group = f["model_weights"] if "model_weights" in f else f
            out: dict[str, dict[str, np.ndarray]] = {}
            for layer in group:
                arrays: dict[str, np.ndarray] = {}

                def visit(name: str, obj: object, arrays: dict[str, np.ndarray] = arrays) -> None:
                    if isinstance(obj, h5py.Dataset):
                        arrays[name.rsplit("/", 1)[-1].split(":")[0]] = np.asarray(obj)

                group[layer].visititems(visit)
                if arrays:
                    out[layer] = arrays
            return out
    except OSError as exc:
        raise ModelError(f"{path}: not a readable Keras HDF5 weight file ({exc})") from exc


def state_dict_from_keras(path: str | Path) -> tuple[dict[str, "np.ndarray"], int]:
    """Convert a published Keras HDF5 file into a dilated-network state dict (numpy arrays) and the
    number of filters it implies."""
    layers = keras_layer_arrays(path)
    try:
        filters = int(layers["conv2d_1"]["kernel"].shape[-1])
        sd: dict[str, np.ndarray] = {}

        def put_bn(prefix: str, bn: dict[str, np.ndarray]) -> None:
            sd[f"{prefix}.weight"] = bn["gamma"]
            sd[f"{prefix}.bias"] = bn["beta"]
            sd[f"{prefix}.running_mean"] = bn["moving_mean"]
            sd[f"{prefix}.running_var"] = bn["moving_variance"]

        for keras_conv, keras_bn in _BN_OF_CONV.items():
            prefix = _module_path(keras_conv)
            sd[f"{prefix}.conv.weight"] = layers[keras_conv]["kernel"].transpose(3, 2, 0, 1)
            sd[f"{prefix}.conv.bias"] = layers[keras_conv]["bias"]
            put_bn(f"{prefix}.bn", layers[keras_bn])
        put_bn("concat_bn", layers[_CONCAT_BN])
        sd["predictions.weight"] = layers["predictions"]["kernel"].transpose(3, 2, 0, 1)
        sd["predictions.bias"] = layers["predictions"]["bias"]
    except KeyError as exc:
        raise ModelError(f"{path}: layer or array {exc} missing; not a deepseg_gm model") from exc
    sd = {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in sd.items()}
    return sd, filters


def safetensors_bytes(state_dict: dict[str, np.ndarray], metadata: dict[str, str]) -> bytes:
    """The safetensors file of a state dict, the same bytes for the same arrays in every process.

    safetensors writes its metadata from a Rust hash map whose order changes from one process to the
    next (two saves of the same weights differed, so did their sha256 and every record keyed on it);
    the JSON header is written again here with sorted keys, padded with spaces to a multiple of 8 bytes
    as the format requires. The arrays' bytes and offsets are safetensors' own."""
    from safetensors.numpy import save

    raw = save(state_dict, metadata=metadata)
    n = int.from_bytes(raw[:8], "little")
    header = json.dumps(json.loads(raw[8:8 + n]), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    encoded = header.encode("utf-8")
    encoded += b" " * (-len(encoded) % 8)
    return len(encoded).to_bytes(8, "little") + encoded + raw[8 + n:]


def save_safetensors(state_dict: dict[str, np.ndarray], filters: int, path: str | Path) -> None:
    """Write a state dict as safetensors, with the filter count in its metadata (deterministic bytes:
    :func:`safetensors_bytes`)."""
    Path(path).write_bytes(safetensors_bytes(state_dict, {"filters": str(filters), "format": "sctgm-dilated-v1"}))


def load_safetensors(path: str | Path) -> tuple[dict[str, np.ndarray], int]:
    """Read a state dict written by :func:`save_safetensors` (no unpickling involved)."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="numpy") as f:
            meta = f.metadata() or {}
            sd = {k: f.get_tensor(k) for k in f.keys()}
        return sd, int(meta["filters"])
    except Exception as exc:  # safetensors raises several types on a damaged file
        raise ModelError(f"{path}: not a readable sct-gm safetensors model ({exc})") from exc


def read_preprocessing_json(path: str | Path) -> dict[str, float]:
    """The published ``<model>.json`` (filters, training mean/std)."""
    return json.loads(Path(path).read_text())


def check_architecture(declared: dict[str, object], state_dict: dict[str, np.ndarray], origin: str) -> None:
    """Refuse (:class:`ModelError`) a model whose registered ``architecture`` is not the network its
    weights fit (asked of the network module, :mod:`sctgm.networks`): found when the model is loaded,
    not after training on it or halfway through a segmentation."""
    from ..networks import network_for, recognise

    net = network_for(declared, origin)
    actual = net.recognise(state_dict)
    wanted = None if actual is None else {**{k: declared.get(k, net.defaults.get(k)) for k in actual}, "name": net.name}
    if actual is None or wanted != actual:
        try:
            found = _describe(recognise(state_dict))
        except ModelError:
            found = "of no network this sct-gm knows"
        shown = wanted or {"name": net.name, **{k: v for k, v in declared.items() if k not in ("name", "module")}}
        raise ModelError(f"{origin}: the model's architecture {_describe(shown)} does not match its weights, which are "
                         f"{found}; the model file is inconsistent")


def _describe(architecture: dict[str, object]) -> str:
    return " ".join(f"{k} {v}" for k, v in architecture.items())


# ------------------------------------------------------------------------ install (sctgm.model.install)

def convert_for_install(name: str, entry: dict[str, Any], tmp: Path) -> int:
    """Write ``tmp/model.safetensors`` from the registered weights, re-read it and compare every
    array; returns the number of filters."""
    wfile = next(f for f in entry["files"] if f["role"] == "weights")
    src = tmp / wfile["name"]
    if wfile["name"] == WEIGHTS_FILE:  # a trained model's own safetensors file: verified, used as is
        sd, filters = load_safetensors(src)
        check_architecture(entry["architecture"], sd, f"model '{name}'")
        return _check_filters(name, entry, tmp, filters)
    if wfile["format"] == "keras-hdf5":
        sd, filters = state_dict_from_keras(src)
    else:
        sd, filters = load_safetensors(src)
    check_architecture(entry["architecture"], sd, f"model '{name}'")
    save_safetensors(sd, filters, tmp / WEIGHTS_FILE)
    back, back_filters = load_safetensors(tmp / WEIGHTS_FILE)
    same = back_filters == filters and back.keys() == sd.keys() and all(
        back[k].dtype == sd[k].dtype and back[k].shape == sd[k].shape and (back[k] == sd[k]).all()
        for k in sd)
    if not same:
        raise ModelError(f"model '{name}': the converted {WEIGHTS_FILE} differs from {wfile['name']}")
    return _check_filters(name, entry, tmp, filters)


def _check_filters(name: str, entry: dict[str, Any], tmp: Path, filters: int) -> int:
    """The weights' width must be the registry's, and any JSON metadata file's ``filters`` (the
    published ``*_model.json``) with it."""
    expected = int(entry["architecture"]["filters"])
    for f in entry["files"]:
        if f.get("role") != "metadata" or f.get("format") != "json":
            continue
        meta = read_small_json(tmp / f["name"])
        said = meta.get("filters", filters) if isinstance(meta, dict) else None
        if not isinstance(said, int) or isinstance(said, bool):
            raise ModelError(f"model '{name}': its metadata file {f['name']} is not a JSON object with an "
                             f"integer 'filters'; fix the model's files or its registry entry")
        if said != expected:
            raise ModelError(f"model '{name}': {f['name']} says {said} filters, the registry says {expected}")
    if filters != expected:
        raise ModelError(f"model '{name}': weights have {filters} filters, the registry says {expected}")
    return filters
