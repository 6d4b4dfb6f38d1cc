"""What this machine offers the engines, found without importing torch: CPU cores, onnxruntime, torch, CUDA."""

from __future__ import annotations

import os
import re
import sys

from ..exceptions import InvalidOptionError


def check_device(device: str) -> str:
    """``device`` when it names a device sct-gm runs on (auto, cpu, cuda, cuda:N), else
    :class:`InvalidOptionError`: torch also parses mps, xla, meta, cpu:0 ..., none of which runs here
    (an internal error's exit code, or another engine chosen without a word)."""
    if not re.fullmatch(r"auto|cpu|cuda(:[0-9]+)?", device):
        raise InvalidOptionError(f"device {device!r}: not a device name; expected auto, cpu, cuda or cuda:N",
                                 parameter="device")
    return device


def available_cores() -> int:
    """The CPUs this process may run on (its affinity mask, which SLURM and taskset set), else all."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not on Linux
        return max(1, os.cpu_count() or 1)


def onnxruntime_available() -> bool:
    """True when onnxruntime can be imported (checked without importing it)."""
    import importlib.util

    return importlib.util.find_spec("onnxruntime") is not None


def torch_available() -> bool:
    """True when torch can be imported (checked without importing it: that takes seconds)."""
    import importlib.util

    if "torch" in sys.modules:  # imported already, or blocked (None)
        return sys.modules["torch"] is not None
    return importlib.util.find_spec("torch") is not None


#: How to get torch, said by every error about it (pyproject.toml: the 'torch' extra).
TORCH_EXTRA = "pip install 'sctgm[torch]'"


def require_torch(what: str, parameter: str | None = "engine") -> None:
    """Raise :class:`~sctgm.exceptions.MissingExtraError` (exit code 2) when torch is not installed:
    ``what`` (e.g. "sct-gm train") needs it; ``parameter``: the argument the message is about."""
    if not torch_available():
        from ..exceptions import MissingExtraError

        raise MissingExtraError(f"{what} needs PyTorch, which is not installed here: {TORCH_EXTRA} "
                                f"(segmenting on a CPU needs none)", parameter=parameter)


def cuda_may_exist() -> bool:
    """False when this machine certainly has no CUDA device, found without importing torch: none is
    visible (``CUDA_VISIBLE_DEVICES`` empty or -1), or, on Linux, the NVIDIA driver does not show
    itself in /proc or /dev. Elsewhere, torch is asked."""
    if os.environ.get("CUDA_VISIBLE_DEVICES", "unset").strip() in ("", "-1"):
        return False
    if sys.platform.startswith("linux"):
        return any(os.path.exists(p) for p in ("/proc/driver/nvidia/version", "/dev/nvidiactl", "/dev/nvidia0"))
    return sys.platform != "darwin"


#: CPU flags (as /proc/cpuinfo names them) of bf16 arithmetic: AVX-512 BF16 (Zen 4, Cooper Lake and
#: later Xeons) and AMX (Sapphire Rapids and later).
BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})


def cpu_flags() -> frozenset[str]:
    """The instruction-set flags of this CPU as Linux lists them in /proc/cpuinfo (empty elsewhere,
    or when it cannot be read: then nothing is assumed)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def cpu_has_bf16() -> bool:
    """True when this CPU has bf16 instructions (:data:`BF16_FLAGS`)."""
    return bool(BF16_FLAGS & cpu_flags())


def openvino_available() -> bool:
    """True when openvino can be imported (checked without importing it)."""
    import importlib.util

    return importlib.util.find_spec("openvino") is not None
