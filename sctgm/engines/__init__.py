"""The network engines: ONNX Runtime (:mod:`.onnx`, the CPU default) and PyTorch (:mod:`.torch`, with the
precision policy, :func:`.torch.precision_context`), and the choice between them (:mod:`.choice`); the
networks they run come from :mod:`sctgm.networks`. Importing this package imports neither onnxruntime
nor torch."""

from __future__ import annotations

from .choice import ENGINES, LoadedNetwork, ProgressCallback, choose_engine, load_network, predict

__all__ = ["ENGINES", "LoadedNetwork", "ProgressCallback", "choose_engine", "load_network", "predict"]
