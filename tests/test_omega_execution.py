"""VGGT-Omega under the memory-lean execution mode of the shared modules (model/execution.py): the same
outputs as the plain path in float32, close ones with bf16 matrices, heads in float32.

Skipped until model/execution.py (the v1 execution-mode refactor) is on the branch.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

execution = pytest.importorskip("vggt_blender.model.execution")

from vggt_blender.model import VGGTOmega, VGGTOmegaConfig  # noqa: E402

PARITY = Path(__file__).parent / "fixtures" / "parity"


def _model(name: str) -> VGGTOmega:
    model = VGGTOmega(VGGTOmegaConfig.load(PARITY / name / "config.json")).eval()
    model.load_state_dict(load_file(str(PARITY / name / "weights.safetensors")), strict=True)
    return model


@pytest.mark.parametrize("name", ["omega_tiny", "omega_tiny_text"])
@pytest.mark.parametrize("dtype,tol", [(torch.float32, 2e-6), (torch.bfloat16, 3e-2)])
def test_lean_mode_reproduces_the_official_outputs(name, dtype, tol):
    torch.set_num_threads(1)
    cases = load_file(str(PARITY / name / "cases.safetensors"))
    # Tiny token chunks and 3-frame dense chunks, so every chunked code path runs (9 frames: 3 + 3 + 3).
    model = _model(name).set_execution(execution.ExecutionMode(lean=True, dtype=dtype, token_chunk=7,
                                                               head_frames=3))
    assert model.aggregator.frame_blocks[0].attn.qkv.weight.dtype == dtype
    assert model.dense_head.proj.weight.dtype == torch.float32
    for case in sorted({k.split(".")[0] for k in cases}):
        with torch.no_grad():
            out = model(cases[f"{case}.images"])
        stride = int(cases[f"{case}.stride"][0]) if f"{case}.stride" in cases else 1
        for key in sorted(k[len(case) + 5:] for k in cases if k.startswith(f"{case}.out.")):
            ours, ref = out[key].float(), cases[f"{case}.out.{key}"]
            if key in ("depth", "depth_conf") and stride > 1:
                ours = ours[:, :, ::stride, ::stride]
            assert out[key].dtype == torch.float32, key
            rel = ((ours - ref).abs().max() / ref.abs().max()).item()
            print(f"lean {dtype} {name} {case} {key:28s} rel {rel:.2e}")
            assert rel <= tol, (case, key, rel)
