"""The memory-lean execution mode (model/execution.py) of the model's own modules against the plain path.

Relative error = max|lean - plain| / max|plain| per output; run with -s to see the numbers.
"""

from __future__ import annotations

import copy
import weakref
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from torch.utils._python_dispatch import TorchDispatchMode

from vggt_blender.model import VGGT, VGGTConfig
from vggt_blender.model.execution import ExecutionMode, parse_sdpa_backends
from vggt_blender.weights.loading import load_model

TINY = Path(__file__).parent / "fixtures" / "parity" / "tiny"
DENSE = ("depth", "depth_conf", "world_points", "world_points_conf")
TRACKS = ("track", "vis", "conf")
FP32_TOL = 1e-6


def lean(dtype: torch.dtype = torch.float32, **options) -> ExecutionMode:
    return ExecutionMode(lean=True, dtype=dtype, **options)


@pytest.fixture(scope="module")
def model(tiny_vggt) -> VGGT:
    return tiny_vggt


@pytest.fixture(scope="module")
def cases() -> dict[str, tuple[torch.Tensor, torch.Tensor | None]]:
    data = load_file(str(TINY / "cases.safetensors"))
    # case0: 3 frames of 70x98 with 4 query points; case1: 2 frames of 518x518, no tracks.
    return {"case0": (data["case0.images"].float(), data["case0.query_points"].float()),
            "case1": (data["case1.images"].float(), None)}


_PLAIN: dict[tuple[str, int], dict] = {}


def plain(model, cases, case: str, head_frames: int = 8) -> dict:
    """The plain path's outputs (cached), its dense heads chunked like the lean run compared with it."""
    if (case, head_frames) not in _PLAIN:
        images, queries = cases[case]
        with torch.no_grad():
            _PLAIN[case, head_frames] = model(images, query_points=queries, frames_chunk_size=head_frames)
    return _PLAIN[case, head_frames]


def _errors(out: dict, ref: dict, label: str) -> dict[str, float]:
    errors = {}
    keys = ["pose_enc", *DENSE, *(k for k in TRACKS if k in ref)]
    for key in keys:
        assert out[key].shape == ref[key].shape, key
        assert out[key].dtype == torch.float32, key
        errors[key] = ((out[key].float() - ref[key]).abs().max() / ref[key].abs().max()).item()
    for i, (a, b) in enumerate(zip(out["pose_enc_list"], ref["pose_enc_list"], strict=True)):
        errors[f"pose_enc_list.{i}"] = ((a - b).abs().max() / b.abs().max()).item()
    print(label, " ".join(f"{k}={v:.1e}" for k, v in errors.items()))
    return errors


# Chunks that do not divide the work: 3 frames in heads of 2; 40 tokens per frame (case0) cut 25+15 or 13+13+13+1
# inside frame attention, and 120 tokens of global attention cut 50+50+20, 25x4+20 or 13x9+3.
# Rounding depends on the GEMM row counts: chunks of 7, 17 or 30 tokens measured pose 5e-7..8e-7, which the track
# head's flow embedding amplifies to conf 1.4e-6 (VGGT_SPEC §13 allows 1e-4 for tracks against the official code).
@pytest.mark.parametrize("case,token_chunk,head_frames", [
    ("case0", 65536, 8), ("case0", 50, 2), ("case0", 25, 2), ("case0", 13, 1), ("case1", 1000, 1)])
def test_lean_float32_equals_plain(model, cases, case, token_chunk, head_frames):
    images, queries = cases[case]
    with torch.no_grad():
        out = model(images, query_points=queries, execution=lean(token_chunk=token_chunk, head_frames=head_frames))
    ref = plain(model, cases, case, head_frames)
    errors = _errors(out, ref, f"lean fp32 {case} token_chunk={token_chunk} head_frames={head_frames}")
    assert (queries is not None) == ("track" in errors)
    assert len(out["pose_enc_list"]) == 4
    assert max(errors.values()) <= FP32_TOL, errors
    assert out["images"] is images
    assert model.execution == ExecutionMode()  # a per-call mode does not stick


class _LayerOutputs(TorchDispatchMode):
    """Records every tensor created with the shape of one aggregated layer, [B, S, P, 2C]."""

    def __init__(self, shape: tuple[int, ...]) -> None:
        super().__init__()
        self.shape = shape
        self.storages: dict[int, weakref.ref] = {}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor) and tuple(t.shape) == self.shape:
                self.storages.setdefault(t.untyped_storage().data_ptr(), weakref.ref(t))
        return out


@pytest.mark.parametrize("with_tracks", [False, True])
def test_lean_mode_holds_only_the_kept_layers(model, cases, with_tracks):
    images, _ = cases["case0"]
    config = model.config
    # The layers the heads read, from the config (VGGT-1B: 4, 11, 17, 23; the camera head reads the last).
    kept = sorted({config.depth - 1, *config.dpt_head.intermediate_layer_idx})
    assert model.needed_layers(with_tracks) == kept
    _, frames, _, height, width = images.shape
    shape = (1, frames, 5 + (height // 14) * (width // 14), 2 * config.embed_dim)
    for execution, expected in ((lean(torch.bfloat16), len(kept)), (ExecutionMode(), config.depth)):
        with torch.no_grad(), _LayerOutputs(shape) as seen:
            keep = None if not execution.lean else model.needed_layers(with_tracks)
            tokens, start = model.aggregator(images, keep_layers=keep, execution=execution)
        # Lean: exactly one [B, S, P, 2C] tensor per kept layer was ever made. (The plain path asked for all
        # layers makes one per layer: this count sees it.)
        assert len(seen.storages) == expected, execution
        assert sorted(tokens) == (kept if execution.lean else list(range(config.depth)))
        assert start == 5
        if execution.lean:
            assert all(t.dtype == torch.bfloat16 and tuple(t.shape) == shape for t in tokens.values())
        del tokens


@pytest.mark.parametrize("residual", [torch.float32, torch.bfloat16])
def test_lean_bfloat16_is_close(model, cases, residual):
    low = copy.deepcopy(model).set_execution(lean(torch.bfloat16, residual_dtype=residual))
    agg = low.aggregator
    # The aggregator's matrices are bf16; norms, LayerScale, tokens, position table and every head stay fp32.
    assert agg.frame_blocks[0].attn.qkv.weight.dtype == torch.bfloat16
    assert agg.patch_embed.blocks[0].mlp.fc1.weight.dtype == torch.bfloat16
    assert agg.patch_embed.patch_embed.proj.weight.dtype == torch.bfloat16
    for p in (agg.frame_blocks[0].norm1.weight, agg.frame_blocks[0].attn.q_norm.weight, agg.global_blocks[0].ls1.gamma,
              agg.camera_token, agg.patch_embed.pos_embed, low.depth_head.projects[0].weight,
              low.camera_head.trunk[0].attn.qkv.weight, low.track_head.tracker.corr_mlp.fc1.weight):
        assert p.dtype == torch.float32
    # Measured on this fixture: fp32 residual ~8e-3 (pose) / ~3e-4 (dense), like autocast; bf16 residual ~3x that.
    pose_tol, dense_tol = (2e-2, 1e-3) if residual == torch.float32 else (6e-2, 3e-3)
    for case, (images, queries) in cases.items():
        with torch.no_grad():
            out = low(images, query_points=queries)
        ref = plain(model, cases, case)
        errors = _errors(out, ref, f"lean bf16 residual={residual} {case}")
        assert max(v for k, v in errors.items() if k.startswith("pose")) <= pose_tol, errors
        assert max(errors[k] for k in DENSE) <= dense_tol, errors
        if queries is not None:
            assert (out["track"] - ref["track"]).abs().max() < 0.5  # pixels
            assert torch.equal(out["track"][:, 0], queries)


def test_cpu_bfloat16_autocast_on_the_lean_mode(model, cases):
    images, queries = cases["case0"]
    with torch.no_grad(), torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        out = model(images, query_points=queries, execution=lean(token_chunk=50, head_frames=2))
    ref = plain(model, cases, "case0")
    for key in ("pose_enc", *DENSE):
        assert out[key].dtype == torch.float32, key  # the geometry heads run with autocast off
        assert torch.isfinite(out[key]).all(), key
        rel = ((out[key] - ref[key]).abs().max() / ref[key].abs().max()).item()
        print(f"lean under bf16 autocast {key:18s} rel {rel:.2e}")
        assert rel < 0.1, (key, rel)
    assert not torch.equal(out["depth"], ref["depth"])  # the aggregator did run in bf16
    # The track head runs under the caller's autocast, as in the plain path.
    assert torch.isfinite(out["track"].float()).all() and (out["track"].float() - ref["track"]).abs().max() < 0.5


def test_scenes_in_a_batch_are_independent(model, cases):
    # Global attention spans one scene: a batch of two scenes equals the two scenes run alone.
    execution = lean(token_chunk=60)
    first = cases["case0"][0][0]
    second = first.flip(0).roll(7, dims=-1).contiguous()
    with torch.no_grad():
        both = model(torch.stack([first, second]), execution=execution)
        for b, images in enumerate((first, second)):
            alone = model(images, execution=execution)  # [S, 3, H, W] input, no batch dimension
            for key in ("pose_enc", *DENSE):
                assert torch.allclose(both[key][b], alone[key][0], rtol=1e-5, atol=1e-5), key


def test_conv_patch_embed_config(cases):
    torch.manual_seed(0)
    config = VGGTConfig.load(TINY / "config.json")
    config.patch_embed.type = "conv"
    net = VGGT(config, enable_track=False).eval()
    images = cases["case0"][0]
    with torch.no_grad():
        ref = net(images)
        out = net(images, execution=lean(token_chunk=100))
    assert max(_errors(out, ref, "conv patch embed").values()) <= FP32_TOL


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_lean_load_from_checkpoint(model, cases, dtype):
    # The fixture checkpoint is fp16 on disk (values exact in fp32) and includes the track head.
    net = load_model(TINY / "config.json", TINY / "weights.safetensors", "cpu",
                     execution=ExecutionMode.lean_for("cpu", dtype))
    assert net.execution.lean and net.track_head is not None
    assert net.aggregator.global_blocks[3].mlp.fc2.weight.dtype == dtype
    assert net.point_head.scratch.output_conv1.weight.dtype == torch.float32
    assert torch.equal(net.aggregator.patch_embed.pos_embed, model.aggregator.patch_embed.pos_embed)
    assert torch.equal(net.aggregator.frame_blocks[5].ls2.gamma, model.aggregator.frame_blocks[5].ls2.gamma)
    images, queries = cases["case0"]
    with torch.no_grad():
        out = net(images, query_points=queries)
    errors = _errors(out, plain(model, cases, "case0"), f"lean load {dtype}")
    if dtype == torch.float32:
        assert max(errors.values()) <= FP32_TOL, errors
    else:
        assert max(errors[k] for k in DENSE) <= 1e-3, errors


def test_images_shape_is_checked(model):
    with pytest.raises(ValueError, match="images must be"):
        model(torch.zeros(3, 70, 98), execution=lean())
    with pytest.raises(ValueError, match="multiple of the patch size"):
        model(torch.zeros(1, 2, 3, 70, 97), execution=lean())


def test_execution_mode_is_validated():
    with pytest.raises(ValueError, match="plain execution mode"):
        ExecutionMode(dtype=torch.bfloat16)
    with pytest.raises(ValueError, match="token_chunk"):
        lean(token_chunk=0)
    with pytest.raises(ValueError, match="float32, bfloat16 or float16"):
        lean(torch.float64)
    auto = ExecutionMode.lean_for("cpu", torch.float16, token_chunk=123)
    assert auto.lean and auto.dtype == torch.float16 and auto.token_chunk == 123 and auto.sdpa_backends == ()


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
