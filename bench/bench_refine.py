"""Camera refinement benchmark: seconds to refine the kitchen photos and 100 rendered views, and camera errors.

    python bench/bench_refine.py [--kitchen DIR] [--synthetic DIR] [--views N] [--cases kitchen,synthetic]
        [--shared-intrinsics] [--json FILE]

- kitchen (shared/photos/kitchen; the table names how many photos): no model weights here, so the starting
  cameras are COLMAP's own solve from
  scratch (pycolmap: exhaustive matching + incremental mapping; its time is printed too) perturbed like
  feed-forward errors (2 degrees, 5 % position, 5 % focal), with flat "predicted" depth at each view's median
  point depth. Errors are against that COLMAP solve.
- synthetic (100 views, 640x480): tests/refine_groundtruth.py's scene (rendered into --synthetic when absent,
  about 5 s a view), exact depth, the same perturbation; errors against the true cameras.

Errors after a similarity alignment of camera centres: rotation (degrees), position (% of the mean camera
distance from the centroid), focal (%). Default refinement options (pinhole, one focal per camera), or one lens
for all photos with --shared-intrinsics.
"total s" is wall time, "CPU s" the process's CPU time (all threads): on a shared machine the second says more.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

import refine_groundtruth as gt  # noqa: E402

from vggt_blender.io.reconstruction import make_provenance, make_reconstruction  # noqa: E402
from vggt_blender.options import RefineOptions  # noqa: E402
from vggt_blender.refine import refine_reconstruction  # noqa: E402


def colmap_solve(photo_dir: Path, work: Path) -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray, float]:
    """COLMAP from scratch on the photos: (paths, extrinsics, intrinsics, median depth per view, seconds)."""
    import pycolmap

    started = time.monotonic()
    db = work / "database.db"
    reader = pycolmap.ImageReaderOptions()
    reader.camera_model = "SIMPLE_PINHOLE"
    pycolmap.extract_features(db, photo_dir, reader_options=reader, device=pycolmap.Device.cpu)
    pycolmap.match_exhaustive(db, device=pycolmap.Device.cpu)
    models = pycolmap.incremental_mapping(db, photo_dir, work / "sparse")
    seconds = time.monotonic() - started
    model = max(models.values(), key=lambda m: m.num_reg_images())
    images = sorted(model.images.values(), key=lambda im: im.name)
    paths = [str(photo_dir / im.name) for im in images]
    ext = np.stack([np.asarray(im.cam_from_world().matrix()) for im in images])
    k = np.stack([np.asarray(model.cameras[im.camera_id].calibration_matrix()) for im in images])
    depth = []
    for im, e in zip(images, ext):
        xyz = np.array([model.points3D[p.point3D_id].xyz for p in im.get_observation_points2D()])
        depth.append(float(np.median(xyz @ e[2, :3] + e[2, 3])))
    return paths, ext, k, np.array(depth), seconds


def kitchen_case(photo_dir: Path, work: Path, options: RefineOptions) -> dict:
    from PIL import Image

    paths, ext, k, median_depth, colmap_s = colmap_solve(photo_dir, work)
    w, h = Image.open(paths[0]).size
    mh, mw = 120, int(round(120 * w / h))
    ext_p, k_p = gt.perturb_cameras(ext, k)
    a_inv = np.linalg.inv(np.array([[w / mw, 0, 0], [0, h / mh, 0], [0, 0, 1.0]]))
    depth = np.broadcast_to(median_depth[:, None, None], (len(paths), mh, mw)).astype(np.float32)
    rec = make_reconstruction(depth, ext_p, a_inv @ k_p, image_paths=paths,
                              pixel_map=np.tile([w / mw, h / mh, 0.0, 0.0], (len(paths), 1)),
                              original_sizes=np.tile([w, h], (len(paths), 1)),
                              provenance=make_provenance(checkpoint="colmap solve, perturbed"))
    return run_case(f"kitchen ({len(paths)} photos, {w}x{h})", rec, ext, k, {"colmap_from_scratch_s": colmap_s},
                    options)


def synthetic_case(scene_dir: Path, views: int, options: RefineOptions) -> dict:
    gt.render(scene_dir, num_views=views, samples=4)
    truth = np.load(scene_dir / "truth.npz")
    ext_t, k_t = truth["extrinsics"][:views], truth["intrinsics"][:views]
    ext_p, k_p = gt.perturb_cameras(ext_t, k_t)
    rec = gt.scene_reconstruction(scene_dir, ext_p, k_p)
    return run_case(f"rendered ({views} views, 640x480)", rec, ext_t, k_t, {}, options)


def run_case(name: str, rec, ext_ref: np.ndarray, k_ref: np.ndarray, extra: dict, options: RefineOptions) -> dict:
    if options.shared_intrinsics:
        name += ", shared"
    print(f"{name}: refining...", file=sys.stderr, flush=True)
    started, cpu_started = time.monotonic(), time.process_time()
    out, report = refine_reconstruction(rec, options)
    seconds, cpu = time.monotonic() - started, time.process_time() - cpu_started
    before = gt.camera_errors(rec.extrinsics, rec.intrinsics, ext_ref, k_ref)
    after = gt.camera_errors(out.extrinsics, out.intrinsics, ext_ref, k_ref)
    row = {"case": name, "seconds": seconds, "cpu_seconds": cpu, **{f"{k}_s": v for k, v in report.timings.items()},
           "pairs": report.pairs, "points": report.points, "observations": report.observations,
           "refined": f"{len(report.refined_views)}/{rec.num_images}",
           "error_px_before": report.mean_error_before, "error_px": report.mean_error,
           **{f"{k}_before": float(v.mean()) for k, v in before.items()},
           **{f"{k}_after": float(v.mean()) for k, v in after.items()}, **extra}
    print(json.dumps(row), file=sys.stderr, flush=True)
    return row


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kitchen", type=Path, default=ROOT.parent / "shared" / "photos" / "kitchen")
    parser.add_argument("--synthetic", type=Path, default=Path(tempfile.gettempdir()) / "vggt_refine_bench_100")
    parser.add_argument("--views", type=int, default=100)
    parser.add_argument("--cases", default="kitchen,synthetic", help="comma-separated: kitchen, synthetic")
    parser.add_argument("--shared-intrinsics", action="store_true", help="one lens for every photo")
    parser.add_argument("--json", type=Path, help="also write the rows here")
    args = parser.parse_args()
    options = RefineOptions(shared_intrinsics=args.shared_intrinsics)
    rows = []
    cases = set(args.cases.split(","))
    with tempfile.TemporaryDirectory() as work:
        if "kitchen" not in cases:
            pass
        elif args.kitchen.is_dir():
            rows.append(kitchen_case(args.kitchen, Path(work), options))
        else:
            print(f"{args.kitchen}: not found, kitchen case skipped", file=sys.stderr)
    if "synthetic" in cases:
        rows.append(synthetic_case(args.synthetic, args.views, options))
    print(f"machine: {os.cpu_count()} CPU cores, {platform.processor() or platform.machine()}, "
          f"Python {platform.python_version()}")
    head = (f"| {'case':<32} | {'total s':>7} | {'CPU s':>6} | {'features':>8} | {'matching':>8} | {'BA':>6} | {'points':>6} | "
            f"{'px before':>9} | {'px after':>8} | {'rot deg':>13} | {'focal %':>13} |")
    print(head)
    print("|" + "|".join("-" * (len(c)) for c in head.split("|")[1:-1]) + "|")
    for r in rows:
        print(f"| {r['case']:<32} | {r['seconds']:>7.1f} | {r['cpu_seconds']:>6.1f} | {r['features_s']:>8.1f} | {r['matching_s']:>8.1f} | "
              f"{r['adjustment_s']:>6.1f} | {r['points']:>6} | {r['error_px_before']:>9.2f} | {r['error_px']:>8.2f} | "
              f"{r['rotation_deg_before']:>5.2f} -> {r['rotation_deg_after']:<5.3f} | "
              f"{r['focal_pct_before']:>5.2f} -> {r['focal_pct_after']:<5.3f} |")
        if "colmap_from_scratch_s" in r:
            print(f"  (COLMAP from scratch on the same photos: {r['colmap_from_scratch_s']:.1f} s)")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
