"""int8 CPU path: the aggregator's Linear layers dynamically quantised (model/quantization.py)."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from vggt_blender.engine.devices import DeviceError, choose_precision, precision_name, uses_autocast
from vggt_blender.model import VGGT, VGGTConfig, ExecutionMode
from vggt_blender.model.quantization import is_int8, quantize_aggregator_int8

TINY = Path(__file__).parent / "fixtures" / "parity" / "tiny"


@pytest.fixture(scope="module")
def model(tiny_vggt) -> VGGT:
    return tiny_vggt


def test_int8_quantises_only_the_aggregator_linears_and_stays_close(model):
    from torch.ao.nn.quantized.dynamic import Linear as DynamicLinear

    linears = sum(isinstance(m, nn.Linear) for m in model.aggregator.modules())
    q8 = quantize_aggregator_int8(copy.deepcopy(model))
    assert is_int8(q8) and not is_int8(model)
    assert sum(isinstance(m, DynamicLinear) for m in q8.aggregator.modules()) == linears
    assert not any(isinstance(m, nn.Linear) for m in q8.aggregator.modules())
    assert q8.aggregator.patch_embed.patch_embed.proj.weight.dtype == torch.float32  # the conv is left alone
    assert not any(isinstance(m, DynamicLinear) for h in (q8.camera_head, q8.depth_head, q8.track_head)
                   for m in h.modules())  # every head keeps its float32 layers
    cases = load_file(str(TINY / "cases.safetensors"))
    images, queries = cases["case0.images"].float(), cases["case0.query_points"].float()
    with torch.no_grad():
        ref = model(images, query_points=queries)
        for execution in (None, ExecutionMode(lean=True, token_chunk=50, head_frames=2)):
            out = q8(images, query_points=queries, execution=execution)
            errors = {k: ((out[k] - ref[k]).abs().max() / ref[k].abs().max()).item()
                      for k in ("pose_enc", "depth", "world_points", "track")}
            print("int8", "lean" if execution else "plain", errors)
            # Measured on this fixture: pose 3e-2..4e-2, depth 4e-5, points 2e-4, track 1e-5 (like bf16).
            assert errors["pose_enc"] < 0.1 and errors["depth"] < 1e-3 and errors["world_points"] < 1e-3, errors
            assert errors["track"] < 1e-3 and errors["depth"] > 0, errors  # the int8 layers really ran


def test_int8_needs_a_float32_cpu_model(model):
    low = copy.deepcopy(model).set_execution(ExecutionMode(lean=True, dtype=torch.bfloat16))
    with pytest.raises(ValueError, match="needs the float32 model"):
        quantize_aggregator_int8(low)


def test_int8_precision_choice():
    assert choose_precision(torch.device("cpu"), "int8") is torch.qint8
    assert precision_name(torch.qint8) == "int8"
    assert not uses_autocast(torch.device("cpu"), torch.qint8)
    with pytest.raises(DeviceError, match="int8 .* runs on the CPU only"):
        choose_precision(torch.device("cuda"), "int8")
    assert choose_precision(torch.device("cpu"), "auto") is torch.float32  # never the default
