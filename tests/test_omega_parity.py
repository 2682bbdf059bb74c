"""Numerical parity of the tiny VGGT-Omega models against the official code's outputs
(fixtures/parity/omega_tiny, omega_tiny_text; VGGT_OMEGA_SPEC §14).

Relative error = max|ours - official| / max|official| on every stored output, float32 on the CPU
(run pytest with -s to see them). Every size comes from the fixture's config.json.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from vggt_blender.geometry import pose_encoding_to_extrinsics_intrinsics
from vggt_blender.model import VGGTOmega, VGGTOmegaConfig

PARITY = Path(__file__).parent / "fixtures" / "parity"
FIXTURES = ("omega_tiny", "omega_tiny_text")
DENSE = ("depth", "depth_conf")
TOL = 1e-5


def _load(name: str) -> tuple[VGGTOmega, dict[str, torch.Tensor]]:
    folder = PARITY / name
    model = VGGTOmega(VGGTOmegaConfig.load(folder / "config.json")).eval()
    model.load_state_dict(load_file(str(folder / "weights.safetensors")), strict=True)
    return model, load_file(str(folder / "cases.safetensors"))


@pytest.fixture(scope="module")
def fixtures() -> dict[str, tuple[VGGTOmega, dict[str, torch.Tensor], dict[str, dict[str, torch.Tensor]]]]:
    torch.set_num_threads(1)
    loaded = {}
    for name in FIXTURES:
        model, cases = _load(name)
        outputs = {}
        for case in sorted({k.split(".")[0] for k in cases}):
            with torch.no_grad():
                outputs[case] = model(cases[f"{case}.images"])
        loaded[name] = (model, cases, outputs)
    return loaded


def _errors(cases: dict[str, torch.Tensor], case: str, out: dict[str, torch.Tensor]) -> dict[str, float]:
    stride = int(cases[f"{case}.stride"][0]) if f"{case}.stride" in cases else 1
    errors = {}
    for key in sorted(k[len(case) + 5:] for k in cases if k.startswith(f"{case}.out.")):
        ours, ref = out[key], cases[f"{case}.out.{key}"]
        if key in DENSE and stride > 1:
            ours = ours[:, :, ::stride, ::stride]
        assert ours.shape == ref.shape, f"{case} {key}: shape {tuple(ours.shape)} vs {tuple(ref.shape)}"
        assert ours.dtype == torch.float32, key
        errors[key] = ((ours - ref).abs().max() / ref.abs().max()).item()
    return errors


@pytest.mark.parametrize("name", FIXTURES)
def test_every_output_of_every_case_matches_official(name, fixtures):
    _, cases, outputs = fixtures[name]
    expected_keys = {"pose_enc", "depth", "depth_conf", "camera_and_register_tokens"}
    if name == "omega_tiny_text":
        expected_keys |= {"text_alignment_embedding", "text_alignment_token"}
    for case, out in outputs.items():
        errors = _errors(cases, case, out)
        for key, err in errors.items():
            print(f"{name} {case} {key:28s} rel {err:.2e}")
        assert set(errors) == expected_keys, case
        bad = {k: v for k, v in errors.items() if not v <= TOL}
        assert not bad, (case, bad)


def test_output_shapes_follow_the_config(fixtures):
    model, cases, outputs = fixtures["omega_tiny"]
    cfg = model.config
    images = cases["case0.images"]
    batch, frames, _, height, width = images.shape
    out = outputs["case0"]
    assert out["camera_and_register_tokens"].shape == (batch, frames, 1 + cfg.num_register_tokens, 2 * cfg.embed_dim)
    assert out["pose_enc"].shape == (batch, frames, 9)
    assert out["depth"].shape == (batch, frames, height, width, 1)
    assert out["depth_conf"].shape == (batch, frames, height, width)
    assert out["depth"].min() > 0 and out["depth_conf"].min() > 1
    assert (out["pose_enc"][..., 7:] >= 0.01).all()  # the FoV floor
    assert torch.equal(out["images"], images)
    text_model, text_cases, text_outputs = fixtures["omega_tiny_text"]
    emb = text_outputs["case0"]["text_alignment_embedding"]
    assert emb.shape == (text_cases["case0.images"].shape[0], 2 * text_model.config.embed_dim)
    torch.testing.assert_close(emb.norm(dim=-1), torch.ones(emb.shape[0]))


def test_decoded_cameras_match_official(fixtures):
    _, cases, outputs = fixtures["omega_tiny"]
    for case, out in outputs.items():
        height, width = cases[f"{case}.images"].shape[-2:]
        extrinsics, intrinsics = pose_encoding_to_extrinsics_intrinsics(out["pose_enc"].numpy(), (height, width))
        np.testing.assert_allclose(extrinsics, cases[f"{case}.camera.extrinsics"].numpy(), rtol=0, atol=1e-5)
        ref_k = cases[f"{case}.camera.intrinsics"].numpy()
        np.testing.assert_allclose(intrinsics, ref_k, rtol=1e-5, atol=1e-5 * np.abs(ref_k).max())


def test_unbatched_input_and_frame_chunks_agree(fixtures):
    model, cases, outputs = fixtures["omega_tiny"]
    images = cases["case2.images"]  # 9 frames: the configured chunk of 8 splits them 8 + 1
    with torch.no_grad():
        chunked = model(images[0], frames_chunk_size=2)
        whole = model(images, frames_chunk_size=images.shape[1])
    for key in ("pose_enc", *DENSE, "camera_and_register_tokens"):
        ref = outputs["case2"][key]
        for other in (chunked[key], whole[key]):
            assert other.shape == ref.shape, key
            assert ((other - ref).abs().max() / ref.abs().max()).item() < 1e-6, key


def test_first_frame_is_the_reference(fixtures):
    # Frames 1..S-1 are interchangeable (outputs permute with them); swapping frame 0 changes everything.
    model, cases, outputs = fixtures["omega_tiny"]
    images = cases["case2.images"][:, :4]
    with torch.no_grad():
        base = model(images)
        permuted = model(images[:, [0, 2, 1, 3]])
        swapped = model(images[:, [1, 0, 2, 3]])
    torch.testing.assert_close(permuted["pose_enc"], base["pose_enc"][:, [0, 2, 1, 3]], rtol=1e-5, atol=1e-6)
    assert not torch.allclose(swapped["pose_enc"][:, 0], base["pose_enc"][:, 1], atol=1e-3)


def test_meta_built_model_loaded_with_assign_matches(fixtures):
    model, cases, outputs = fixtures["omega_tiny"]
    with torch.device("meta"):
        lean = VGGTOmega(model.config)
    lean.load_state_dict(model.state_dict(), strict=True, assign=True)
    assert not [n for n, b in lean.named_buffers() if b.is_meta]
    with torch.no_grad():
        out = lean.eval()(cases["case1.images"])
    for key in ("pose_enc", *DENSE, "camera_and_register_tokens"):
        assert torch.equal(out[key], outputs["case1"][key]), key


def test_cpu_bf16_autocast_keeps_heads_in_fp32(fixtures):
    model, cases, outputs = fixtures["omega_tiny"]
    with torch.no_grad(), torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        low = model(cases["case0.images"])
    for key in ("pose_enc", *DENSE):
        ref = outputs["case0"][key]
        assert low[key].dtype == torch.float32 and torch.isfinite(low[key]).all(), key
        rel = ((low[key] - ref).abs().max() / ref.abs().max()).item()
        print(f"bf16 autocast {key:12s} rel {rel:.2e}")
        assert 0 < rel < 0.1, (key, rel)  # the aggregator really ran in bf16, the result stays close
    # The residual stream stays fp32 under autocast (the LayerScale product promotes), as in the official model.
    assert low["camera_and_register_tokens"].dtype == torch.float32


def test_a_broken_mask_buffer_is_visible(fixtures):
    # The k-bias mask is a checkpoint buffer that matters: an unmasked k-bias moves outputs well past tolerance.
    model, cases, outputs = fixtures["omega_tiny"]
    state = model.state_dict()
    state = {k: (torch.ones_like(v) if k.endswith("frame_blocks.0.attn.qkv.bias_mask") else v) for k, v in state.items()}
    broken = VGGTOmega(model.config).eval()
    broken.load_state_dict(state, strict=True)
    with torch.no_grad():
        out = broken(cases["case1.images"])
    ref = outputs["case1"]["pose_enc"]
    assert ((out["pose_enc"] - ref).abs().max() / ref.abs().max()).item() > 1e-4


def test_model_held_in_bfloat16_runs(fixtures):
    # Not the official path (that is autocast), but a bf16-weights model must not fail on dtype mixes
    # (the RoPE tables stay float32 and the rotation casts back).
    model, cases, outputs = fixtures["omega_tiny"]
    with torch.device("meta"):
        low = VGGTOmega(model.config)
    low.load_state_dict({k: v.to(torch.bfloat16) for k, v in model.state_dict().items()}, strict=True, assign=True)
    with torch.no_grad():
        out = low.eval()(cases["case0.images"])
    for key in ("pose_enc", *DENSE):
        ref = outputs["case0"][key]
        assert out[key].dtype == torch.bfloat16 and torch.isfinite(out[key]).all(), key
        assert (out[key].float() - ref).abs().max() / ref.abs().max() < 0.1, key
