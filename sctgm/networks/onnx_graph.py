"""A small writer of ONNX graphs from a state dict, shared by the network modules.

Each network writes its graph node by node with :class:`GraphBuilder` (input ``x``: N x 1 x H x W
float32, output ``prob``: the sigmoid probabilities, same shape, any N, H, W), so the torch-free CPU
engine runs it without torch. Why by hand rather than ``torch.onnx.export``: the CPU install has no
torch (``pip install sctgm``), and the hand-written graph is built in ~0.1 s from numpy arrays;
``bench/onnx_export.py`` measures both ways side by side (same probabilities to ~1e-6, same speed).
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
