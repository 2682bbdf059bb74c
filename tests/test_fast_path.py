"""The fast inference path (vggt_blender/model/fast_path.py) against the model's own forward.

Relative error = max|fast - ref| / max|ref| per output; run with -s to see the numbers.
"""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from vggt_blender.model import VGGT, VGGTConfig
from vggt_blender.model.fast_path import load_fast, parse_sdpa_backends, prepare_fast

TINY = Path(__file__).parent / "fixtures" / "parity" / "tiny"
OUTPUTS = ("pose_enc", "depth", "depth_conf", "world_points", "world_points_conf")
FP32_TOL = 1e-5


@pytest.fixture(scope="module")
def model() -> VGGT:
    torch.set_num_threads(1)
    net = VGGT(VGGTConfig.load(TINY / "config.json"), enable_track=False).eval()
    weights = {k: v.float() for k, v in load_file(str(TINY / "weights.safetensors")).items()
               if not k.startswith("track_head.")}
    net.load_state_dict(weights, strict=True)
    return net


@pytest.fixture(scope="module")
def cases() -> dict[str, torch.Tensor]:
    data = load_file(str(TINY / "cases.safetensors"))
    return {"case0": data["case0.images"].float(), "case1": data["case1.images"].float()}


@pytest.fixture(scope="module")
def references(model, cases) -> dict[str, dict]:
    with torch.no_grad():
        return {name: model(images) for name, images in cases.items()}


def _errors(out: dict, ref: dict, label: str) -> dict[str, float]:
    errors = {}
    for key in OUTPUTS:
        assert out[key].shape == ref[key].shape, key
        assert out[key].dtype == torch.float32, key
        errors[key] = ((out[key] - ref[key]).abs().max() / ref[key].abs().max()).item()
    for i, (a, b) in enumerate(zip(out["pose_enc_list"], ref["pose_enc_list"], strict=True)):
        errors[f"pose_enc_list.{i}"] = ((a - b).abs().max() / b.abs().max()).item()
    print(label, " ".join(f"{k}={v:.1e}" for k, v in errors.items()))
    return errors


@pytest.mark.parametrize("case", ["case0", "case1"])
@pytest.mark.parametrize("token_chunk,head_frames", [(65536, 8), (50, 1)])  # one chunk / many chunks
def test_fp32_fast_path_equals_forward(model, cases, references, case, token_chunk, head_frames):
    runner = prepare_fast(model, "cpu", torch.float32, token_chunk=token_chunk, head_frames=head_frames)
    out = runner(cases[case])
    errors = _errors(out, references[case], f"fp32 {case} chunk={token_chunk}")
    assert len(out["pose_enc_list"]) == 4
    assert max(errors.values()) <= FP32_TOL, errors
    assert out["images"] is cases[case]


@pytest.mark.parametrize("residual", [torch.float32, torch.bfloat16])
def test_bf16_fast_path_is_close(model, cases, references, residual):
    fast_model = copy.deepcopy(model)
    runner = prepare_fast(fast_model, "cpu", torch.bfloat16, residual_dtype=residual)
    # The aggregator holds bf16 weights; the heads stay fp32.
    assert fast_model.aggregator.frame_blocks[0].attn.qkv.weight.dtype == torch.bfloat16
    assert fast_model.aggregator.patch_embed.blocks[0].mlp.fc1.weight.dtype == torch.bfloat16
    assert fast_model.depth_head.projects[0].weight.dtype == torch.float32
    assert fast_model.camera_head.trunk[0].attn.qkv.weight.dtype == torch.float32
    # Measured on this fixture: fp32 residual ~8e-3 (pose) / ~3e-4 (dense), like autocast; bf16 residual ~3x that.
    pose_tol, dense_tol = (2e-2, 1e-3) if residual == torch.float32 else (6e-2, 3e-3)
    for case, images in cases.items():
        errors = _errors(runner(images), references[case], f"bf16 residual={residual} {case}")
        assert max(v for k, v in errors.items() if k.startswith("pose")) <= pose_tol, errors
        assert max(errors[k] for k in OUTPUTS[1:]) <= dense_tol, errors


def test_keeps_only_head_layers_in_low_precision(model, cases):
    runner = prepare_fast(copy.deepcopy(model), "cpu", torch.bfloat16)
    images = cases["case0"]
    steps = []
    runner.on_step = lambda done, total: steps.append((done, total))
    tokens, start = runner.aggregate(images, model.needed_layers(with_tracks=False))
    assert steps == [(i, 24) for i in range(1, 25)]
    assert sorted(tokens) == [4, 11, 17, 23]
    assert start == 5
    _, frames, _, height, width = images.shape
    for layer in tokens.values():
        assert layer.dtype == torch.bfloat16
        assert layer.shape == (1, frames, 5 + (height // 14) * (width // 14), 2 * 64)


def test_scenes_in_a_batch_are_independent(model, cases):
    # Global attention spans one scene: a batch of two scenes equals the two scenes run alone.
    runner = prepare_fast(model, "cpu", torch.float32, token_chunk=60)
    first = cases["case0"][0]
    second = first.flip(0).roll(7, dims=-1).contiguous()
    both = runner(torch.stack([first, second]))
    for b, images in enumerate((first, second)):
        alone = runner(images)  # [S, 3, H, W] input, no batch dimension
        for key in OUTPUTS:
            assert torch.allclose(both[key][b], alone[key][0], rtol=1e-5, atol=1e-5), key


def test_conv_patch_embed_config(cases):
    torch.manual_seed(0)
    config = VGGTConfig.load(TINY / "config.json")
    config.patch_embed.type = "conv"
    net = VGGT(config, enable_track=False).eval()
    images = cases["case0"]
    with torch.no_grad():
        ref = net(images)
    out = prepare_fast(net, "cpu", torch.float32, token_chunk=100)(images)
    assert max(_errors(out, ref, "conv patch embed").values()) <= FP32_TOL


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_load_fast_from_checkpoint(model, cases, references, dtype):
    # The fixture checkpoint is fp16 on disk and includes track-head keys (ignored here).
    runner = load_fast(TINY / "config.json", TINY / "weights.safetensors", "cpu", dtype)
    agg = runner.model.aggregator
    assert runner.model.track_head is None
    assert agg.global_blocks[3].mlp.fc2.weight.dtype == dtype
    assert runner.model.point_head.scratch.output_conv1.weight.dtype == torch.float32
    # The fp32 copies of the small parameters are the checkpoint's values, not bf16-rounded ones.
    assert torch.equal(runner._small["pos_embed"], model.aggregator.patch_embed.pos_embed)
    assert torch.equal(runner._frame[5].ls2, model.aggregator.frame_blocks[5].ls2.gamma)
    errors = _errors(runner(cases["case1"]), references["case1"], f"load_fast {dtype}")
    assert max(errors.values()) <= (FP32_TOL if dtype == torch.float32 else 2e-2), errors


def test_images_shape_is_checked(model):
    runner = prepare_fast(model, "cpu", torch.float32)
    with pytest.raises(ValueError, match="images must be"):
        runner(torch.zeros(3, 70, 98))
    with pytest.raises(ValueError, match="multiple of the patch size"):
        runner(torch.zeros(1, 2, 3, 70, 97))


def test_parse_sdpa_backends():
    from torch.nn.attention import SDPBackend

    assert parse_sdpa_backends("auto") == ()
    assert parse_sdpa_backends("flash, cudnn") == (SDPBackend.FLASH_ATTENTION, SDPBackend.CUDNN_ATTENTION)
    with pytest.raises(ValueError, match="unknown SDPA backend"):
        parse_sdpa_backends("fast")


def test_benchmark_script_runs_on_cpu(tmp_path):
    # The real script in a subprocess, on the tiny config at a small size: table, errors and JSON come out.
    import json
    import subprocess
    import sys

    root = Path(__file__).parent.parent
    out_json = tmp_path / "bench.json"
    cmd = [sys.executable, str(root / "bench" / "bench_inference.py"), "--config", str(TINY / "config.json"),
           "--frames", "1,2", "--size", "28x42", "--paths", "fast,fast_bf16res,fp32", "--threads", "1",
           "--ref-max-frames", "2", "--device", "cpu", "--json", str(out_json)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "error vs the fp32 path" in proc.stdout
    runs = json.loads(out_json.read_text())["runs"]
    fast = [r for r in runs if r["path"] == "fast"]
    assert [r["frames"] for r in fast] == [1, 2]
    assert all(r["status"] == "ok" and r["seconds"] > 0 and r["peak_gb"] is None for r in fast)
    assert all(0 < r["errors"]["depth"][0] < 1e-3 for r in fast)


def test_memory_estimator_counts_live_meta_storages():
    import importlib.util
    import sys

    spec = importlib.util.spec_from_file_location("bench_inference",
                                                  Path(__file__).parent.parent / "bench" / "bench_inference.py")
    bench = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("bench_inference", bench)  # dataclasses look their module up there
    spec.loader.exec_module(bench)
    weight = torch.empty(256, device="meta")  # 1 KiB that exists before: the base
    with bench.LiveTensorBytes([weight]) as tracker:
        a = torch.empty(1024, device="meta")  # 4 KiB
        b = a.view(32, 32)  # a view: no new storage
        c = a * 2  # 4 KiB more: peak 9 KiB
        del a, c
        d = b.sum(0)  # b keeps a's storage alive; d is 128 B
        del b, d
    assert tracker.base == 1024
    assert tracker.peak == 1024 + 2 * 4096
    assert tracker.live == 1024
