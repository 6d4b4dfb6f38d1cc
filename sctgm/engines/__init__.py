"""The network engines: ONNX Runtime (:mod:`.onnx`, the CPU default) and PyTorch (:mod:`.torch`), the
networks they build (:mod:`.architectures`, :mod:`.network`), and the choice between them
(:mod:`.choice`). Importing this package imports neither onnxruntime nor torch."""

from __future__ import annotations

from .choice import ENGINES, LoadedNetwork, ProgressCallback, choose_engine, load_network, predict

__all__ = ["ENGINES", "LoadedNetwork", "ProgressCallback", "choose_engine", "load_network", "predict"]
