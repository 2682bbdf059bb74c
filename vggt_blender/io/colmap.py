"""Export a reconstruction as a COLMAP sparse model (numpy + stdlib; the binary and text formats written here).

Layout, as COLMAP's tools, pycolmap and Gaussian-splatting / NeRF loaders (gsplat, nerfstudio) read it:
OUT/images/<name> (the upright photos, nothing else: gsplat pairs the sorted file list of images/ with the
sorted image names) and OUT/sparse/0/{cameras,images,points3D}.{bin|txt}. Cameras are at the original photo
resolution (a loader rescales K by the ratio of the real image size to the camera size); PINHOLE, or the model
refinement solved (SIMPLE_RADIAL, OPENCV). COLMAP's pixel convention (0, 0) = top-left corner of the top-left
pixel is the file's own, so K goes across unchanged. Every point2D that names a point3D is in that point's
track and the other way round.

Frame: the file's own OpenCV world (the first camera's: x right, y down, z forward), extrinsics as stored. The
file's `alignment` (the Z-up scene of Blender and the PLY export) is not applied: COLMAP consumers expect an
OpenCV-like world (docs/REFINEMENT.md, "Frame").
"""

from __future__ import annotations

import os
import shutil
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .atomic import atomic_write
from .reconstruction import Reconstruction
from ..errors import VGGTError
from ..geometry.cameras import mat_to_quat

MODEL_IDS = {"SIMPLE_PINHOLE": 0, "PINHOLE": 1, "SIMPLE_RADIAL": 2, "RADIAL": 3, "OPENCV": 4}
DEPTH_POINTS = 100_000
DEPTH_MIN_CONFIDENCE = 1.5
# A depth point counts as seen by another view when its depth there is within this fraction of that view's depth.
DEPTH_AGREEMENT = 0.01


class ColmapExportError(VGGTError):
    code = "export_failed"


@dataclass
class ColmapModel:
    """What goes into the files: cameras [(model, width, height, params)], per image (camera index, qvec wxyz,
    tvec, name, points2D xy [K,2], point3D index per point2D [K] or -1), points [P,3], colours, errors,
    tracks [(image index, point2D index)] per point."""

    cameras: list[tuple[str, int, int, np.ndarray]]
    image_camera: list[int]
    qvec: np.ndarray
    tvec: np.ndarray
    names: list[str]
    points2d: list[np.ndarray]
    point_of_2d: list[np.ndarray]
    xyz: np.ndarray
    rgb: np.ndarray
    error: np.ndarray
    tracks: list[list[tuple[int, int]]]


def camera_params(rec: Reconstruction, i: int) -> tuple[str, np.ndarray]:
    """COLMAP model name and parameters of view i: the solved distortion model where refinement found one."""
    k = np.asarray(rec.intrinsics[i], dtype=np.float64)
    fx, fy, cx, cy = k[0, 0], k[1, 1], k[0, 2], k[1, 2]
    model = str(rec.extra["distortion_model"]) if "distortion_model" in rec.extra else "PINHOLE"
    dist = np.asarray(rec.extra["distortion"][i], dtype=np.float64) if "distortion" in rec.extra else np.zeros(0)
    if model == "SIMPLE_RADIAL" and abs(fx - fy) <= 1e-9 * fx:
        return model, np.array([fx, cx, cy, dist[0]])
    if model == "OPENCV":
        return model, np.concatenate([[fx, fy, cx, cy], dist[:4]])
    if model not in ("PINHOLE", "SIMPLE_PINHOLE") and np.any(dist != 0):
        # fx != fy cannot be written as SIMPLE_RADIAL: OPENCV holds the same radial term exactly.
        return "OPENCV", np.array([fx, fy, cx, cy, dist[0], 0.0, 0.0, 0.0])
    return "PINHOLE", np.array([fx, fy, cx, cy])


def distort(model: str, params: np.ndarray, xn: np.ndarray) -> np.ndarray:
    """Normalised coordinates [P,2] -> photo pixels with a COLMAP camera model (the ones written here)."""
    x, y = xn[:, 0], xn[:, 1]
    if model in ("SIMPLE_RADIAL", "SIMPLE_PINHOLE"):
        f, cx, cy = params[:3]
        fx = fy = f
        k1 = params[3] if model == "SIMPLE_RADIAL" else 0.0
        k2 = p1 = p2 = 0.0
    else:
        fx, fy, cx, cy = params[:4]
        k1, k2, p1, p2 = (params[4:8] if model == "OPENCV" else np.zeros(4))
    r2 = x * x + y * y
    radial = k1 * r2 + k2 * r2 * r2
    xd = x + x * radial + 2 * p1 * x * y + p2 * (r2 + 2 * x * x)
    yd = y + y * radial + p1 * (r2 + 2 * y * y) + 2 * p2 * x * y
    return np.stack([fx * xd + cx, fy * yd + cy], axis=1)


def project(rec: Reconstruction, i: int, points: np.ndarray) -> np.ndarray:
    """World points [P,3] -> photo pixels of view i through the file's camera (with its distortion)."""
    ext = np.asarray(rec.extrinsics[i], dtype=np.float64)
    cam = points @ ext[:, :3].T + ext[:, 3]
    with np.errstate(divide="ignore", invalid="ignore"):
        xn = cam[:, :2] / cam[:, 2:3]
    model, params = camera_params(rec, i)
    return distort(model, params, xn)


def _image_names(rec: Reconstruction) -> list[str]:
    """Unique file names for images/: the model's image names with the photo's extension."""
    names, seen = [], set()
    for i, stem in enumerate(rec.image_names):
        suffix = Path(rec.display_paths[i] or rec.image_paths[i]).suffix.lower() or ".png"
        name = f"{stem}{suffix}"
        if name.lower() in seen:
            name = f"{stem}_{i:04d}{suffix}"
        seen.add(name.lower())
        names.append(name)
    return names


def build_model(rec: Reconstruction, max_depth_points: int = DEPTH_POINTS,
                min_confidence: float = DEPTH_MIN_CONFIDENCE) -> ColmapModel:
    """The COLMAP model of `rec`: refined tracks when refinement ran, else confidence-filtered depth points
    (each observed in its own view at the photo pixel it was unprojected from)."""
    n = rec.num_images
    cameras: list[tuple[str, int, int, np.ndarray]] = []
    index: dict[tuple, int] = {}
    image_camera = []
    for i in range(n):
        model, params = camera_params(rec, i)
        w, h = (int(v) for v in rec.original_sizes[i])
        key = (model, w, h, tuple(np.round(params, 12)))
        if key not in index:
            index[key] = len(cameras)
            cameras.append((model, w, h, params))
        image_camera.append(index[key])
    ext = np.asarray(rec.extrinsics, dtype=np.float64)
    q = mat_to_quat(ext[:, :, :3])  # x, y, z, w
    qvec = np.concatenate([q[:, 3:4], q[:, :3]], axis=1)

    if "track_points" in rec.extra:
        xyz = np.asarray(rec.extra["track_points"], dtype=np.float64)
        rgb = np.asarray(rec.extra["track_colors"], dtype=np.uint8)
        obs = np.asarray(rec.extra["track_observations"], dtype=np.int64)
        pix = np.asarray(rec.extra["track_pixels"], dtype=np.float64)
        obs_point, obs_view = obs[:, 0], obs[:, 1]
    else:
        xyz, rgb, obs_point, obs_view, pix = _depth_points(rec, max_depth_points, min_confidence)
    points2d, point_of_2d = [], []
    tracks: list[list[tuple[int, int]]] = [[] for _ in range(len(xyz))]
    err_sum = np.zeros(len(xyz))
    for i in range(n):
        sel = np.nonzero(obs_view == i)[0]
        points2d.append(pix[sel])
        point_of_2d.append(obs_point[sel])
        for k, p in enumerate(obs_point[sel]):
            tracks[int(p)].append((i, k))
        if len(sel):
            err = np.linalg.norm(project(rec, i, xyz[obs_point[sel]]) - pix[sel], axis=1)
            np.add.at(err_sum, obs_point[sel], np.where(np.isfinite(err), err, 0.0))
    counts = np.maximum(np.array([len(t) for t in tracks]), 1)
    return ColmapModel(cameras=cameras, image_camera=image_camera, qvec=qvec, tvec=ext[:, :, 3].copy(),
                       names=_image_names(rec), points2d=points2d, point_of_2d=point_of_2d, xyz=xyz, rgb=rgb,
                       error=err_sum / counts, tracks=tracks)


def _depth_points(rec: Reconstruction, max_points: int, min_confidence: float):
    """Confidence-filtered depth points, each observed in its own view at the photo pixel it came from and in
    every other view where it projects onto that view's depth surface (within DEPTH_AGREEMENT)."""
    good = rec.valid_mask & np.isfinite(rec.depth) & (rec.depth > 0) & (rec.depth_conf >= min_confidence)
    good &= np.all(np.isfinite(rec.world_points), axis=-1)
    view, my, mx = np.nonzero(good)
    if len(view) > max_points:
        pick = np.sort(np.random.default_rng(0).choice(len(view), size=max_points, replace=False))
        view, my, mx = view[pick], my[pick], mx[pick]
    xyz = rec.world_points[view, my, mx].astype(np.float64)
    rgb = rec.colors[view, my, mx].astype(np.uint8)
    pm = np.asarray(rec.pixel_map, dtype=np.float64)
    pix = np.stack([pm[view, 0] * (mx + 0.5) + pm[view, 2], pm[view, 1] * (my + 0.5) + pm[view, 3]], axis=1)
    points, views, pixels = [np.arange(len(view))], [view], [pix]
    h, w = rec.model_hw
    ext = np.asarray(rec.extrinsics, dtype=np.float64)
    for j in range(rec.num_images):
        other = np.nonzero(view != j)[0]
        z = xyz[other] @ ext[j, 2, :3] + ext[j, 2, 3]
        uv = project(rec, j, xyz[other])
        with np.errstate(invalid="ignore"):
            qx = np.floor((uv[:, 0] - pm[j, 2]) / pm[j, 0])
            qy = np.floor((uv[:, 1] - pm[j, 3]) / pm[j, 1])
        inside = (z > 0) & (qx >= 0) & (qx < w) & (qy >= 0) & (qy < h)
        idx = np.nonzero(inside)[0]
        d = rec.depth[j, qy[idx].astype(np.int64), qx[idx].astype(np.int64)]
        seen = good[j, qy[idx].astype(np.int64), qx[idx].astype(np.int64)] & (np.abs(z[idx] - d) <= DEPTH_AGREEMENT * d)
        idx = idx[seen]
        points.append(other[idx])
        views.append(np.full(len(idx), j))
        pixels.append(uv[idx])
    return xyz, rgb, np.concatenate(points), np.concatenate(views), np.concatenate(pixels)


# ------------------------------------------------------------------------------------------------ writers


def _cameras_bin(m: ColmapModel) -> bytes:
    out = [struct.pack("<Q", len(m.cameras))]
    for c, (model, w, h, params) in enumerate(m.cameras):
        out.append(struct.pack("<iiQQ", c + 1, MODEL_IDS[model], w, h))
        out.append(np.asarray(params, dtype="<f8").tobytes())
    return b"".join(out)


def _images_bin(m: ColmapModel) -> bytes:
    out = [struct.pack("<Q", len(m.names))]
    for i, name in enumerate(m.names):
        out.append(struct.pack("<i", i + 1))
        out.append(np.concatenate([m.qvec[i], m.tvec[i]]).astype("<f8").tobytes())
        out.append(struct.pack("<i", m.image_camera[i] + 1))
        out.append(name.encode("utf-8") + b"\0")
        out.append(struct.pack("<Q", len(m.points2d[i])))
        rows = np.zeros(len(m.points2d[i]), dtype=[("x", "<f8"), ("y", "<f8"), ("id", "<i8")])
        rows["x"], rows["y"] = m.points2d[i][:, 0], m.points2d[i][:, 1]
        rows["id"] = m.point_of_2d[i] + 1
        out.append(rows.tobytes())
    return b"".join(out)


def _points_bin(m: ColmapModel) -> bytes:
    out = [struct.pack("<Q", len(m.xyz))]
    for p in range(len(m.xyz)):
        out.append(struct.pack("<Q", p + 1))
        out.append(m.xyz[p].astype("<f8").tobytes())
        out.append(m.rgb[p].astype(np.uint8).tobytes())
        out.append(struct.pack("<dQ", float(m.error[p]), len(m.tracks[p])))
        out.append(np.array([(i + 1, k) for i, k in m.tracks[p]], dtype="<i4").reshape(-1).tobytes())
    return b"".join(out)


def _g(v: float) -> str:
    return repr(float(v))  # shortest text that reads back to the same double


def _cameras_txt(m: ColmapModel) -> bytes:
    lines = ["# Camera list with one line of data per camera:",
             "#   CAMERA_ID, MODEL, WIDTH, HEIGHT, PARAMS[]", f"# Number of cameras: {len(m.cameras)}"]
    for c, (model, w, h, params) in enumerate(m.cameras):
        lines.append(" ".join([str(c + 1), model, str(w), str(h)] + [_g(p) for p in params]))
    return ("\n".join(lines) + "\n").encode("utf-8")


def _images_txt(m: ColmapModel) -> bytes:
    lines = ["# Image list with two lines of data per image:",
             "#   IMAGE_ID, QW, QX, QY, QZ, TX, TY, TZ, CAMERA_ID, NAME",
             "#   POINTS2D[] as (X, Y, POINT3D_ID)", f"# Number of images: {len(m.names)}"]
    for i, name in enumerate(m.names):
        if any(ch.isspace() for ch in name):
            raise ColmapExportError(f"{name}: COLMAP's text format cannot hold a name with spaces; "
                                    "export the binary format instead", file=name)
        lines.append(" ".join([str(i + 1)] + [_g(v) for v in m.qvec[i]] + [_g(v) for v in m.tvec[i]]
                              + [str(m.image_camera[i] + 1), name]))
        lines.append(" ".join(f"{_g(x)} {_g(y)} {int(p) + 1}" for (x, y), p in zip(m.points2d[i], m.point_of_2d[i])))
    return ("\n".join(lines) + "\n").encode("utf-8")


def _points_txt(m: ColmapModel) -> bytes:
    lines = ["# 3D point list with one line of data per point:",
             "#   POINT3D_ID, X, Y, Z, R, G, B, ERROR, TRACK[] as (IMAGE_ID, POINT2D_IDX)",
             f"# Number of points: {len(m.xyz)}"]
    for p in range(len(m.xyz)):
        lines.append(" ".join([str(p + 1)] + [_g(v) for v in m.xyz[p]] + [str(int(c)) for c in m.rgb[p]]
                              + [_g(m.error[p])] + [f"{i + 1} {k}" for i, k in m.tracks[p]]))
    return ("\n".join(lines) + "\n").encode("utf-8")


def export_colmap(rec: Reconstruction, out_dir: str | os.PathLike[str], text: bool = False,
                  copy_images: bool = True) -> ColmapModel:
    """Write OUT/sparse/0/{cameras,images,points3D}.bin (.txt with `text`) and OUT/images/; -> the model.

    Each file is written atomically; a missing photo is reported before anything is written."""
    out = Path(out_dir)
    model = build_model(rec)
    sources = [Path(rec.display_paths[i] or rec.image_paths[i]) for i in range(rec.num_images)]
    if copy_images:
        for src in sources:
            if not src.is_file():
                raise ColmapExportError(f"{src}: photo not found (COLMAP export copies the photos)", file=str(src))
    sparse = out / "sparse" / "0"
    try:
        sparse.mkdir(parents=True, exist_ok=True)
        if copy_images:
            (out / "images").mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ColmapExportError(f"{out}: cannot create the folder: {exc.strerror or exc}", file=str(out)) from exc
    ext = "txt" if text else "bin"
    writers = ((_cameras_txt, _images_txt, _points_txt) if text else (_cameras_bin, _images_bin, _points_bin))
    for stem, writer in zip(("cameras", "images", "points3D"), writers):
        with atomic_write(sparse / f"{stem}.{ext}", ColmapExportError, "the COLMAP model") as fh:
            fh.write(writer(model))
    if copy_images:
        for src, name in zip(sources, model.names):
            with atomic_write(out / "images" / name, ColmapExportError, "the photo") as fh, open(src, "rb") as fin:
                shutil.copyfileobj(fin, fh)
    return model


# What the export's world is, for the command's report and the docs (see the module text).
FRAME = "the file's OpenCV world (first camera; the scene alignment is not applied)"

__all__ = ["FRAME", "ColmapExportError", "ColmapModel", "build_model", "camera_params", "export_colmap", "project"]
