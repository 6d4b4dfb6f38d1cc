"""int8 graphs: ONNX Runtime's static quantisation (QDQ, per-channel int8 weights, uint8
activations) of a network's graph, BatchNorms folded first (:mod:`.fold`), calibrated on real windows.

ONNX Runtime's quantiser is used as it is (a well-kept library: calibration, QDQ placement, and the
CPU EP's fusion of QDQ pairs into its int8 convolution kernels); this module only chooses what goes
in: the folded graph, which layers stay in fp32, and the calibration windows.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np


def quantise_int8(model: Any, windows: np.ndarray, *, exclude: tuple[str, ...] = (),
                  method: str = "minmax", activations: str = "uint8") -> Any:
    """An int8 QDQ copy of ``model`` (onnx.ModelProto with input ``x``), its activation ranges taken
    on ``windows`` (N, 1, H, W float32, standardised as the network sees them). ``exclude``: node
    names left in fp32. ``method``: 'minmax', 'percentile' or 'entropy'."""
    import onnx
    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                          quantize_static)

    stack = np.asarray(windows, dtype=np.float32)

    class Reader(CalibrationDataReader):
        """One window at a time; ``set_range`` lets the quantiser reduce the ranges window by window
        (``CalibStridedMinMax``) instead of holding every activation of every window (GBs)."""

        def __init__(self) -> None:
            self.set_range(0, len(stack))

        def __len__(self) -> int:
            return len(stack)

        def set_range(self, start_index: int, end_index: int) -> None:
            self.items = iter([{"x": w[None]} for w in stack[start_index:end_index]])

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.items, None)

    methods = {"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile,
               "entropy": CalibrationMethod.Entropy}
    act = QuantType.QUInt8 if activations == "uint8" else QuantType.QInt8
    with tempfile.TemporaryDirectory(prefix="sctgm-quant-") as tmp:
        out = Path(tmp) / "int8.onnx"
        # a copy: the quantiser rewrites the proto it is given (its weights become external data)
        quantize_static(onnx.ModelProto.FromString(model.SerializeToString()), out, Reader(),
                        quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=act, weight_type=QuantType.QInt8, nodes_to_exclude=list(exclude),
                        op_types_to_quantize=["Conv"], calibrate_method=methods[method],
                        extra_options={"CalibStridedMinMax": 1, "ActivationSymmetric": False},
                        calibration_cache_path=None)
        return onnx.load(str(out))
