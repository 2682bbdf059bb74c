"""Lens distortion where Blender keeps it: a Movie Clip's tracking camera.

The refinement solves COLMAP lens models (SIMPLE_RADIAL, OPENCV); Blender's tracking camera holds focal length,
principal point, pixel aspect and distortion, and the compositor's Movie Distortion node undistorts a plate with
them. The file's intrinsics are the pinhole part, so the scene's cameras are exact for the undistorted image.
"""

from __future__ import annotations

import bpy


NO_DISTORTION: dict[str, float | str] = {"distortion_model": "POLYNOMIAL", "k1": 0.0, "k2": 0.0, "k3": 0.0}


def set_tracking_camera(clip: bpy.types.MovieClip, fx: float, fy: float, cx: float, cy: float, width: int,
                        height: int, sensor_width: float = 36.0,
                        distortion: dict[str, float | str] | None = None) -> None:
    """The clip's tracking camera from pinhole intrinsics in photo pixels (OpenCV K): focal length in
    pixels and millimetres, sensor, principal point, pixel aspect, and `distortion` (tracking camera fields,
    as `blender_distortion` makes them; None: none)."""
    cam = clip.tracking.camera
    cam.sensor_width = float(sensor_width)
    cam.units = "PIXELS"
    cam.pixel_aspect = float(fy / fx)  # Blender: pixel width over height, as the render setting
    cam.focal_length_pixels = float(fx)
    if hasattr(cam, "principal_point_pixels"):  # Blender 3.5+: pixels here, normalised in principal_point
        cam.principal_point_pixels = (float(cx), float(height - cy))
    else:
        cam.principal_point = (float(cx), float(height - cy))
    for name, value in (distortion or NO_DISTORTION).items():
        setattr(cam, name, value if name == "distortion_model" else float(value))


def blender_distortion(model: str, params) -> tuple[dict[str, float | str], list[str]]:
    """A COLMAP lens model's distortion parameters as tracking camera fields, and warnings.

    Radial terms act on normalised coordinates in both. Tangential terms differ: libmv (Blender's tracker)
    puts p1 on the x-term r^2 + 2x^2 and measures y upwards, where COLMAP and OpenCV put p2 there and measure
    y downwards, so COLMAP's (p1, p2) are Blender's Brown (p2, -p1). Measured through the compositor's Movie
    Distortion node: docs/REFINEMENT.md and bench/check_lens_distortion.py.
    """
    p = [float(v) for v in params]
    if model == "PINHOLE":
        return dict(NO_DISTORTION), []
    if model == "SIMPLE_RADIAL":
        return {"distortion_model": "POLYNOMIAL", "k1": p[0], "k2": 0.0, "k3": 0.0}, []
    if model == "RADIAL":
        return {"distortion_model": "POLYNOMIAL", "k1": p[0], "k2": p[1], "k3": 0.0}, []
    if model == "OPENCV":
        k1, k2, p1, p2 = p[:4]
        if p1 == 0.0 and p2 == 0.0:
            return {"distortion_model": "POLYNOMIAL", "k1": k1, "k2": k2, "k3": 0.0}, []
        return {"distortion_model": "BROWN", "brown_k1": k1, "brown_k2": k2, "brown_k3": 0.0, "brown_k4": 0.0,
                "brown_p1": p2, "brown_p2": -p1}, []
    return dict(NO_DISTORTION), [f"distortion model {model} is not written to the tracking camera"]


def lens_distortion(rec, view: int | None = None) -> tuple[dict[str, float | str], list[str]]:
    """The refinement's solved distortion as tracking camera fields for one view (`view` None: the median
    over the views), and warnings for what Blender cannot hold."""
    import numpy as np

    if "distortion" not in rec.extra:
        return dict(NO_DISTORTION), []
    model = str(np.asarray(rec.extra.get("distortion_model", "PINHOLE")).item())
    per_view = np.asarray(rec.extra["distortion"], dtype=np.float64).reshape(len(rec.image_names), -1)
    return blender_distortion(model, per_view[view] if view is not None else np.median(per_view, axis=0))


def has_distortion(fields: dict[str, float | str]) -> bool:
    return any(value != 0.0 for name, value in fields.items() if name != "distortion_model")


def tracking_camera_from_reconstruction(clip: bpy.types.MovieClip, rec, sensor_width: float = 36.0,
                                        view: int | None = None) -> list[str]:
    """Set the clip's tracking camera from the (refined) photo intrinsics and the refinement's
    distortion; returns warnings. `view`: that view's camera; None: one camera for the whole shot (a
    refinement with shared intrinsics gives every view the same one; otherwise the median is used)."""
    import numpy as np

    warnings = []
    K = np.asarray(rec.intrinsics, dtype=np.float64)
    if view is not None:
        fx, fy, cx, cy = (float(K[view, r, c]) for r, c in ((0, 0), (1, 1), (0, 2), (1, 2)))
    else:
        fx, fy, cx, cy = (float(np.median(K[:, r, c])) for r, c in ((0, 0), (1, 1), (0, 2), (1, 2)))
        if np.ptp(K[:, 0, 0]) > 1e-6 * fx:
            warnings.append(f"the views' focal lengths differ ({K[:, 0, 0].min():.1f}-{K[:, 0, 0].max():.1f} px); "
                            f"the clip's tracking camera has their median {fx:.1f} px (refine with shared "
                            "intrinsics for one camera)")
    distortion, lens_warnings = lens_distortion(rec, view)
    width, height = (int(v) for v in rec.original_sizes[0 if view is None else view])
    set_tracking_camera(clip, fx, fy, cx, cy, width, height, sensor_width=sensor_width, distortion=distortion)
    return warnings + lens_warnings
