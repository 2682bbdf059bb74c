"""int8 weights for the CPU: torch's dynamic quantisation of the aggregator's Linear layers.

The aggregator holds about 72 % of VGGT-1B's parameters, nearly all in Linear layers (qkv, proj, fc1, fc2 of
the 48 alternating blocks and the 24 DINOv2 blocks). Dynamic quantisation stores those weights as int8 (one
scale per output channel) and quantises each layer's input on the fly, so the matmuls run as int8 GEMMs
(fbgemm / oneDNN). Everything else (patch conv, norms, tokens, RoPE, attention itself, every head) stays
float32. It applies to either execution mode; it is CPU only.
"""

from __future__ import annotations

import warnings

import torch
from torch import nn


def quantize_aggregator_int8(model: nn.Module) -> nn.Module:
    """Replace the aggregator's nn.Linear layers by dynamically quantised int8 ones, in place; returns `model`.

    The model must be on the CPU in float32 (quantised kernels exist only there). Irreversible: load the
    checkpoint again for float32.
    """
    aggregator = model.get_submodule("aggregator")
    params = [p for p in aggregator.parameters()]
    if any(p.device.type != "cpu" for p in params):
        raise ValueError("int8 quantisation runs on the CPU only: load the model with device='cpu'")
    if any(p.dtype != torch.float32 for p in params):
        raise ValueError("int8 quantisation needs the float32 model (not a bf16/fp16 lean mode)")
    from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

    with warnings.catch_warnings():
        # torch.ao.quantization is deprecated in favour of torchao, but is what this torch ships with.
        warnings.simplefilter("ignore")
        quantize_dynamic(aggregator, {nn.Linear: per_channel_dynamic_qconfig}, dtype=torch.qint8, inplace=True)
    return model


def is_int8(model: nn.Module) -> bool:
    """Whether `quantize_aggregator_int8` was applied to `model`."""
    from torch.ao.nn.quantized.dynamic import Linear as DynamicLinear

    return any(isinstance(m, DynamicLinear) for m in model.get_submodule("aggregator").modules())


__all__ = ["quantize_aggregator_int8", "is_int8"]
