"""SIFT features of the photos at their original resolution (pycolmap's extractor, CPU)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pycolmap

from ..errors import ImageLoadError


@dataclass
class Features:
    """Keypoints in photo pixels (continuous, (0, 0) = top-left corner, like the file's intrinsics), their
    SIFT scale [K] (in the pixels they were detected in), L2-normalised float32 descriptors [K, 128] and the
    photo's colour under each keypoint (uint8 [K, 3]). The photo itself is not kept: a long shot's frames
    would all stay in memory."""

    xy: np.ndarray
    descriptors: np.ndarray
    colors: np.ndarray
    scale: np.ndarray


def _read(path: str) -> "pycolmap.Bitmap":
    if not Path(path).is_file():
        raise ImageLoadError(f"{path}: photo not found (refinement reads the photos themselves)", file=path)
    bitmap = pycolmap.Bitmap.read(path, True)
    if bitmap is None:
        raise ImageLoadError(f"{path}: cannot read the photo", file=path)
    return bitmap


def extract_features(path: str, size_wh: tuple[int, int], max_features: int, max_image_size: int,
                     rgb: np.ndarray | None = None) -> Features:
    """Features of one photo (`rgb`, uint8 [H, W, 3], when the caller decoded it, e.g. a video frame; else
    the file at `path`). `size_wh` is the photo size the file's intrinsics refer to; a photo read at another
    size (a rotated original, a replaced file) is refused rather than matched in the wrong pixels."""
    if rgb is None:
        rgb = _read(path).to_array()
    if rgb.ndim == 2:
        rgb = np.repeat(rgb[..., None], 3, axis=2)
    height, width = rgb.shape[:2]
    if (width, height) != tuple(size_wh):
        raise ImageLoadError(f"{path}: photo is {width}x{height} but the reconstruction expects "
                             f"{size_wh[0]}x{size_wh[1]}", file=path)
    gray = np.ascontiguousarray(
        np.round(rgb[..., :3].astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)).clip(0, 255)
        .astype(np.uint8))
    scale = 1.0
    if max(width, height) > max_image_size:
        scale = max_image_size / max(width, height)
        small = pycolmap.Bitmap.from_array(gray).rescale(int(round(width * scale)), int(round(height * scale)))
        gray = np.ascontiguousarray(small.to_array())
    options = pycolmap.FeatureExtractionOptions()
    options.sift.max_num_features = int(max_features)
    options.max_image_size = -1
    extractor = pycolmap.FeatureExtractor.create(options, pycolmap.Device.cpu)
    keypoints, descriptors = extractor.extract_from_uint8_array(gray)
    xy = np.array([(kp.x, kp.y) for kp in keypoints], dtype=np.float64).reshape(-1, 2)
    desc = np.asarray(descriptors.data, dtype=np.float32).reshape(len(xy), 128)
    size = np.array([kp.compute_scale() for kp in keypoints], dtype=np.float64).reshape(-1)
    if len(xy) > max_features:
        # COLMAP's limit counts detections, and one detection gives up to two orientations: a 779x520 photo
        # came back with 12,072 features for a limit of 4,096, and matching cost grows with the product.
        # Keep the coarsest (most repeatable) ones, as COLMAP itself drops the finest octaves first.
        keep = np.sort(np.argsort(-size, kind="stable")[:max_features])
        xy, desc, size = xy[keep], desc[keep], size[keep]
    desc /= np.maximum(np.linalg.norm(desc, axis=1, keepdims=True), 1e-12)
    xy /= scale  # COLMAP's keypoints already use the pixel-corner origin
    x = np.clip(xy[:, 0].astype(np.int64), 0, width - 1)
    y = np.clip(xy[:, 1].astype(np.int64), 0, height - 1)
    return Features(xy=xy, descriptors=desc, colors=np.ascontiguousarray(rgb[y, x, :3]), scale=size)
