"""A small writer of ONNX graphs from a state dict, shared by the network modules.

Each network writes its graph node by node with :class:`GraphBuilder` (input ``x``: N x 1 x H x W
float32, output ``prob``: the sigmoid probabilities, same shape, any N, H, W), so the torch-free CPU
engine runs it without torch. Why by hand rather than ``torch.onnx.export``, measured both ways side
by side (``bench/onnx_export.py``, challenge and large, 40 real windows): the same probabilities (both
graphs within 9.8e-5 / 7.1e-5 of the torch module, 0 GM pixels differ at 0.999), the same size
(0.52 / 1.92 MB), no speed difference beyond the noise of a loaded 2-core machine (ORT ms per slice,
exported / hand-written: 1.05 and 0.71 in one run), but built in 0.04-0.3 s instead of 10-12 s and,
above all, without torch, which the CPU install (``pip install sctgm``) does not have. Kept: by hand.
"""

from __future__ import annotations

from typing import Any

import numpy as np

#: ONNX opset and IR version of every graph sct-gm writes (readable by onnxruntime >= 1.12).
OPSET = 17
IR_VERSION = 8


class GraphBuilder:
    """Collects nodes and initialisers; :meth:`finish` checks and serialises the graph."""

    def __init__(self, state_dict: dict[str, np.ndarray]) -> None:
        from onnx import helper, numpy_helper

        self.state_dict = state_dict
        self.nodes: list[Any] = []
        self.inits: list[Any] = []
        self._helper, self._numpy_helper = helper, numpy_helper

    def const(self, key: str, array: Any, dtype: Any = np.float32) -> str:
        """An initialiser named ``key`` holding ``array`` (as ``dtype``); returns its name."""
        self.inits.append(self._numpy_helper.from_array(np.ascontiguousarray(np.asarray(array), dtype=dtype), key))
        return key

    def weight(self, key: str) -> str:
        """The state dict's array ``key`` as a float32 initialiser of the same name."""
        return self.const(key, self.state_dict[key])

    def node(self, op: str, inputs: list[str], out: str, **attrs: Any) -> str:
        """A node named after its one output ``out``; returns ``out``."""
        self.nodes.append(self._helper.make_node(op, inputs, [out], name=out, **attrs))
        return out

    def batchnorm(self, src: str, prefix: str, out: str, epsilon: float) -> str:
        """Inference BatchNormalization with the state dict's ``prefix.{weight,bias,running_mean,running_var}``."""
        keys = [self.weight(f"{prefix}.{k}") for k in ("weight", "bias", "running_mean", "running_var")]
        return self.node("BatchNormalization", [src, *keys], out, epsilon=epsilon)

    def finish(self, name: str, doc: str) -> bytes:
        """The checked, serialised model (input ``x``, output ``prob``, both N x 1 x H x W float32)."""
        import onnx
        from onnx import TensorProto

        helper = self._helper
        dims = ["n", 1, "h", "w"]
        graph = helper.make_graph(self.nodes, name, [helper.make_tensor_value_info("x", TensorProto.FLOAT, dims)],
                                  [helper.make_tensor_value_info("prob", TensorProto.FLOAT, dims)], self.inits)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="sct-gm",
                                  doc_string=doc)
        model.ir_version = IR_VERSION
        onnx.checker.check_model(model)
        return model.SerializeToString()
