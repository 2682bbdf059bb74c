"""VGGT-Omega inference benchmark: our model against the official code, same weights, same input, same run.

Paths (--paths):
  ours      vggt_blender.model.VGGTOmega, plain path: float32 on the CPU; on CUDA the official recipe
            (aggregator under bf16 autocast, fp16 without bf16; heads float32)
  lean      ours in the memory-lean execution mode (model/execution.py, when present): bf16 matrices,
            fp32 residual stream, chunked token-wise work, kept layers only, dense head per chunk of frames
  official  facebookresearch/vggt-omega at commit 39a0cb8 from --official DIR (the git-ignored
            .upstream/vggt-omega), its own VGGTOmega() called as its README does (no_grad)

The paths run alternately (ours, official, ours, official, ...) so a busy shared machine slows them
alike; each path's median over --repeats is reported, with every single time. All paths share one set of
seeded random weights (our constructor's initialisation: usable, unlike the official NaN bias masks), or a
real checkpoint with --weights. The error columns compare each path with the official outputs.

  python bench/bench_omega.py --photos ../shared/photos/kitchen --count 4 --paths ours,official \
      --official .upstream/vggt-omega --repeats 3
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from vggt_blender.model import VGGTOmega, VGGTOmegaConfig  # noqa: E402
from vggt_blender.preprocess import preprocess_images  # noqa: E402

OUTPUT_KEYS = ("pose_enc", "depth", "depth_conf", "camera_and_register_tokens")
PHOTO_SUFFIXES = (".png", ".jpg", ".jpeg")


def log(message: str) -> None:
    print(message, flush=True)


def photos(folder: str, count: int) -> list[str]:
    found = sorted(str(p) for p in Path(folder).iterdir() if p.suffix.lower() in PHOTO_SUFFIXES)
    if len(found) < count:
        raise SystemExit(f"--photos {folder}: {len(found)} photos there, {count} wanted")
    return found[:count]


def random_state_dict(cfg: VGGTOmegaConfig, seed: int) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    return VGGTOmega(cfg).state_dict()


def build_ours(cfg: VGGTOmegaConfig, sd: dict[str, torch.Tensor], device: torch.device) -> VGGTOmega:
    with torch.device("meta"):
        model = VGGTOmega(cfg)
    model.load_state_dict({k: v.to(device) for k, v in sd.items()}, strict=True, assign=True)
    return model.eval()


def build_official(folder: str, cfg: VGGTOmegaConfig, sd: dict[str, torch.Tensor], device: torch.device) -> Any:
    """The upstream VGGTOmega() (only the published configurations: its sizes are hard-coded upstream)."""
    package = Path(folder) / "vggt_omega"
    if not (package / "models" / "vggt_omega.py").is_file():
        raise SystemExit(f"--official {folder}: no upstream vggt_omega package there (see bench/README.md)")
    if cfg not in (VGGTOmegaConfig.omega_1b_512(), VGGTOmegaConfig.omega_1b_256_text()):
        raise SystemExit("the official path builds only the published VGGT-Omega configurations")
    sys.path.insert(0, str(Path(folder).resolve()))
    from vggt_omega.models.vggt_omega import VGGTOmega as OfficialVGGTOmega

    with torch.device("meta"):
        model = OfficialVGGTOmega(enable_alignment=cfg.text_alignment_head is not None)
    # assign=True: the official model uses the very same weight tensors as ours (one copy in memory).
    model.load_state_dict({k: v.to(device) for k, v in sd.items()}, strict=True, assign=True)
    for module in model.modules():  # its non-persistent ImageNet buffers were made on the meta device
        for name, buf in list(module._buffers.items()):
            if buf is not None and buf.is_meta:
                values = [0.485, 0.456, 0.406] if "mean" in name else [0.229, 0.224, 0.225]
                module._buffers[name] = torch.tensor(values, device=device).view(1, 1, 3, 1, 1)
    return model.eval()


def make_paths(names: list[str], cfg: VGGTOmegaConfig, sd: dict, device: torch.device,
               official_dir: str | None) -> dict[str, Callable[[torch.Tensor], dict]]:
    paths: dict[str, Callable[[torch.Tensor], dict]] = {}
    for name in names:
        if name == "ours":
            model = build_ours(cfg, sd, device)
            paths[name] = lambda images, m=model: m(images.to(device))
        elif name == "lean":
            try:
                from vggt_blender.model.execution import ExecutionMode
            except ImportError:
                raise SystemExit("--paths lean needs vggt_blender/model/execution.py") from None
            dtype = torch.bfloat16 if device.type == "cpu" or torch.cuda.is_bf16_supported() else torch.float16
            model = build_ours(cfg, sd, device).set_execution(ExecutionMode.lean_for(device, dtype))
            paths[name] = lambda images, m=model: m(images)  # images stay on the host
        elif name == "official":
            if not official_dir:
                raise SystemExit("--paths official needs --official DIR (e.g. .upstream/vggt-omega)")
            model = build_official(official_dir, cfg, sd, device)
            paths[name] = lambda images, m=model: m(images.to(device))
        else:
            raise SystemExit(f"unknown path {name!r} (known: ours, lean, official)")
    return paths


def timed(run: Callable[[torch.Tensor], dict], images: torch.Tensor, device: torch.device) -> tuple[dict, float]:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    with torch.inference_mode():
        out = run(images)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return out, time.perf_counter() - start


def relative_error(ours: torch.Tensor, ref: torch.Tensor) -> float:
    ours, ref = ours.float().cpu(), ref.float().cpu()
    return ((ours - ref).abs().max() / ref.abs().max()).item()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--photos", default=str(ROOT.parent / "shared" / "photos" / "kitchen"))
    parser.add_argument("--count", type=int, default=4, help="photos taken from --photos (sorted)")
    parser.add_argument("--mode", default="balanced", choices=("balanced", "max_size"))
    parser.add_argument("--target-size", type=int, default=512)
    parser.add_argument("--config", default="vggt-omega-1b-512", help="preset name or config.json")
    parser.add_argument("--weights", default=None, help="a real checkpoint instead of random weights")
    parser.add_argument("--paths", default="ours,official")
    parser.add_argument("--official", default=None, help="upstream checkout holding vggt_omega/")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=0, help="untimed calls per path first")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    cfg = VGGTOmegaConfig.resolve(args.config)
    files = photos(args.photos, args.count)
    prep = preprocess_images(files, mode=args.mode, target_size=args.target_size, model="vggt-omega")
    images = prep.images[None]  # [1, S, 3, H, W]
    width, height = prep.model_size
    log(f"# {len(files)} photos from {args.photos} -> {width}x{height} ({args.mode}, {args.target_size}); "
        f"config {args.config}; device {device}; torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"{os.cpu_count()} CPUs ({platform.processor() or platform.machine()}); load average "
        f"{', '.join(f'{v:.1f}' for v in os.getloadavg())}")

    if args.weights:
        from vggt_blender.weights.loading import read_state_dict

        sd = read_state_dict(args.weights)
    else:
        started = time.perf_counter()
        sd = random_state_dict(cfg, args.seed)
        log(f"# random weights (seed {args.seed}): {sum(v.numel() for v in sd.values()):,} elements, "
            f"{time.perf_counter() - started:.1f} s")
    names = [n.strip() for n in args.paths.split(",") if n.strip()]
    paths = make_paths(names, cfg, sd, device, args.official)

    for _ in range(args.warmup):
        for name, run in paths.items():
            timed(run, images, device)
    times: dict[str, list[float]] = {name: [] for name in paths}
    outputs: dict[str, dict] = {}
    for repeat in range(args.repeats):
        order = list(paths) if repeat % 2 == 0 else list(reversed(paths))  # alternate who goes first
        for name in order:
            out, seconds = timed(paths[name], images, device)
            times[name].append(seconds)
            outputs[name] = {k: out[k].detach().cpu() for k in OUTPUT_KEYS if k in out}
            log(f"run {repeat + 1}/{args.repeats} {name:9s} {seconds:8.2f} s   "
                f"load {os.getloadavg()[0]:.1f}")
            del out

    ref = outputs.get("official")
    log("")
    log(f"| path | median s | min s | max s | runs | " + " | ".join(f"err {k}" for k in OUTPUT_KEYS) + " |")
    log("|---|---|---|---|---|" + "---|" * len(OUTPUT_KEYS))
    summary = {}
    for name, values in times.items():
        errors = {k: relative_error(outputs[name][k], ref[k]) for k in OUTPUT_KEYS
                  if ref is not None and k in outputs[name] and k in ref}
        cells = [f"{errors[k]:.1e}" if k in errors else "-" for k in OUTPUT_KEYS]
        log(f"| {name} | {statistics.median(values):.2f} | {min(values):.2f} | {max(values):.2f} | "
            f"{' / '.join(f'{v:.1f}' for v in values)} | " + " | ".join(cells) + " |")
        summary[name] = {"seconds": values, "median_s": statistics.median(values), "errors_vs_official": errors}
    if args.json:
        Path(args.json).write_text(json.dumps({"size": [width, height], "frames": len(files), "paths": summary},
                                              indent=1))


if __name__ == "__main__":
    main()
