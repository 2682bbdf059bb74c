"""Which torch device and precision to run the model on, and a readable description of the device."""

from __future__ import annotations

import torch

from ..errors import RequestError
from ..options import DEVICES as DEVICE_CHOICES, PRECISIONS as PRECISION_CHOICES

# int8 is not a compute dtype: torch.qint8 marks "float32 model, aggregator Linear layers quantised to int8".
_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32, "int8": torch.qint8}
_NAMES = {dtype: name for name, dtype in _DTYPES.items()}


class DeviceError(RequestError):
    """The requested device or precision cannot be used on this machine."""


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def choose_device(requested: str = "auto") -> torch.device:
    """CUDA if available, else Apple MPS, else CPU; an explicit choice must be usable here."""
    requested = (requested or "auto").lower()
    if requested.startswith("cuda:"):
        base = "cuda"
    else:
        base = requested
    if base not in DEVICE_CHOICES:
        raise DeviceError(f"unknown device '{requested}': choose one of {', '.join(DEVICE_CHOICES)}")
    if base == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    if base == "cuda":
        try:
            device = torch.device(requested)
        except (RuntimeError, ValueError):
            raise DeviceError(f"unknown device '{requested}': write cuda or cuda:N (N a GPU number)") from None
        if not torch.cuda.is_available():
            built = torch.version.cuda is not None
            why = ("no CUDA GPU is visible to this PyTorch" if built
                   else "this PyTorch build has no CUDA support (a CPU-only wheel)")
            raise DeviceError(f"device 'cuda' was requested but {why}; use --device auto or cpu")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise DeviceError(f"device '{requested}' does not exist: "
                              f"{torch.cuda.device_count()} CUDA device(s) visible")
        return device
    if base == "mps" and not _mps_available():
        raise DeviceError("device 'mps' was requested but Apple Metal (MPS) is not available here; "
                          "use --device auto or cpu")
    return torch.device(base)


def _compute_capability(device: torch.device) -> tuple[int, int]:
    return torch.cuda.get_device_capability(device)


def choose_precision(device: torch.device, requested: str = "auto") -> torch.dtype:
    """bf16 on CUDA compute capability >= 8.0, fp16 on older CUDA GPUs, fp32 on MPS and CPU.

    An explicit request is checked: bf16 needs an Ampere-or-newer GPU (or the CPU, where autocast
    supports it), fp16 needs CUDA or MPS.
    """
    requested = (requested or "auto").lower()
    if requested not in PRECISION_CHOICES:
        raise DeviceError(f"unknown precision '{requested}': choose one of {', '.join(PRECISION_CHOICES)}")
    kind = device.type
    if requested == "auto":
        if kind == "cuda":
            return torch.bfloat16 if _compute_capability(device) >= (8, 0) else torch.float16
        return torch.float32
    dtype = _DTYPES[requested]
    if dtype is torch.bfloat16 and kind == "cuda":
        major, minor = _compute_capability(device)
        if (major, minor) < (8, 0):
            raise DeviceError(f"precision bf16 needs a GPU with compute capability 8.0 or newer; this one "
                              f"has {major}.{minor}: use fp16 or fp32")
    if dtype is torch.bfloat16 and kind == "mps":
        raise DeviceError("precision bf16 is not supported on MPS: use fp16 or fp32")
    if dtype is torch.qint8 and kind != "cpu":
        raise DeviceError(f"precision int8 (quantised aggregator weights) runs on the CPU only, not on {kind}: "
                          "use --device cpu, or bf16/fp16 on the GPU")
    if dtype is torch.float16 and kind == "cpu":
        raise DeviceError("precision fp16 is not supported on the CPU: use fp32 (or bf16)")
    return dtype


def precision_name(dtype: torch.dtype) -> str:
    """'bf16', 'fp16', 'fp32' or 'int8'."""
    return _NAMES[dtype]


def uses_autocast(device: torch.device, dtype: torch.dtype) -> bool:
    """Reduced precision runs as autocast over fp32 weights (the heads turn it off for themselves), on the
    device types autocast supports with that dtype; anything else runs in plain fp32."""
    if dtype in (torch.float32, torch.qint8):  # int8: quantised layers, float32 activations
        return False
    if not hasattr(torch, "autocast") or not hasattr(torch.amp, "is_autocast_available"):
        return device.type in ("cuda", "cpu", "mps")
    return bool(torch.amp.is_autocast_available(device.type))


def describe_device(device: torch.device) -> str:
    """A one-line description, e.g. 'cuda:0 NVIDIA H100 80GB HBM3 (79.1 GiB, cc 9.0)'."""
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        props = torch.cuda.get_device_properties(index)
        gib = props.total_memory / 2**30
        return f"cuda:{index} {props.name} ({gib:.1f} GiB, cc {props.major}.{props.minor})"
    if device.type == "mps":
        return "mps (Apple Metal)"
    threads = torch.get_num_threads()
    return f"cpu ({threads} threads)"


def is_out_of_memory(exc: BaseException) -> bool:
    """Whether `exc` is the device running out of memory: torch's own error, or the plain RuntimeError that
    MPS and some CUDA allocator paths raise (only its text says so: torch gives it no type or code)."""
    if isinstance(exc, torch.OutOfMemoryError):
        return True
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()
