"""Long-shot drift on a shot rendered here and encoded to H.264: chunked + aligned vs. ground truth.

    python bench/bench_shot_drift.py [--frames 240] [--size 320x240] [--chunk 60] [--overlap 12]
        [--rot-deg 0.5] [--pos-frac 0.01] [--depth-frac 0.02] [--seed 0] [--work DIR] [--json FILE]

1. Renders tests/refine_groundtruth.py's textured floor and boxes with bpy (Cycles, CPU, few samples) along a
   camera path that dollies across the scene while it pans (tests/shot_drift.py), to PNG frames; the true
   depth comes analytically from the scene description (z-depth, OpenCV axes).
2. Encodes the PNGs to H.264 (libx264, yuv420p, 24000/1001 fps, B-frames) with PyAV (tests/video_helpers).
3. Decodes the file with the product's shot reader (vggt_blender/shot/source.py) and checks every decoded
   frame against the PNGs: its number, and PSNR against its own render and against its neighbours'.
4. STAND-IN FOR THE MODEL (no weights exist here): each pass's "prediction" is the ground truth in that
   pass's own gauge (world = its first camera, a random scale) with feed-forward-sized noise drawn per pass:
   rotation (--rot-deg RMS, random axis), camera centre (--pos-frac of the view's median depth, RMS), depth
   (a smooth random field of --depth-frac RMS), depth at 1/4 of the frame size. Chunks come from the
   product's plan_chunks and are assembled with its ShotAssembler (Sim(3) on the shared views' cameras and
   depth), as vggt_blender/engine/shot.py does.
5. Errors after ONE similarity alignment of all camera centres to the ground truth: centre error as % of the
   path length (max, mean, last frame, and "drift": the largest 15-frame mean of the error, which keeps a
   slow drift and shrinks per-view jitter about 4x); rotation error (deg, max and mean) after one world
   rotation fitted to the orientations (on a nearly straight dolly the centres pin the rotation about the
   path poorly; the --json rows also hold the rotation error under the centres' similarity). Rows:
   (a) chunked + aligned, (b) a single pass over every frame (one gauge, the same noise model), (c) the
   chunks in their own gauges without alignment, and with --refine (d) (a) refined by the product's
   refinement (vggt_blender.refine, shared intrinsics) on the decoded frames saved as PNG; then the
   residuals the assembler reports per aligned chunk. --refine does not fit the default's ~3 minutes: about
   12 minutes more for 240 frames on a 2-core machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests import shot_drift as sd  # noqa: E402


def parse_size(text: str) -> tuple[int, int]:
    w, h = (int(v) for v in text.lower().split("x"))
    return w, h


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--frames", type=int, default=240)
    parser.add_argument("--size", type=parse_size, default=(320, 240), help="WxH of the rendered frames")
    parser.add_argument("--chunk", type=int, default=60, help="views per pass")
    parser.add_argument("--overlap", type=int, default=12, help="views shared by consecutive chunks")
    parser.add_argument("--rot-deg", type=float, default=sd.Noise.rot_deg)
    parser.add_argument("--pos-frac", type=float, default=sd.Noise.pos_frac)
    parser.add_argument("--depth-frac", type=float, default=sd.Noise.depth_frac)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--samples", type=int, default=4, help="Cycles samples per pixel")
    parser.add_argument("--single-max-frames", type=int, default=1000,
                        help="skip the single pass above this many frames")
    parser.add_argument("--refine", action="store_true",
                        help="also refine the chunked path (vggt_blender.refine, shared intrinsics) on the decoded "
                             "frames")
    parser.add_argument("--work", type=Path, help="keep renders and video here (reused when they match)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    width, height = args.size
    noise = sd.Noise(args.rot_deg, args.pos_frac, args.depth_frac)

    tmp = None
    if args.work is None:
        tmp = tempfile.TemporaryDirectory(prefix="shot_drift_")
        args.work = Path(tmp.name)
    scene_dir = args.work / f"render_{args.frames}_{width}x{height}"
    video = args.work / f"shot_{args.frames}_{width}x{height}.mp4"
    now = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    print(f"# long-shot drift: {args.frames} frames {width}x{height}, chunk {args.chunk} / overlap {args.overlap}, "
          f"seed {args.seed}; {platform.node()} {os.cpu_count()} CPU(s), load {os.getloadavg()[0]:.2f}, {now}")
    print("# STAND-IN for the model (no weights here): each pass = ground truth in its own gauge (first camera, "
          f"random scale) + noise: rotation {noise.rot_deg} deg RMS, centre {noise.pos_frac:.1%} of median depth "
          f"RMS, depth {noise.depth_frac:.1%} RMS (smooth field); depth at 1/{sd.DEPTH_FACTOR} of the frame")
    timings = {}

    started = time.perf_counter()
    ext_true, k_photo = sd.render_shot(scene_dir, args.frames, width, height, args.samples)
    timings["render_s"] = time.perf_counter() - started
    started = time.perf_counter()
    sd.encode_shot(scene_dir, args.frames, video, width, height)
    timings["encode_s"] = time.perf_counter() - started
    started = time.perf_counter()
    decoded_dir = args.work / f"decoded_{args.frames}_{width}x{height}"
    if args.refine:
        decoded_dir.mkdir(parents=True, exist_ok=True)
    check = sd.decode_shot_frames(video, scene_dir, save_dir=decoded_dir if args.refine else None)
    timings["decode_check_s"] = time.perf_counter() - started
    numbers_ok = check.numbers == list(range(args.frames)) and check.frame_count == args.frames
    best_ok = check.best_match == list(range(args.frames))
    print(f"render {timings['render_s']:.1f} s (bpy Cycles, {args.samples} spp), encode {timings['encode_s']:.1f} s "
          f"(H.264 yuv420p, {video.stat().st_size / 1024:.0f} KiB), decode+check {timings['decode_check_s']:.1f} s")
    print(f"decoded with vggt_blender.shot.source: {len(check.numbers)} frames (probe: {check.frame_count} at "
          f"{float(check.fps):.3f} fps), numbers 0..{args.frames - 1} in order: {'yes' if numbers_ok else 'NO'}; "
          f"PSNR vs own render min {check.psnr_own.min():.1f} / mean {check.psnr_own.mean():.1f} dB, vs the "
          f"neighbour's max {np.nanmax(check.psnr_neighbour):.1f} dB; every frame closest to its own render: "
          f"{'yes' if best_ok else 'NO'}")

    started = time.perf_counter()
    depth_true = sd.true_depth(ext_true, k_photo, width, height)
    _, _, k_model = sd.model_geometry(k_photo, width, height)
    rows = {}
    chunked = sd.assemble(ext_true, depth_true, k_model, args.chunk, args.overlap, noise, args.seed)
    rows["chunked + aligned"] = (chunked, sd.path_errors(chunked.extrinsics, ext_true))
    if args.frames <= args.single_max_frames:
        single = sd.assemble(ext_true, depth_true, k_model, args.frames, 0, noise, args.seed)
        rows["single pass"] = (single, sd.path_errors(single.extrinsics, ext_true))
    loose = sd.assemble(ext_true, depth_true, k_model, args.chunk, args.overlap, noise, args.seed, align=False)
    rows["chunks, no alignment"] = (loose, sd.path_errors(loose.extrinsics, ext_true))
    timings["assemble_s"] = time.perf_counter() - started
    refine_info = None
    if args.refine:
        started = time.perf_counter()
        frames = [decoded_dir / f"decoded_{n:04d}.png" for n in check.numbers]
        refined, report = sd.refine_assembly(chunked, frames, k_model, width, height)
        timings["refine_s"] = time.perf_counter() - started
        f_err = np.abs(refined.intrinsics[:, 0, 0] - k_photo[0, 0]) / k_photo[0, 0]
        rows["chunked + aligned + refined"] = (chunked, sd.path_errors(refined.extrinsics, ext_true))
        refine_info = {"refined_views": len(report.refined_views), "points": report.points,
                       "px_before": report.mean_error_before, "px_after": report.mean_error,
                       "focal_error_max": float(f_err.max()), "seconds": timings["refine_s"],
                       "stages_s": {k: round(v, 1) for k, v in report.timings.items()},
                       "messages": report.messages[:5]}

    print(f"\npath length {sd.path_length(ext_true):.2f} scene units; errors after one similarity fit of all "
          "camera centres to the truth\n")
    print("| path | passes | centre max | centre mean | centre last | drift max (15-frame mean) | rotation max | "
          "rotation mean |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for name, (asm, err) in rows.items():
        print(f"| {name} | {len(asm.chunks)} | {100 * err['centre_max']:.3f} % | {100 * err['centre_mean']:.3f} % | "
              f"{100 * err['centre_end']:.3f} % | {100 * err['drift_max']:.3f} % | {err['rot_max_deg']:.3f}° | "
              f"{err['rot_mean_deg']:.3f}° |")
    print("\nalignment residuals (ShotAssembler, per aligned chunk; centre rms as % of the assembled path's length)\n")
    print("| chunk | views | shared | scale | depth-ratio scale | ratio spread | centre rms | point rms / depth "
          "| rotation max |")
    print("|---:|---|---:|---:|---:|---:|---:|---:|---:|")
    assembled_length = sd.path_length(chunked.extrinsics)
    for chunk, r in zip(chunked.chunks[1:], chunked.reports):
        print(f"| {r.chunk} | {chunk.start}..{chunk.end - 1} | {r.shared_views} | {r.scale:.4f} | "
              f"{r.depth_ratio_scale:.4f} | {r.depth_ratio_spread:.3f} | "
              f"{100 * r.centre_rms / assembled_length:.3f} % | "
              f"{100 * r.relative_point_rms:.2f} % | {r.rotation_max_deg:.3f}° |")
    print(f"\nassembly {timings['assemble_s']:.1f} s")
    if refine_info is not None:
        print(f"refinement (shared intrinsics, decoded frames): {refine_info['refined_views']}/{args.frames} views "
              f"refined, {refine_info['points']} points, reprojection {refine_info['px_before']:.2f} -> "
              f"{refine_info['px_after']:.2f} px, focal error {100 * refine_info['focal_error_max']:.2f} %, "
              f"{refine_info['seconds']:.1f} s ({', '.join(f'{k} {v} s' for k, v in refine_info['stages_s'].items())})")

    if args.json:
        result = {
            "frames": args.frames, "size": [width, height], "chunk": args.chunk, "overlap": args.overlap,
            "seed": args.seed, "noise": asdict(noise), "date": now,
            "load": os.getloadavg()[0], "cpus": os.cpu_count(), "stand_in": True, "timings": timings,
            "decode": {"numbers_in_order": numbers_ok, "closest_to_own_render": best_ok,
                       "psnr_own_min": float(check.psnr_own.min()), "psnr_own_mean": float(check.psnr_own.mean()),
                       "psnr_neighbour_max": float(np.nanmax(check.psnr_neighbour)), "fps": str(check.fps)},
            "path_length": sd.path_length(ext_true),
            "rows": {name: {"passes": len(asm.chunks), **err} for name, (asm, err) in rows.items()},
            "alignment": [r.to_dict() for r in chunked.reports], "refinement": refine_info,
        }
        args.json.write_text(json.dumps(result, indent=2))
    if tmp is not None:
        tmp.cleanup()
    return 0 if numbers_ok and best_ok else 1


if __name__ == "__main__":
    sys.exit(main())
