"""Numerical parity of the tiny VGGT against outputs of the official code (fixtures/parity/tiny).

Relative error = max|ours - ref| / max|ref|, printed per output (run pytest with -s to see them).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from vggt_blender.model import VGGT, VGGTConfig

TINY = Path(__file__).parent / "fixtures" / "parity" / "tiny"
DENSE = ("depth", "depth_conf", "world_points", "world_points_conf")
GEOMETRY_TOL = 1e-5


@pytest.fixture(scope="module")
def model() -> VGGT:
    torch.set_num_threads(1)
    net = VGGT(VGGTConfig.load(TINY / "config.json")).eval()
    weights = {k: v.float() for k, v in load_file(str(TINY / "weights.safetensors")).items()}
    net.load_state_dict(weights, strict=True)
    return net


@pytest.fixture(scope="module")
def cases() -> dict[str, torch.Tensor]:
    return {k: v.float() if v.is_floating_point() else v for k, v in load_file(str(TINY / "cases.safetensors")).items()}


@pytest.fixture(scope="module")
def outputs(model, cases) -> dict[str, dict]:
    results = {}
    for case in ("case0", "case1"):
        with torch.no_grad():
            results[case] = model(cases[f"{case}.images"], query_points=cases.get(f"{case}.query_points"))
    return results


def _relative_errors(case: str, outputs, cases, keys) -> dict[str, float]:
    out = outputs[case]
    stride = int(cases[f"{case}.stride"][0]) if f"{case}.stride" in cases else 1
    errors = {}
    for name in sorted(k[len(case) + 5 :] for k in cases if k.startswith(f"{case}.out.")):
        base = name.split(".")[0]
        if base not in keys:
            continue
        ours = out["pose_enc_list"][int(name.split(".")[1])] if base == "pose_enc_list" else out[name]
        ref = cases[f"{case}.out.{name}"]
        if base in DENSE and stride > 1:
            ours = ours[:, :, ::stride, ::stride]
        assert ours.shape == ref.shape, f"{case} {name}: shape {tuple(ours.shape)} vs {tuple(ref.shape)}"
        assert ours.dtype == torch.float32
        errors[name] = ((ours - ref).abs().max() / ref.abs().max()).item()
    for name, err in errors.items():
        print(f"{case} {name:20s} rel {err:.2e}")
    return errors


@pytest.mark.parametrize("case", ["case0", "case1"])
def test_geometry_outputs_match_official(case, outputs, cases):
    keys = {"pose_enc", "pose_enc_list", *DENSE}
    errors = _relative_errors(case, outputs, cases, keys)
    assert len(errors) == 9  # pose_enc, 4 pose_enc_list entries, 4 dense maps
    bad = {k: v for k, v in errors.items() if not v <= GEOMETRY_TOL}
    assert not bad, bad
    assert len(outputs[case]["pose_enc_list"]) == 4


# Track parity (track, vis, conf against the official outputs) lives in test_track_parity.py.


def test_output_shapes_and_images(outputs, cases):
    out = outputs["case0"]
    assert out["pose_enc"].shape == (1, 3, 9)
    assert out["depth"].shape == (1, 3, 70, 98, 1)
    assert out["world_points"].shape == (1, 3, 70, 98, 3)
    assert out["depth_conf"].min() >= 1 and out["world_points_conf"].min() >= 1
    assert torch.equal(out["images"], cases["case0.images"])
    assert "track" not in outputs["case1"]


def test_unbatched_input_and_chunked_frames_agree(model, cases):
    images = cases["case0.images"]  # [1, 3, 3, 70, 98]
    with torch.no_grad():
        whole = model(images)
        unbatched_chunked = model(images[0], frames_chunk_size=2)
    # Per-frame head: chunking only changes conv batch sizes (kernel blocking), i.e. rounding.
    for key in ("pose_enc", *DENSE):
        assert torch.allclose(whole[key], unbatched_chunked[key], rtol=1e-6, atol=0), key


def test_aggregator_keeps_only_head_layers(model, cases):
    images = cases["case0.images"]
    with torch.no_grad():
        kept, start = model.aggregator(images, keep_layers=model.needed_layers(with_tracks=True))
        every, _ = model.aggregator(images)
    assert start == 5
    assert sorted(kept) == [4, 11, 17, 23]
    assert sorted(every) == list(range(24))
    for idx, tensor in kept.items():
        assert tensor.shape == (1, 3, 5 + 5 * 7, 128)
        assert torch.equal(tensor, every[idx])


def test_cpu_bf16_autocast_runs_heads_in_fp32(model, cases):
    images = cases["case0.images"]
    with torch.no_grad(), torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        low = model(images)
    with torch.no_grad():
        ref = model(images)
    for key in ("pose_enc", *DENSE):
        assert low[key].dtype == torch.float32, key
        assert torch.isfinite(low[key]).all(), key
        rel = ((low[key] - ref[key]).abs().max() / ref[key].abs().max()).item()
        print(f"bf16 autocast {key:18s} rel {rel:.2e}")
        assert rel < 0.1, (key, rel)
    # The aggregator itself ran in low precision: its output differs from fp32.
    assert not torch.equal(low["depth"], ref["depth"])


def test_meta_built_model_loaded_with_assign_matches(model, cases, outputs):
    # How a loader avoids allocating weights twice: build on meta, then assign the checkpoint tensors.
    with torch.device("meta"):
        lean = VGGT(VGGTConfig.load(TINY / "config.json"))
    lean.load_state_dict(model.state_dict(), strict=True, assign=True)
    with torch.no_grad():
        out = lean.eval()(cases["case0.images"])
    for key in ("pose_enc", *DENSE):
        assert torch.equal(out[key], outputs["case0"][key]), key


def test_model_held_in_bfloat16_runs(model, cases, outputs):
    # Not the official path (that is autocast), but a bf16-weights model must not fail on dtype mixes.
    with torch.device("meta"):
        low = VGGT(VGGTConfig.load(TINY / "config.json"))
    low.load_state_dict({k: v.to(torch.bfloat16) for k, v in model.state_dict().items()}, strict=True, assign=True)
    with torch.no_grad():
        out = low.eval()(cases["case0.images"])
    for key in ("pose_enc", *DENSE):
        ref = outputs["case0"][key]
        assert out[key].dtype == torch.bfloat16 and torch.isfinite(out[key]).all(), key
        assert (out[key].float() - ref).abs().max() / ref.abs().max() < 0.1, key
