"""The networks: one module per kind of network, each exporting ``NETWORK``
(:class:`~sctgm.networks.base.Network`): its torch module, its ONNX graph, how its weights are
recognised and its default sizes. The model layer, the engines and training ask here; none of them
knows a network by its layers or its state-dict keys.

A registry entry names its network in ``architecture.name``. The networks sct-gm ships are the rows of
:data:`BUILTIN`; a network of your own is a module on the Python path named by the entry's
``architecture.module`` (e.g. ``{"name": "toy", "module": "my_networks.toy", "filters": 8}``), with
no change to sct-gm (docs/architecture.md, "A network"). Importing this package imports neither torch
nor onnx: each network imports them when asked for a module or a graph.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator, Mapping
from typing import Any

from ..exceptions import ModelError
from .base import Network

__all__ = ["BUILTIN", "Network", "builtin_networks", "network_for", "network_named", "recognise"]

#: registry name -> the module that holds it. Adding a shipped network: one module + one row here.
BUILTIN: dict[str, str] = {
    "perone2018-dilated": "sctgm.networks.dilated",
    "unet": "sctgm.networks.unet",
}


def _load(module: str, origin: str) -> Network:
    if module.startswith("."):  # importlib would raise TypeError: a relative name needs a package
        raise ModelError(f"{origin}: network module '{module}' is a relative name; give its full dotted name "
                         f"(e.g. 'my_networks.toy'), a module on the Python path")
    try:
        net = importlib.import_module(module).NETWORK
    except ImportError as exc:
        raise ModelError(f"{origin}: network module '{module}' cannot be imported ({exc}); install it or put "
                         f"it on the Python path") from None
    except AttributeError:
        raise ModelError(f"{origin}: module '{module}' defines no NETWORK (a sctgm.networks.Network)") from None
    if not isinstance(net, Network):
        raise ModelError(f"{origin}: {module}.NETWORK is not a sctgm.networks.Network")
    return net


def network_for(architecture: Mapping[str, Any], model: str = "?") -> Network:
    """The network an entry's ``architecture`` names (its ``module`` when given, else a
    :data:`BUILTIN` name); :class:`~sctgm.exceptions.ModelError` when none fits."""
    name = architecture.get("name")
    module = architecture.get("module")
    if isinstance(module, str) and module:
        net = _load(module, f"model '{model}'")
        if net.name != name:
            raise ModelError(f"model '{model}': module '{module}' holds network '{net.name}', not '{name}'")
        return net
    if name not in BUILTIN:
        raise ModelError(f"model '{model}': architecture '{name}' is not known to this sct-gm "
                         f"(known: {', '.join(BUILTIN)}, or a network module named by 'module'); upgrade "
                         f"sct-gm or fix the registry entry")
    return _load(BUILTIN[name], f"model '{model}'")


def network_named(name: str) -> Network:
    """A shipped network by its registry name or its ``sct-gm train --arch`` name."""
    for net in builtin_networks():
        if name in (net.name, net.train_name):
            return net
    raise ModelError(f"network {name!r}: unknown; expected one of "
                     f"{', '.join(n.train_name for n in builtin_networks())}")


def builtin_networks() -> Iterator[Network]:
    for name, module in BUILTIN.items():
        yield _load(module, f"network '{name}'")


def recognise(state_dict: Mapping[str, Any], origin: str = "weights") -> dict[str, Any]:
    """The ``architecture`` (name and sizes) of a state dict, asked of every shipped network;
    :class:`~sctgm.exceptions.ModelError` when none claims it."""
    for net in builtin_networks():
        found = net.recognise(state_dict)
        if found is not None:
            return found
    raise ModelError(f"{origin}: these weights fit none of the networks sct-gm knows "
                     f"({', '.join(BUILTIN)}); register the model with its architecture (docs/models.md)")
