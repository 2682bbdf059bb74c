"""Scene-building benchmark (bpy): seconds per part for a 100-photo reconstruction and for 1 M points.

    .venv/bin/python bench/bench_scene.py [--views 100] [--width 518] [--height 392]

Case A: 100 photos at 518x392 (20 M candidate points, 5 M kept), 100 cameras with background photos plus
one animated camera (100 frames), 100 depth planes (plane_step 4). Case B: 1 M points only.
Targets: A under 5 s, B under 0.5 s (2 CPU cores).
Geometry Nodes evaluation (what the viewport does afterwards) is timed separately.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import bpy  # noqa: E402
from PIL import Image  # noqa: E402

from vggt_blender.extension_package import load_extension_package  # noqa: E402
from vggt_blender.io.reconstruction import Reconstruction  # noqa: E402
from vggt_blender.options import SceneOptions  # noqa: E402


def synthetic(n: int, w: int, h: int, photo_dir: Path) -> Reconstruction:
    """Cameras on a circle around a bumpy sphere-ish scene; arrays built directly (fast, no unprojection)."""
    rng = np.random.default_rng(0)
    K = np.array([[0.9 * w, 0, w / 2], [0, 0.9 * w, h / 2], [0, 0, 1.0]])
    E = np.zeros((n, 3, 4))
    for i in range(n):
        a = 2 * np.pi * i / n
        R = np.array([[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]])
        E[i, :, :3] = R
        E[i, :, 3] = [0, 0, 3.0]
    depth = (2.5 + 0.2 * rng.random((n, h, w))).astype(np.float32)
    yy, xx = np.mgrid[0:h, 0:w]
    world = np.empty((n, h, w, 3), dtype=np.float32)
    for i in range(n):
        cam = np.stack([(xx - K[0, 2]) / K[0, 0] * depth[i], (yy - K[1, 2]) / K[1, 1] * depth[i], depth[i]], -1)
        world[i] = (cam - E[i, :, 3]) @ E[i, :, :3]
    conf = (1.0 + 9.0 * rng.random((n, h, w))).astype(np.float32)
    colors = rng.integers(0, 256, (n, h, w, 3), dtype=np.uint8)
    paths = []
    for i in range(n):
        path = photo_dir / f"photo_{i:03d}.jpg"
        Image.fromarray(colors[i]).save(path, quality=80)
        paths.append(str(path))
    return Reconstruction(
        image_paths=paths, display_paths=paths, image_names=[Path(p).stem for p in paths],
        original_sizes=np.tile([w, h], (n, 1)).astype(np.int32), model_size=np.array([w, h], np.int32),
        pixel_map=np.tile([1.0, 1.0, 0.0, 0.0], (n, 1)), valid_box=np.tile([0, 0, w, h], (n, 1)).astype(np.int32),
        extrinsics=E, intrinsics_model=np.repeat(K[None], n, 0),
        depth=depth, depth_conf=conf, point_map=world, point_map_conf=conf, colors=colors,
    )


def run_case(build, rec, options: SceneOptions, label: str) -> dict[str, float]:
    bpy.ops.wm.read_homefile(use_empty=True)
    timings: dict[str, float] = {}
    start = time.perf_counter()
    col = build.build_scene(rec, options, label, timings=timings)
    timings["total build"] = time.perf_counter() - start
    points = [o for o in col.objects if o.get("vggt_kind") == "point_cloud"]
    if points:
        start = time.perf_counter()
        depsgraph = bpy.context.evaluated_depsgraph_get()
        ev = points[0].evaluated_get(depsgraph)
        geometry = ev.evaluated_geometry() if hasattr(ev, "evaluated_geometry") else None
        timings["(GN evaluation, all objects)"] = time.perf_counter() - start
        if geometry is not None and geometry.pointcloud is not None:
            timings["(points shown)"] = float(len(geometry.pointcloud.points))
    return timings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--views", type=int, default=100)
    parser.add_argument("--width", type=int, default=518)
    parser.add_argument("--height", type=int, default=392)
    args = parser.parse_args()

    package = load_extension_package()
    build = importlib.import_module(f"{package.__name__}.scene.build")
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        rec = synthetic(args.views, args.width, args.height, Path(tmp))
        candidates = int(rec.valid_mask.sum())
        print(f"synthetic data: {args.views} views {args.width}x{args.height}, {candidates:,} candidate points "
              f"({time.perf_counter() - t:.1f} s to make)")
        case_a = run_case(build, rec, SceneOptions(max_points=5_000_000, plane_step=4, camera_mode="both"),
                          "bench_full")
        case_b = run_case(build, rec, SceneOptions(max_points=1_000_000, create_cameras=False,
                                                   create_depth_planes=False), "bench_1m")

    parts = list(dict.fromkeys(list(case_a) + list(case_b)))
    print(f"\n{'part':32s} {'A: 100 photos, 5M pts':>22s} {'B: 1M points':>14s}")
    for part in parts:
        a, b = case_a.get(part), case_b.get(part)
        fmt = (lambda v: f"{v:,.0f}") if part.startswith("(points") else (lambda v: f"{v:.3f} s")
        print(f"{part:32s} {fmt(a) if a is not None else '-':>22s} {fmt(b) if b is not None else '-':>14s}")


if __name__ == "__main__":
    main()
