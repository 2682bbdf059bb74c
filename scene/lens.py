"""Lens distortion where Blender keeps it: a Movie Clip's tracking camera.

The refinement solves COLMAP lens models (SIMPLE_RADIAL, OPENCV); Blender's tracking camera holds focal length,
principal point, pixel aspect and distortion, and the compositor's Movie Distortion node undistorts a plate with
them. The file's intrinsics are the pinhole part, so the scene's cameras are exact for the undistorted image.
"""

from __future__ import annotations

import bpy


def set_tracking_camera(clip: bpy.types.MovieClip, fx: float, fy: float, cx: float, cy: float, width: int,
                        height: int, sensor_width: float = 36.0,
                        distortion: tuple[float, float, float] = (0.0, 0.0, 0.0)) -> None:
    """The clip's tracking camera from pinhole intrinsics in photo pixels (OpenCV K): focal length in
    pixels and millimetres, sensor, principal point, pixel aspect, polynomial distortion k1, k2, k3."""
    cam = clip.tracking.camera
    cam.sensor_width = float(sensor_width)
    cam.units = "PIXELS"
    cam.pixel_aspect = float(fy / fx)  # Blender: pixel width over height, as the render setting
    cam.focal_length_pixels = float(fx)
    if hasattr(cam, "principal_point_pixels"):  # Blender 3.5+: pixels here, normalised in principal_point
        cam.principal_point_pixels = (float(cx), float(height - cy))
    else:
        cam.principal_point = (float(cx), float(height - cy))
    cam.distortion_model = "POLYNOMIAL"
    cam.k1, cam.k2, cam.k3 = (float(v) for v in distortion)


def lens_distortion(rec, view: int | None = None) -> tuple[tuple[float, float, float], list[str]]:
    """The refinement's solved distortion as Blender's polynomial terms (k1, k2, k3) for one view (`view`
    None: the median over the views), and warnings for what that model cannot hold."""
    import numpy as np

    if "distortion" not in rec.extra:
        return (0.0, 0.0, 0.0), []
    model = str(np.asarray(rec.extra.get("distortion_model", "PINHOLE")).item())
    if model == "PINHOLE":
        return (0.0, 0.0, 0.0), []
    per_view = np.asarray(rec.extra["distortion"], dtype=np.float64).reshape(len(rec.image_names), -1)
    dist = per_view[view] if view is not None else np.median(per_view, axis=0)
    # COLMAP's radial terms act on normalised coordinates exactly as Blender's polynomial model does
    # (checked through the compositor's Movie Distortion node, docs/REFINEMENT.md).
    if model == "SIMPLE_RADIAL":
        return (float(dist[0]), 0.0, 0.0), []
    if model == "OPENCV":
        warnings = []
        if np.abs(dist[2:4]).max() > 1e-9:
            warnings.append(f"the tracking camera leaves out the tangential distortion (p1 {dist[2]:.2e}, "
                            f"p2 {dist[3]:.2e}): Blender's polynomial model has none")
        return (float(dist[0]), float(dist[1]), 0.0), warnings
    return (0.0, 0.0, 0.0), [f"distortion model {model} is not written to the tracking camera"]


def tracking_camera_from_reconstruction(clip: bpy.types.MovieClip, rec, sensor_width: float = 36.0,
                                        view: int | None = None) -> list[str]:
    """Set the clip's tracking camera from the (refined) photo intrinsics and the refinement's radial
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
    radial, lens_warnings = lens_distortion(rec, view)
    width, height = (int(v) for v in rec.original_sizes[0 if view is None else view])
    set_tracking_camera(clip, fx, fy, cx, cy, width, height, sensor_width=sensor_width, distortion=radial)
    return warnings + lens_warnings
