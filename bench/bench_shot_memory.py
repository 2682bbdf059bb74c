"""Peak resident memory of `python -m vggt_blender reconstruct SHOT.mp4` on a long 1080p shot (CPU).

Writes a 1920x1080 H.264 shot (each frame shows its number and a moving texture) and a random checkpoint
of a very small VGGT configuration (the outputs, which are what grows with the frame count, have the real
518x294 shape; the model's own memory is tiny either way), then runs the command line under
`/usr/bin/time -v` with chunking and prints a table: frames, chunks, max RSS, wall time, file size.

    .venv/bin/python bench/bench_shot_memory.py --frames 600 --chunk-size 24 --overlap 4 [--work DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

MICRO_CONFIG = {
    "img_size": 518, "patch_size": 14, "embed_dim": 32, "depth": 4, "num_heads": 2, "mlp_ratio": 2.0,
    "num_register_tokens": 4, "rope_freq": 100.0, "qk_norm": True,
    "patch_embed": {"type": "dinov2_reg", "embed_dim": 32, "depth": 1, "num_heads": 2, "mlp_ratio": 2.0,
                    "num_register_tokens": 4},
    "camera_head": {"trunk_depth": 1, "num_heads": 2, "mlp_ratio": 2.0, "iterations": 1},
    "dpt_head": {"features": 8, "out_channels": [8, 8, 16, 16], "intermediate_layer_idx": [0, 1, 2, 3]},
    "track_head": {"features": 8, "out_channels": [8, 8, 16, 16], "hidden_size": 16, "corr_levels": 1,
                   "corr_radius": 1, "iters": 1, "stride": 2},
}


def write_long_video(path: Path, frames: int, width: int = 1920, height: int = 1080) -> None:
    import av

    yy, xx = np.mgrid[0:height, 0:width]
    base = np.stack([(xx * 255 // (width - 1)), (yy * 255 // (height - 1)), np.zeros_like(xx)], -1)
    with av.open(str(path), mode="w") as out:
        stream = out.add_stream("libx264", rate=Fraction(30000, 1001))
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"preset": "ultrafast", "crf": "23"}
        for i in range(frames):
            img = base.copy()
            img[..., 2] = ((xx + 4 * i) // 32 + yy // 32) % 2 * 180
            for bit in range(10):
                img[: height // 4, bit * width // 10:(bit + 1) * width // 10] = 255 if (i >> bit) & 1 else 0
            frame = av.VideoFrame.from_ndarray(img.astype(np.uint8), format="rgb24")
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)


def write_micro_checkpoint(folder: Path) -> tuple[Path, Path]:
    import torch

    from vggt_blender.model import VGGT, VGGTConfig

    config = folder / "micro.json"
    config.write_text(json.dumps(MICRO_CONFIG))
    torch.manual_seed(0)
    model = VGGT(VGGTConfig.load(config)).eval()
    with torch.no_grad():  # usable fields of view from random weights (as the tests' tiny model)
        model.camera_head.pose_branch.fc2.weight[7:9] = 0.0
        model.camera_head.pose_branch.fc2.bias[7:9] = 1.0
    weights = folder / "micro.pt"
    torch.save(model.state_dict(), weights)
    return config, weights


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=600)
    parser.add_argument("--chunk-size", type=int, default=None)
    parser.add_argument("--overlap", type=int, default=None)
    parser.add_argument("--work", help="folder for the video, checkpoint and output (default: a temp dir)")
    args = parser.parse_args()
    work = Path(args.work or tempfile.mkdtemp(prefix="shot_memory_"))
    work.mkdir(parents=True, exist_ok=True)
    video = work / f"long_{args.frames}.mp4"
    if not video.exists():
        t = time.perf_counter()
        write_long_video(video, args.frames)
        print(f"wrote {video} ({video.stat().st_size / 1e6:.1f} MB) in {time.perf_counter() - t:.0f} s", flush=True)
    config, weights = write_micro_checkpoint(work)
    out = work / "long.npz"
    cmd = ["/usr/bin/time", "-v", sys.executable, "-m", "vggt_blender", "reconstruct", str(video), "-o", str(out),
           "--weights", str(weights), "--config", str(config), "--device", "cpu", "-q", "--every", "1"]
    if args.chunk_size:
        cmd += ["--chunk-size", str(args.chunk_size)]
    if args.overlap:
        cmd += ["--overlap", str(args.overlap)]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    t = time.perf_counter()
    result = subprocess.run(cmd, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t
    if result.returncode != 0:
        print(result.stderr[-3000:])
        raise SystemExit(result.returncode)
    rss_kb = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", result.stderr).group(1))
    from vggt_blender.io.reconstruction import load_reconstruction

    prov = load_reconstruction(out).provenance_dict["shot"]
    residuals = [a["relative_point_rms"] for a in prov["alignment"]]
    print("| frames | source | chunks (size/overlap) | max RSS | wall | .npz size |")
    print("|---|---|---|---|---|---|")
    print(f"| {prov['frames']} | 1920x1080 H.264 | {len(prov['chunks'])} ({prov['chunking']['chunk_size']}/"
          f"{prov['chunking']['overlap']}) | {rss_kb / 1024 ** 2:.2f} GiB | {wall:.0f} s | "
          f"{out.stat().st_size / 1e9:.2f} GB |")
    if residuals:
        print(f"alignment relative point RMS: median {np.median(residuals):.3g}, max {np.max(residuals):.3g}")
    print(result.stderr.strip().splitlines()[-1] if "wrote" in result.stderr else "")


if __name__ == "__main__":
    main()
