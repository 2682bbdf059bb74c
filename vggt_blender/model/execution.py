"""How the model's own modules execute: the plain path or the memory-lean one (one code path, two modes).

`ExecutionMode()` is the plain path: whole tensors, the parameters' own dtype, results as in the official
code. `ExecutionMode.lean(...)` is the same math, arranged to bound memory, for inference only:
- the aggregator's matrices (Linear and Conv weights) are held in `dtype` (bf16/fp16 on a GPU); LayerNorm,
  LayerScale, the special tokens and the position table stay float32, so they are not rounded;
- the residual stream is one float32 tensor (as the official model under autocast; `residual_dtype` can
  halve it) updated in place, and the token-wise work (norms, qkv, projection, MLP) runs over chunks of
  about `token_chunk` tokens, so the 4x-wide MLP activations never exist for all tokens at once;
- qk-norm and RoPE run in float32; q/k/v go into contiguous [B, heads, N, head_dim] buffers in `dtype`, so
  a fused SDPA kernel (cuDNN / flash / memory-efficient on CUDA, tried in `sdpa_backends` order) can take them;
- only the layers the heads read are kept (in `dtype`), and the images may stay on the host: they are
  moved to the model's device one chunk of frames at a time;
- the camera, depth and point heads run in float32, the dense ones over `head_frames` frames at a time,
  writing into preallocated outputs; the track head runs too (its feature maps per chunk of frames).

Set a mode with `VGGT.set_execution(mode)` (which also casts the aggregator's matrices) or pass
`execution=` to `VGGT.forward`; the aggregator, blocks, attention and heads honour it.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass, replace
from typing import Any, Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

log = logging.getLogger(__name__)

DEFAULT_TOKEN_CHUNK = 65536  # tokens per chunk of token-wise work (~0.5 GB of bf16 MLP activations for C=1024)
DEFAULT_HEAD_FRAMES = 8  # frames per chunk in the dense heads (the official default)
# GPUs with at most this much memory get smaller chunks (100 frames of 336x518: predicted 6.6 -> 5.4 GiB).
SMALL_GPU_BYTES = 12 * 2**30
SMALL_GPU_TOKEN_CHUNK = 16384
SMALL_GPU_HEAD_FRAMES = 2

try:  # torch >= 2.3
    from torch.nn.attention import SDPBackend, sdpa_kernel

    # cuDNN first: on Hopper it is the fastest fused kernel for head_dim 64; flash and efficient next.
    DEFAULT_SDPA_BACKENDS: tuple[Any, ...] = (
        SDPBackend.CUDNN_ATTENTION,
        SDPBackend.FLASH_ATTENTION,
        SDPBackend.EFFICIENT_ATTENTION,
        SDPBackend.MATH,
    )
except ImportError:  # pragma: no cover - old torch: PyTorch chooses
    SDPBackend = None  # type: ignore[assignment]
    sdpa_kernel = None  # type: ignore[assignment]
    DEFAULT_SDPA_BACKENDS = ()

_LOW_PRECISION = (torch.bfloat16, torch.float16)


@dataclass(frozen=True)
class ExecutionMode:
    """The plain path (default) or, with `lean=True`, the memory-lean arrangement of the same modules."""

    lean: bool = False
    dtype: torch.dtype = torch.float32  # aggregator matrices and attention inputs (lean only)
    residual_dtype: torch.dtype = torch.float32  # the residual stream (lean only)
    token_chunk: int = DEFAULT_TOKEN_CHUNK
    head_frames: int | None = DEFAULT_HEAD_FRAMES  # frames per dense-head chunk (None: all at once)
    sdpa_backends: tuple[Any, ...] = ()  # SDPA backends in priority order on CUDA; () = PyTorch's choice

    def __post_init__(self) -> None:
        if not self.lean and (self.dtype != torch.float32 or self.residual_dtype != torch.float32):
            raise ValueError("the plain execution mode computes in the parameters' dtype: use "
                             "ExecutionMode.lean(dtype) for low-precision weights, or autocast")
        for name in ("dtype", "residual_dtype"):
            if getattr(self, name) not in (torch.float32, *_LOW_PRECISION):
                raise ValueError(f"{name} must be float32, bfloat16 or float16, not {getattr(self, name)}")
        if self.token_chunk < 1:
            raise ValueError(f"token_chunk must be at least 1, not {self.token_chunk}")
        if self.head_frames is not None and self.head_frames < 1:
            raise ValueError(f"head_frames must be at least 1 or None, not {self.head_frames}")

    @classmethod
    def lean_for(cls, device: torch.device | str, dtype: torch.dtype = torch.bfloat16, **options: Any) -> "ExecutionMode":
        """The lean mode with chunk sizes and attention backends chosen for `device` (smaller on small GPUs)."""
        device = torch.device(device)
        token_chunk, head_frames = DEFAULT_TOKEN_CHUNK, DEFAULT_HEAD_FRAMES
        if device.type == "cuda" and torch.cuda.get_device_properties(device).total_memory <= SMALL_GPU_BYTES:
            token_chunk, head_frames = SMALL_GPU_TOKEN_CHUNK, SMALL_GPU_HEAD_FRAMES
        base = cls(lean=True, dtype=dtype, token_chunk=token_chunk, head_frames=head_frames,
                   sdpa_backends=DEFAULT_SDPA_BACKENDS if device.type == "cuda" else ())
        return replace(base, **{k: v for k, v in options.items() if v is not None})


PLAIN = ExecutionMode()


def is_lean(execution: ExecutionMode | None) -> bool:
    return execution is not None and execution.lean


def parse_sdpa_backends(text: str) -> tuple[Any, ...]:
    """'cudnn,flash,efficient,math' -> SDPBackend tuple (priority order); 'auto' -> () (PyTorch's own choice)."""
    if text.strip().lower() in ("", "auto", "default") or SDPBackend is None:
        return ()
    names = {"cudnn": "CUDNN_ATTENTION", "flash": "FLASH_ATTENTION", "efficient": "EFFICIENT_ATTENTION",
             "math": "MATH"}
    out = []
    for part in text.split(","):
        key = part.strip().lower()
        if key not in names:
            raise ValueError(f"unknown SDPA backend '{part}' (known: {', '.join(names)}, auto)")
        out.append(getattr(SDPBackend, names[key]))
    return tuple(out)


# Backends that failed on a shape (not for lack of memory) in this process: skipped from then on.
_REJECTED_BACKENDS: set[Any] = set()


def _sdpa_context(backends: Sequence[Any]) -> contextlib.AbstractContextManager:
    try:
        return sdpa_kernel(list(backends), set_priority=True)
    except TypeError:  # torch without set_priority: the order is PyTorch's
        return sdpa_kernel(list(backends))


def scaled_dot_product(q: Tensor, k: Tensor, v: Tensor, execution: ExecutionMode | None = None) -> Tensor:
    """SDPA on [B, heads, N, head_dim], restricted to the mode's backends on CUDA (falls back past cuDNN once)."""
    backends = tuple(b for b in (execution.sdpa_backends if execution else ()) if b not in _REJECTED_BACKENDS)
    if sdpa_kernel is None or not backends or q.device.type != "cuda":
        return F.scaled_dot_product_attention(q, k, v)
    try:
        with _sdpa_context(backends):
            return F.scaled_dot_product_attention(q, k, v)
    except RuntimeError as exc:
        out_of_memory = isinstance(exc, torch.OutOfMemoryError) or "out of memory" in str(exc).lower()
        if out_of_memory or SDPBackend.CUDNN_ATTENTION not in backends:
            raise
        log.warning("cuDNN attention failed (%s); using the other SDPA backends", str(exc).splitlines()[0])
        _REJECTED_BACKENDS.add(SDPBackend.CUDNN_ATTENTION)
        with _sdpa_context(tuple(b for b in backends if b != SDPBackend.CUDNN_ATTENTION)):
            return F.scaled_dot_product_attention(q, k, v)


def token_slices(rows: int, tokens: int, chunk: int) -> Iterator[tuple[slice, slice]]:
    """(row slice, token slice) pieces of a [rows, tokens, ...] tensor holding about `chunk` tokens each.

    Short sequences (frame attention) are grouped several rows at a time; long ones (global attention)
    are cut along the tokens.
    """
    if tokens <= chunk:
        per = max(1, chunk // tokens)
        for lo in range(0, rows, per):
            yield slice(lo, min(lo + per, rows)), slice(0, tokens)
    else:
        for r in range(rows):
            for lo in range(0, tokens, chunk):
                yield slice(r, r + 1), slice(lo, min(lo + chunk, tokens))


def lean_matrices(module: nn.Module) -> list[tuple[str, nn.Module]]:
    """(name, module) of every Linear and Conv2d under `module`: the weights the lean mode holds in low precision."""
    return [(name, m) for name, m in module.named_modules() if isinstance(m, (nn.Linear, nn.Conv2d))]


def lean_parameter_names(model: nn.Module, prefix: str = "aggregator") -> set[str]:
    """State-dict keys of the lean-mode low-precision parameters (weights and biases of the aggregator's matrices)."""
    sub = model.get_submodule(prefix)
    return {f"{prefix}.{name}.{p}" for name, m in lean_matrices(sub) for p, _ in m.named_parameters(recurse=False)}


def cast_matrices(module: nn.Module, dtype: torch.dtype) -> None:
    """Cast the Linear/Conv2d parameters under `module` to `dtype` in place (everything else is left as is)."""
    for _, m in lean_matrices(module):
        m.to(dtype=dtype)


def as_dtype_of(x: Tensor, layer: nn.Module) -> Tensor:
    """`x` in the dtype of `layer`'s weight: a no-op in the plain fp32 path, and exact under autocast (which
    casts Linear inputs down and LayerNorm inputs up itself), so the lean mode can mix dtypes without it."""
    weight = getattr(layer, "weight", None)
    if not isinstance(weight, Tensor) or x.dtype == weight.dtype:  # int8 layers: weight() is a method, fp32 in
        return x
    return x.to(weight.dtype)


__all__ = ["ExecutionMode", "PLAIN", "is_lean", "parse_sdpa_backends", "scaled_dot_product", "token_slices",
           "lean_parameter_names", "cast_matrices", "as_dtype_of", "DEFAULT_SDPA_BACKENDS", "DEFAULT_TOKEN_CHUNK",
           "DEFAULT_HEAD_FRAMES", "SMALL_GPU_TOKEN_CHUNK", "SMALL_GPU_HEAD_FRAMES", "apply_execution"]


def apply_execution(model, execution: "ExecutionMode"):
    """A model (VGGT or VGGT-Omega, with an `aggregator`) uses `execution` from now on: the aggregator's
    matrices are cast to its dtype (the heads keep theirs); the lean mode is inference only. Returns the model."""
    model.execution = execution
    base = model.aggregator.camera_token.dtype  # the plain path computes in the parameters' own dtype
    cast_matrices(model.aggregator, execution.dtype if execution.lean else base)
    if execution.lean:
        model.eval()
        model.requires_grad_(False)
    return model
