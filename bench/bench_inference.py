"""VGGT inference benchmark: seconds, peak GPU memory and error vs the fp32 path, per frame count and path.

Paths (--paths):
  fast          our VGGT in its lean execution mode (vggt_blender.model.execution: bf16 aggregator matrices,
                fp32 residual, chunked token-wise work, kept layers only, fp32 heads per chunk of frames)
  fast_bf16res  the same with a bf16 residual stream (less memory, ~3x the error)
  autocast      our VGGT (fp32 weights) under torch.autocast, as the official README runs it
  fp32          our VGGT in fp32 (also the reference for the error columns)
  int8          our VGGT in fp32 with the aggregator's Linear layers dynamically quantised to int8 (CPU only)
  official      the upstream code (--official DIR, commit 44b3afb) run the official way:
                no_grad + torch.cuda.amp.autocast(dtype=bf16 on Ampere+, else fp16)
All paths get the same seeded random weights (never downloads), or a real checkpoint with --weights.
See bench/README.md for the one-command GPU run.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import math
import statistics
import sys
import time
import types
import warnings
import weakref
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
from torch import nn  # noqa: E402
from torch.utils._python_dispatch import TorchDispatchMode  # noqa: E402

from vggt_blender.engine.devices import is_out_of_memory  # noqa: E402
from vggt_blender.model import VGGT, VGGTConfig  # noqa: E402
from vggt_blender.model.execution import (  # noqa: E402
    DEFAULT_HEAD_FRAMES, DEFAULT_TOKEN_CHUNK, SMALL_GPU_HEAD_FRAMES, SMALL_GPU_TOKEN_CHUNK, ExecutionMode,
    parse_sdpa_backends,
)
from vggt_blender.weights.loading import build_on_meta, load_model, model_from_state_dict  # noqa: E402

DEFAULT_FRAMES = "1,10,50,100,200,300,500,1000"
ALL_PATHS = ("fast", "fast_bf16res", "autocast", "fp32", "int8", "official")
ERROR_KEYS = (("depth", "depth"), ("points", "world_points"), ("pose", "pose_enc"))


# ----------------------------------------------------------------------------------------- helpers


def log(message: str) -> None:
    print(message, flush=True)


def parse_size(text: str) -> tuple[int, int]:
    """'336x518' -> (height, width)."""
    try:
        height, width = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise SystemExit(f"--size must be HEIGHTxWIDTH, e.g. 336x518, got {text!r}") from None
    if height % 14 or width % 14:
        raise SystemExit(f"--size {text}: height and width must be multiples of 14")
    return height, width


def choose_dtype(name: str, device: torch.device) -> torch.dtype:
    if name == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.get_device_capability(device)[0] >= 8 else torch.float16
        return torch.bfloat16  # CPUs with AMX/AVX512-BF16 run bf16 matmuls several times faster than fp32
    return {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[name]


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def free(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


is_oom = is_out_of_memory  # the engine's one out-of-memory test


def random_state_dict(cfg: VGGTConfig, seed: int, device: torch.device) -> dict[str, torch.Tensor]:
    """Seeded random weights with the model's own initialisation, kept on the CPU in fp32; track head
    excluded. Drawn on `device` (a 1.2B-parameter init is seconds on a GPU, minutes on a small CPU)."""
    torch.manual_seed(seed)
    with torch.device(device):
        model = VGGT(cfg, enable_track=False)
    sd = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    del model
    free(device)
    return sd


def checkpoint_state_dict(path: str) -> dict[str, torch.Tensor]:
    from vggt_blender.weights.loading import read_state_dict

    return {k: v.float() for k, v in read_state_dict(path).items() if not k.startswith("track_head.")}


def build_ours(cfg: VGGTConfig, sd: dict[str, torch.Tensor], device: torch.device,
               execution: ExecutionMode | None = None) -> VGGT:
    """Our VGGT on `device` (a lean `execution` puts the aggregator's matrices there in its dtype directly)."""
    return model_from_state_dict(cfg, dict(sd), device, execution=execution, enable_track=False)


# --------------------------------------------------------------------------------- official code


def _stub_module(name: str, **attrs: Any) -> None:
    module = types.ModuleType(name)
    module.__dict__.update(attrs)
    sys.modules[name] = module


def import_official(folder: str) -> types.SimpleNamespace:
    """Import the upstream `vggt` package from DIR (holding vggt/) or DIR=.../vggt itself.

    Modules the inference never uses but the upstream imports at module level (huggingface_hub for the
    hub mixin, einops for the track head) are stubbed here when missing, for this process only.
    """
    path = Path(folder).expanduser().resolve()
    if (path / "vggt" / "models" / "vggt.py").is_file():
        root = path
    elif path.name == "vggt" and (path / "models" / "vggt.py").is_file():
        root = path.parent
    else:
        raise SystemExit(f"--official {folder}: no upstream vggt package there (expected vggt/models/vggt.py)")
    for name, attrs in (("huggingface_hub", {"PyTorchModelHubMixin": type("PyTorchModelHubMixin", (), {})}),
                        ("einops", {})):
        try:
            __import__(name)
        except ImportError:
            def unavailable(*_a: Any, _n: str = name, **_k: Any) -> Any:
                raise RuntimeError(f"{_n} is stubbed by bench_inference.py (not installed)")

            _stub_module(name, rearrange=unavailable, repeat=unavailable, **attrs)
            if name == "einops":
                _stub_module("einops.layers")
                _stub_module("einops.layers.torch", Rearrange=unavailable, Reduce=unavailable)
    sys.path.insert(0, str(root))
    from vggt.heads.camera_head import CameraHead
    from vggt.heads.dpt_head import DPTHead
    from vggt.layers import MemEffAttention
    from vggt.layers import NestedTensorBlock
    from vggt.layers.vision_transformer import DinoVisionTransformer
    from vggt.models.aggregator import Aggregator
    from vggt.models.vggt import VGGT as OfficialVGGT

    return types.SimpleNamespace(VGGT=OfficialVGGT, Aggregator=Aggregator, CameraHead=CameraHead,
                                 DPTHead=DPTHead, Dino=DinoVisionTransformer, Block=NestedTensorBlock,
                                 MemEffAttention=MemEffAttention, root=root)


def build_official(ns: types.SimpleNamespace, cfg: VGGTConfig, sd: dict[str, torch.Tensor],
                   device: torch.device) -> nn.Module:
    """The upstream model for `cfg` with our state dict. VGGT-1B is the upstream constructor itself;
    other configs (the tiny test model) are assembled from upstream modules with the config's sizes."""
    if cfg.to_dict() == {**VGGTConfig.vggt_1b().to_dict(), "track_head": cfg.to_dict()["track_head"]}:
        make = partial(ns.VGGT, img_size=cfg.img_size, patch_size=cfg.patch_size, embed_dim=cfg.embed_dim,
                       enable_track=False)
        try:
            with torch.device(device):  # its random init is overwritten below; on a GPU it is fast
                model = make()
        except (RuntimeError, TypeError):  # legacy tensor constructors that refuse a default device
            model = make()
    else:
        model = ns.VGGT.__new__(ns.VGGT)
        nn.Module.__init__(model)
        pe = cfg.patch_embed
        agg = ns.Aggregator(img_size=cfg.img_size, patch_size=cfg.patch_size, embed_dim=cfg.embed_dim,
                            depth=cfg.depth, num_heads=cfg.num_heads, mlp_ratio=cfg.mlp_ratio,
                            num_register_tokens=cfg.num_register_tokens, patch_embed="conv",
                            qk_norm=cfg.qk_norm, rope_freq=cfg.rope_freq)
        if pe.type == "dinov2_reg":
            agg.patch_embed = ns.Dino(img_size=cfg.img_size, patch_size=cfg.patch_size, embed_dim=pe.embed_dim,
                                      depth=pe.depth, num_heads=pe.num_heads, mlp_ratio=pe.mlp_ratio,
                                      block_fn=partial(ns.Block, attn_class=ns.MemEffAttention),
                                      num_register_tokens=pe.num_register_tokens, interpolate_antialias=True,
                                      interpolate_offset=0.0, block_chunks=0, init_values=1.0)
            agg.patch_embed.mask_token.requires_grad_(False)
        model.aggregator = agg
        dim_in = 2 * cfg.embed_dim
        cam = cfg.camera_head
        model.camera_head = ns.CameraHead(dim_in=dim_in, trunk_depth=cam.trunk_depth, num_heads=cam.num_heads,
                                          mlp_ratio=cam.mlp_ratio)
        dpt = dict(patch_size=cfg.patch_size, features=cfg.dpt_head.features,
                   out_channels=list(cfg.dpt_head.out_channels),
                   intermediate_layer_idx=list(cfg.dpt_head.intermediate_layer_idx))
        model.point_head = ns.DPTHead(dim_in, output_dim=4, activation="inv_log", conf_activation="expp1", **dpt)
        model.depth_head = ns.DPTHead(dim_in, output_dim=2, activation="exp", conf_activation="expp1", **dpt)
        model.track_head = None
    missing, unexpected = model.load_state_dict(sd, strict=False)
    # Upstream registers the ImageNet mean/std as non-persistent buffers; nothing else may be missing.
    if missing or unexpected:
        raise SystemExit(f"official model and state dict differ: missing {missing[:3]}, unexpected {unexpected[:3]}")
    return model.to(device).eval()


# ------------------------------------------------------------------------------------------ paths


@dataclass
class RunPath:
    """One execution path: how to build it and how to call it."""

    name: str
    build: Callable[[], Any]
    call: Callable[[Any, torch.Tensor], dict]
    wants_host_images: bool = False  # the fast path copies frames to the GPU itself, chunk by chunk
    note: str = ""


def make_paths(names: list[str], cfg: VGGTConfig, sd: dict[str, torch.Tensor], device: torch.device,
               dtype: torch.dtype, args: argparse.Namespace) -> dict[str, RunPath]:
    backends = parse_sdpa_backends(args.sdpa)
    fast_opts = dict(token_chunk=args.token_chunk, head_frames=args.head_frames, sdpa_backends=backends)

    def run_fast(model: Any, images: torch.Tensor) -> dict:
        with torch.inference_mode():
            return model(images)

    def run_ours(autocast: bool) -> Callable[[Any, torch.Tensor], dict]:
        def call(model: Any, images: torch.Tensor) -> dict:
            ctx = torch.autocast(device.type, dtype=dtype) if autocast else contextlib.nullcontext()
            with torch.inference_mode(), ctx:
                return model(images)
        return call

    def run_official(model: Any, images: torch.Tensor) -> dict:
        # Exactly the upstream README recipe (on a machine without CUDA this autocast is a no-op: fp32).
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with torch.cuda.amp.autocast(dtype=dtype):
                return model(images)

    paths: dict[str, RunPath] = {}
    for name in names:
        if name == "fast":
            mode = ExecutionMode.lean_for(device, dtype, **fast_opts)
            paths[name] = RunPath(name, lambda m=mode: build_ours(cfg, sd, device, m),
                                run_fast, wants_host_images=not args.images_on_device)
        elif name == "fast_bf16res":
            mode = ExecutionMode.lean_for(device, dtype, residual_dtype=dtype, **fast_opts)
            paths[name] = RunPath(name, lambda m=mode: build_ours(cfg, sd, device, m),
                                run_fast, wants_host_images=not args.images_on_device)
        elif name == "autocast":
            paths[name] = RunPath(name, lambda: build_ours(cfg, sd, device), run_ours(True))
        elif name == "fp32":
            paths[name] = RunPath(name, lambda: build_ours(cfg, sd, device), run_ours(False))
        elif name == "int8":
            from vggt_blender.model.quantization import quantize_aggregator_int8

            paths[name] = RunPath(name, lambda: quantize_aggregator_int8(build_ours(cfg, sd, device)), run_ours(False))
        elif name == "official":
            if not args.official:
                raise SystemExit("--paths official needs --official DIR (the upstream checkout)")
            ns = import_official(args.official)
            note = "" if device.type == "cuda" else "fp32: torch.cuda.amp.autocast is a no-op without CUDA"
            paths[name] = RunPath(name, lambda: build_official(ns, cfg, sd, device), run_official, note=note)
        else:
            raise SystemExit(f"unknown path {name!r} (known: {', '.join(ALL_PATHS)})")
    return paths


# ------------------------------------------------------------------------------------ measuring


@dataclass
class Result:
    seconds: float | None = None
    peak_gb: float | None = None
    status: str = "ok"  # ok, OOM, skipped (time), error
    errors: dict[str, tuple[float, float]] = field(default_factory=dict)  # key -> (max rel, mean rel)
    versus: str = ""  # which outputs the errors are against: "fp32", or "fast" above --ref-max-frames


def relative_errors(out: dict, ref: dict) -> dict[str, tuple[float, float]]:
    """max|a-b| / max|b| and mean|a-b| / mean|b| for depth, points and pose."""
    errors = {}
    for label, key in ERROR_KEYS:
        a = out[key].detach().float().cpu()
        b = ref[key]
        diff = (a - b).abs()
        errors[label] = ((diff.max() / b.abs().max()).item(), (diff.mean() / b.abs().mean()).item())
    return errors


def keep_for_reference(out: dict) -> dict:
    return {key: out[key].detach().float().cpu() for _, key in ERROR_KEYS}


def timed_call(path: RunPath, runner: Any, images: torch.Tensor, device: torch.device) -> tuple[dict, float, float]:
    """(outputs, seconds, peak GB) of one call; CUDA events around it, peak = max_memory_allocated."""
    sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        out = path.call(runner, images)
        end.record()
        sync(device)
        return out, start.elapsed_time(end) / 1000.0, torch.cuda.max_memory_allocated(device) / 2**30
    t0 = time.perf_counter()
    out = path.call(runner, images)
    return out, time.perf_counter() - t0, float("nan")


class Budget:
    """Skips runs whose predicted time (quadratic in frames: global attention dominates) would not fit."""

    def __init__(self, seconds: float) -> None:
        self.deadline = time.monotonic() + seconds

    def left(self) -> float:
        return self.deadline - time.monotonic()

    @staticmethod
    def predict(history: list[tuple[int, float]], frames: int) -> float:
        if not history:
            return 0.0
        n0, t0 = history[-1]
        return t0 * max(1.0, frames / n0) ** 2


def bench_path(path: RunPath, frames_list: list[int], images: torch.Tensor, device: torch.device,
               refs: dict[int, dict], budget: Budget, args: argparse.Namespace,
               keep_refs: bool = False, on_result: Callable[[str, int, Result], None] | None = None,
               fast_refs: dict[int, dict] | None = None) -> dict[int, Result]:
    fast_refs = {} if fast_refs is None else fast_refs
    results: dict[int, Result] = {}
    log(f"[{path.name}] building" + (f" ({path.note})" if path.note else ""))
    free(device)
    t0 = time.perf_counter()
    try:
        runner = path.build()
    except Exception as exc:  # noqa: BLE001 - report and go on with the other paths
        if not is_oom(exc):
            raise
        log(f"[{path.name}] OOM while loading the weights")
        return {n: Result(status="OOM") for n in frames_list}
    sync(device)
    log(f"[{path.name}] ready in {time.perf_counter() - t0:.1f} s")
    history: list[tuple[int, float]] = []
    stopped = ""
    for n in frames_list:
        if stopped:
            results[n] = Result(status=stopped)
            continue
        # The reference run exists for its outputs: one cold call per count (only the first is warmed).
        warm = n <= args.warmup_max_frames and (not keep_refs or not history)
        repeats = args.repeats if n <= args.repeat_max_frames and not keep_refs else 1
        predicted = Budget.predict(history, n) * (repeats + (1 if warm else 0))
        if predicted > budget.left():
            stopped = "skipped (time)"
            log(f"[{path.name}] {n} frames: predicted {predicted:.0f} s > {budget.left():.0f} s left: skipped")
            results[n] = Result(status=stopped)
            continue
        batch = images[:n]
        out = None
        try:
            if not path.wants_host_images:
                batch = batch.to(device)
            if warm:
                path.call(runner, batch)
                free(device)
            times, peaks = [], []
            for _ in range(repeats):
                out = None
                out, seconds, peak = timed_call(path, runner, batch, device)
                times.append(seconds)
                peaks.append(peak)
            result = Result(statistics.median(times), max(peaks))
            if keep_refs:
                refs[n] = keep_for_reference(out)
            elif n in refs:
                result.errors, result.versus = relative_errors(out, refs[n]), "fp32"
            elif n in fast_refs and path.name != "fast":
                result.errors, result.versus = relative_errors(out, fast_refs[n]), "fast"
            elif path.name == "fast" and fast_refs is not None:
                # No fp32 reference this large: the other paths are compared with the fast path instead.
                fast_refs[n] = keep_for_reference(out)
            del out
        except Exception as exc:  # noqa: BLE001
            if not is_oom(exc):
                raise
            result = Result(status="OOM")
            stopped = "OOM"
        out = batch = None
        free(device)
        results[n] = result
        if on_result is not None:
            on_result(path.name, n, result)
        if result.status == "ok":
            history.append((n, result.seconds))
            errs = " ".join(f"{k} {v[0]:.1e}" for k, v in result.errors.items())
            seconds, gb = fmt_cell(result)
            log(f"[{path.name}] {n} frames: {seconds} s, peak {gb} GB {errs}".rstrip())
        else:
            log(f"[{path.name}] {n} frames: {result.status}")
    del runner
    free(device)
    return results


def fmt_cell(r: Result | None) -> tuple[str, str]:
    if r is None:
        return "-", "-"
    if r.status != "ok":
        return r.status, ""
    gb = "n/a" if math.isnan(r.peak_gb) else f"{r.peak_gb:.2f}"
    return f"{r.seconds:.3f}", gb


def print_tables(frames_list: list[int], table: dict[str, dict[int, Result]], header: str) -> None:
    names = list(table)
    log("")
    log(header)
    cols = ["frames"] + [f"{p} {unit}" for p in names for unit in ("s", "GB")]
    widths = [max(8, len(c)) for c in cols]
    log(" | ".join(c.rjust(w) for c, w in zip(cols, widths)))
    log("-+-".join("-" * w for w in widths))
    for n in frames_list:
        cells = [str(n)]
        for p in names:
            cells.extend(fmt_cell(table[p].get(n)))
        log(" | ".join(c.rjust(w) for c, w in zip(cells, widths)))
    rows = [(n, p, table[p][n]) for n in frames_list for p in names if table[p].get(n) and table[p][n].errors]
    if rows:
        log("")
        log("error vs the fp32 path (above --ref-max-frames: vs the fast path): max|a-b|/max|b| (mean|a-b|/mean|b|)")
        log(f"{'frames':>6} | {'path':>12} | {'vs':>4} | {'depth':>19} | {'points':>19} | {'pose':>19}")
        for n, p, r in rows:
            cells = [f"{r.errors[k][0]:.2e} ({r.errors[k][1]:.1e})" for k, _ in ERROR_KEYS]
            log(f"{n:>6} | {p:>12} | {r.versus:>4} | " + " | ".join(f"{c:>19}" for c in cells))


# ----------------------------------------------------------------------------------------- modes


def run_table(args: argparse.Namespace, cfg: VGGTConfig, sd: dict, device: torch.device, dtype: torch.dtype,
              frames_list: list[int], budget: Budget) -> None:
    height, width = parse_size(args.size)
    names = [p.strip() for p in args.paths.split(",") if p.strip()]
    if args.official and "official" not in names:
        names.append("official")
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({torch.get_num_threads()} threads)"
    header = (f"VGGT inference, {args.config}, {height}x{width}, {str(dtype).replace('torch.', '')}, weights "
              f"{'from ' + args.weights if args.weights else f'random (seed {args.seed})'}, on {where}, "
              f"torch {torch.__version__}")
    # Seeded random photos in [0, 1]; pinned so the fast path's chunked copies are asynchronous.
    gen = torch.Generator().manual_seed(args.seed + 1)
    images = torch.rand(max(frames_list), 3, height, width, generator=gen)
    if device.type == "cuda":
        images = images.pin_memory()
    paths = make_paths(names, cfg, sd, device, dtype, args)
    refs: dict[int, dict] = {}
    fast_refs: dict[int, dict] = {}
    ref_frames = [n for n in frames_list if n <= args.ref_max_frames]
    table: dict[str, dict[int, Result]] = {name: {} for name in names}
    records: list[dict] = []

    def record(name: str, n: int, result: Result) -> None:
        # Written after every run, so a run cut short still leaves its numbers behind.
        if not args.json:
            return
        peak = None if result.peak_gb is None or math.isnan(result.peak_gb) else result.peak_gb
        records.append({"path": name, "frames": n, "seconds": result.seconds, "peak_gb": peak,
                        "status": result.status, "errors": result.errors, "versus": result.versus})
        Path(args.json).write_text(json.dumps({"header": header, "runs": records}, indent=1) + "\n")

    if ref_frames:
        ref_path = make_paths(["fp32"], cfg, sd, device, dtype, args)["fp32"]
        ref_results = bench_path(ref_path, ref_frames, images, device, refs, budget, args, keep_refs=True,
                                 on_result=record)
        if "fp32" in names:
            table["fp32"].update(ref_results)
    for name in names:
        todo = [n for n in frames_list if n not in table[name]]
        if todo:
            table[name].update(bench_path(paths[name], todo, images, device, refs, budget, args, on_result=record,
                                          fast_refs=fast_refs))
    print_tables(frames_list, table, header)


def run_alternating(args: argparse.Namespace, cfg: VGGTConfig, sd: dict, device: torch.device,
                    dtype: torch.dtype, frames: int) -> None:
    """Every path built at once, warmed, then timed in turns (A B, B A, A B, ...) for --alternate rounds.

    On a shared machine the load drifts: taking turns exposes each path to the same drift, and the
    per-round ratio to the first path cancels most of it. Medians are reported.
    """
    height, width = parse_size(args.size)
    names = [p.strip() for p in args.paths.split(",") if p.strip()]
    gen = torch.Generator().manual_seed(args.seed + 1)
    images = torch.rand(frames, 3, height, width, generator=gen)
    paths = make_paths(names, cfg, sd, device, dtype, args)
    models = {}
    for name, path in paths.items():
        t0 = time.perf_counter()
        models[name] = path.build()
        log(f"[{name}] ready in {time.perf_counter() - t0:.1f} s" + (f" ({path.note})" if path.note else ""))
    outputs = {}
    for name, path in paths.items():  # warm-up (cold, reported apart); its outputs give the errors between paths
        batch = images if path.wants_host_images else images.to(device)
        out, seconds, _ = timed_call(path, models[name], batch, device)
        outputs[name] = keep_for_reference(out)
        del out
        log(f"warm-up (cold): {name} {seconds:.2f} s")
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(args.alternate):
        for name in (names if r % 2 == 0 else names[::-1]):
            path = paths[name]
            batch = images if path.wants_host_images else images.to(device)
            _, seconds, _ = timed_call(path, models[name], batch, device)
            times[name].append(seconds)
            log(f"round {r + 1}: {name} {seconds:.2f} s")
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({torch.get_num_threads()} threads)"
    log("")
    log(f"alternating runs, {args.config}, {frames} frames of {height}x{width}, {str(dtype).replace('torch.', '')} "
        f"where a path uses it, on {where}, torch {torch.__version__}, {args.alternate} rounds after one warm-up")
    first = names[0]
    log(f"{'path':>12} | {'median s':>9} | {'min s':>7} | {'max s':>7} | {'median ratio to ' + first:>24} | runs")
    for name in names:
        ratios = [a / b for a, b in zip(times[name], times[first])]
        log(f"{name:>12} | {statistics.median(times[name]):9.2f} | {min(times[name]):7.2f} | {max(times[name]):7.2f} "
            f"| {statistics.median(ratios):24.3f} | " + " ".join(f"{t:.1f}" for t in times[name]))
    for name in names[1:]:
        errs = relative_errors(outputs[name], outputs[first])
        log(f"{name} vs {first}: " + " ".join(f"{k} {v[0]:.1e}" for k, v in errs.items()) + " (max|a-b|/max|b|)")
    if args.json:
        Path(args.json).write_text(json.dumps({"frames": frames, "size": [height, width], "times": times}) + "\n")


def _read_through(path: str) -> None:
    """Read a file once so both timed loads find it in the page cache."""
    with open(path, "rb") as fh:
        while fh.read(64 << 20):
            pass


def run_load_checkpoint(args: argparse.Namespace, device: torch.device, dtype: torch.dtype) -> None:
    from vggt_blender.weights.loading import load_model

    _read_through(args.load_checkpoint)
    if device.type == "cuda":
        torch.zeros(1, device=device)  # CUDA context before the clock starts
    rows = []
    for label, load in (
        (f"load_model lean ({str(dtype).replace('torch.', '')} aggregator, fp32 heads)",
         lambda: load_model(args.config, args.load_checkpoint, device,
                            execution=ExecutionMode.lean_for(device, dtype))),
        ("weights.load_model (fp32)", lambda: load_model(args.config, args.load_checkpoint, device, torch.float32)),
    ):
        free(device)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        t0 = time.perf_counter()
        obj = load()
        sync(device)
        seconds = time.perf_counter() - t0
        peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else float("nan")
        rows.append((label, seconds, peak))
        del obj
    free(device)
    log("")
    log(f"loading {args.load_checkpoint} to {device} (file already in the page cache)")
    for label, seconds, peak in rows:
        log(f"  {label:48s} {seconds:7.2f} s   peak " + ("n/a" if math.isnan(peak) else f"{peak:.2f} GB"))


def run_fidelity(args: argparse.Namespace, cfg: VGGTConfig, sd: dict, device: torch.device,
                 dtype: torch.dtype) -> None:
    from vggt_blender.io.photo_paths import collect_images
    from vggt_blender.preprocess import preprocess_images

    paths, _ = collect_images([args.fidelity])
    paths = sorted(paths)[: args.fidelity_max]
    if not paths:
        raise SystemExit(f"--fidelity {args.fidelity}: no images found")
    prep = preprocess_images(paths, "crop")
    images = prep.images.clone()
    width, height = prep.model_size
    log(f"fidelity: {len(paths)} photos from {args.fidelity} at {height}x{width}")
    names = [p for p in (p.strip() for p in args.paths.split(",")) if p and p != "fp32"]
    if args.official and "official" not in names:
        names.append("official")
    ref_path = make_paths(["fp32"], cfg, sd, device, dtype, args)["fp32"]
    ref_model = ref_path.build()
    out, ref_seconds, _ = timed_call(ref_path, ref_model, images.to(device), device)
    ref = keep_for_reference(out)
    del ref_model, out
    free(device)
    paths_ = make_paths(names, cfg, sd, device, dtype, args)
    log(f"fp32 reference: {ref_seconds:.1f} s (one cold call)")
    log(f"{'path':>12} | {'depth max (mean)':>20} | {'points max (mean)':>20} | {'pose max (mean)':>20} | cold s")
    for name, path in paths_.items():
        runner = path.build()
        batch = images if path.wants_host_images else images.to(device)
        out, seconds, _ = timed_call(path, runner, batch, device)
        errs = relative_errors(out, ref)
        del runner, out
        free(device)
        log(f"{name:>12} | " + " | ".join(f"{errs[k][0]:.2e} ({errs[k][1]:.1e})".rjust(20) for k, _ in ERROR_KEYS)
            + f" | {seconds:.1f}")


class LiveTensorBytes(TorchDispatchMode):
    """Counts the bytes of live meta-tensor storages created under it and their peak.

    A meta tensor has sizes and no data, so the fast path runs at any frame count in seconds on a CPU;
    adding up the storages alive at each moment predicts `max_memory_allocated` (without allocator
    rounding, library workspaces or the CUDA context). Storages that existed before (weights) are `base`.
    """

    def __init__(self, existing: list[torch.Tensor]) -> None:
        super().__init__()
        self.storages: dict[int, list[int]] = {}
        self.tensors: set[int] = set()
        self.live = 0
        for t in existing:
            key = t.untyped_storage()._cdata
            if key not in self.storages:
                self.storages[key] = [1 << 40, t.untyped_storage().nbytes()]  # never released
                self.live += t.untyped_storage().nbytes()
        self.base = self.peak = self.live

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        out = func(*args, **(kwargs or {}))
        for t in torch.utils._pytree.tree_leaves(out):
            if isinstance(t, torch.Tensor) and t.device.type == "meta" and id(t) not in self.tensors:
                self._track(t)
        return out

    def _track(self, t: torch.Tensor) -> None:
        storage = t.untyped_storage()
        key = storage._cdata
        entry = self.storages.get(key)
        if entry is None:
            self.storages[key] = [1, storage.nbytes()]
            self.live += storage.nbytes()
            self.peak = max(self.peak, self.live)
        else:
            entry[0] += 1
        self.tensors.add(id(t))
        weakref.finalize(t, self._release, id(t), key)

    def _release(self, tensor_id: int, key: int) -> None:
        self.tensors.discard(tensor_id)
        entry = self.storages.get(key)
        if entry is not None:
            entry[0] -= 1
            if entry[0] == 0:
                self.live -= entry[1]
                del self.storages[key]


def run_estimate_memory(args: argparse.Namespace, cfg: VGGTConfig, dtype: torch.dtype,
                        frames_list: list[int]) -> None:
    height, width = parse_size(args.size)
    # (label, residual dtype, token chunk, head frames); "fast_small" is the setting used on GPUs <= 12 GiB.
    residuals = [("fast", torch.float32, args.token_chunk, args.head_frames),
                 ("fast_bf16res", dtype, args.token_chunk, args.head_frames),
                 ("fast_small", torch.float32, SMALL_GPU_TOKEN_CHUNK, SMALL_GPU_HEAD_FRAMES)]
    log("")
    log(f"predicted peak memory of the fast path (GB, max_memory_allocated-like), {args.config}, "
        f"{height}x{width}, {str(dtype).replace('torch.', '')}, images on the host")
    log(f"{'frames':>7} | " + " | ".join(f"{r[0]:>12}" for r in residuals) + " | weights")
    backends = parse_sdpa_backends(args.sdpa)
    for n in frames_list:
        cells = []
        for _, residual, token_chunk, head_frames in residuals:
            model = build_on_meta(cfg, enable_track=False)
            model.set_execution(ExecutionMode(lean=True, dtype=dtype, residual_dtype=residual,
                                              token_chunk=token_chunk or DEFAULT_TOKEN_CHUNK,
                                              head_frames=head_frames or DEFAULT_HEAD_FRAMES,
                                              sdpa_backends=backends))

            def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, execution: Any = None) -> torch.Tensor:
                # A fused kernel's footprint: the output plus its fp32 log-sum-exp, no score matrix.
                lse = torch.empty(q.shape[:-1], dtype=torch.float32, device=q.device)
                del lse
                return torch.empty_like(q)

            for module in model.aggregator.modules():  # this model's instances only
                if hasattr(module, "attend"):
                    module.attend = attention
            images = torch.empty(1, n, 3, height, width, device="meta")
            tracker = LiveTensorBytes(list(model.parameters()))
            with tracker, torch.inference_mode():
                out = model(images)
                del out
            cells.append(tracker.peak / 2**30)
            weights_gb = tracker.base / 2**30
            del model, tracker
            gc.collect()
        log(f"{n:>7} | " + " | ".join(f"{c:>12.2f}" for c in cells) + f" | {weights_gb:.2f}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", default=None, help=f"frame counts (default {DEFAULT_FRAMES})")
    parser.add_argument("--size", default="336x518", help="HEIGHTxWIDTH of the model input (default 336x518)")
    parser.add_argument("--config", default="vggt-1b", help="preset name or config JSON (default vggt-1b)")
    parser.add_argument("--paths", default="fast,autocast", help=f"comma list of {', '.join(ALL_PATHS)}")
    parser.add_argument("--official", default=None, help="upstream checkout (folder holding vggt/) for 'official'")
    parser.add_argument("--weights", default=None, help="a real checkpoint instead of random weights")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dtype", default="auto", choices=("auto", "bf16", "fp16", "fp32"))
    parser.add_argument("--device", default="auto", help="auto (CUDA if available), cuda, cuda:1, cpu")
    parser.add_argument("--sdpa", default="cudnn,flash,efficient,math",
                        help="fast path SDPA backends in priority order, or 'auto' (default cudnn first)")
    parser.add_argument("--token-chunk", type=int, default=None,
                        help=f"fast path: tokens per chunk (default {DEFAULT_TOKEN_CHUNK}; 16384 on GPUs <= 12 GiB)")
    parser.add_argument("--head-frames", type=int, default=None,
                        help=f"fast path: frames per head chunk (default {DEFAULT_HEAD_FRAMES}; 2 on GPUs <= 12 GiB)")
    parser.add_argument("--images-on-device", action="store_true",
                        help="give the fast path device images too (default: pinned host images)")
    parser.add_argument("--ref-max-frames", type=int, default=None,
                        help="compute the fp32 reference (error columns) up to this many frames "
                             "(default 50 on CUDA, 2 on CPU; 0 turns it off)")
    parser.add_argument("--warmup-max-frames", type=int, default=100, help="warm up runs up to this many frames")
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats (median) for small frame counts")
    parser.add_argument("--repeat-max-frames", type=int, default=50)
    parser.add_argument("--time-budget", type=float, default=540.0,
                        help="seconds for the whole run; runs predicted not to fit are skipped (default 540)")
    parser.add_argument("--load-checkpoint", default=None, help="time loading this checkpoint to the device")
    parser.add_argument("--fidelity", default=None, help="photo folder: fp32 vs the other paths on real photos")
    parser.add_argument("--fidelity-max", type=int, default=25, help="at most this many photos for --fidelity")
    parser.add_argument("--estimate-memory", action="store_true",
                        help="predict the fast path's peak memory per frame count without running it (meta tensors)")
    parser.add_argument("--alternate", type=int, default=0, metavar="ROUNDS",
                        help="time the --paths in turns for ROUNDS rounds at the first --frames count (medians)")
    parser.add_argument("--cpu-10", action="store_true", help="time 10 photos on the CPU (paths from --paths)")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads for torch")
    parser.add_argument("--json", default=None, help="also write every run to this JSON file as it finishes")
    args = parser.parse_args(argv)

    budget = Budget(args.time_budget)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.cpu_10 or args.device == "cpu":
        device = torch.device("cpu")
    elif args.device == "auto":
        device = torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")
    else:
        device = torch.device(args.device)
    if device.type == "cuda":
        device = torch.device("cuda", device.index if device.index is not None else torch.cuda.current_device())
    elif not args.cpu_10:
        log("CUDA is not available: running on the CPU with what fits in the time budget "
            "(peak GPU memory: n/a)")
    dtype = choose_dtype(args.dtype, device)
    if args.ref_max_frames is None:
        args.ref_max_frames = 50 if device.type == "cuda" else 2
    cfg = VGGTConfig.resolve(args.config)

    special = args.load_checkpoint or args.fidelity or args.cpu_10 or args.estimate_memory
    if args.cpu_10:
        # One cold call: a CPU run of 10 frames takes minutes, and a user's first run is cold too.
        frames_list = [10]
        args.ref_max_frames = 0 if args.ref_max_frames == 2 else args.ref_max_frames
        args.warmup_max_frames, args.repeats = 0, 1
    elif args.frames is not None:
        frames_list = [int(v) for v in args.frames.split(",") if v.strip()]
    else:
        frames_list = [] if special else [int(v) for v in DEFAULT_FRAMES.split(",")]

    if args.estimate_memory:
        estimate_dtype = dtype if device.type == "cuda" or args.dtype != "auto" else torch.bfloat16
        run_estimate_memory(args, cfg, estimate_dtype, frames_list or [int(v) for v in DEFAULT_FRAMES.split(",")])
        return
    if args.load_checkpoint:
        run_load_checkpoint(args, device, dtype)
    if not frames_list and not args.fidelity:
        return
    t0 = time.perf_counter()
    if args.weights:
        sd = checkpoint_state_dict(args.weights)
    else:
        sd = random_state_dict(cfg, args.seed, device)
    log(f"weights ready in {time.perf_counter() - t0:.1f} s ({sum(v.numel() for v in sd.values()) / 1e6:.0f} M)")
    if args.fidelity:
        run_fidelity(args, cfg, sd, device, dtype)
    if args.alternate:
        run_alternating(args, cfg, sd, device, dtype, frames_list[0] if frames_list else 2)
    elif frames_list:
        run_table(args, cfg, sd, device, dtype, sorted(frames_list), budget)


if __name__ == "__main__":
    main()
