"""Point tracks into a Movie Clip's own tracking data, so Blender's tracker tools (solve, plane tracks,
stabilisation) work on them.

A track is a list of (frame_number, x_photo, y_photo): source frame numbers (0-based, as in the
reconstruction file) and continuous photo pixels with (0, 0) at the top-left corner of the top-left pixel.
Blender's markers are in normalised clip coordinates, (0, 0) the bottom-left corner and (1, 1) the
top-right one, on clip frames; with the clip starting at SHOT_FRAME_START (scene/shot.py), source frame n
is clip and scene frame SHOT_FRAME_START + n.
"""

from __future__ import annotations

from typing import Iterable, Sequence

import bpy

from .shot import shot_frame


def marker_position(x_photo: float, y_photo: float, width: int, height: int) -> tuple[float, float]:
    """Photo pixels (top-left origin, y down) -> normalised clip coordinates (bottom-left origin, y up)."""
    return float(x_photo) / width, 1.0 - float(y_photo) / height


def create_clip_tracks(clip: bpy.types.MovieClip, tracks: Iterable[Sequence[tuple[int, float, float]]],
                       width: int | None = None, height: int | None = None, prefix: str = "VGGT",
                       views: Sequence[int] | None = None) -> list[bpy.types.MovieTrackingTrack]:
    """One tracking track per input track, one marker per frame it is seen in. `views`: the frame numbers
    of the reconstructed views; where a track misses one between its first and last, a disabled marker
    marks the gap (Blender's solver only reads markers on their exact frames either way)."""
    width = int(width or clip.size[0])
    height = int(height or clip.size[1])
    if width <= 0 or height <= 0:
        raise ValueError(f"the clip {clip.name} has no size; give width and height")
    created = []
    for index, track_points in enumerate(tracks):
        points = sorted((int(f), float(x), float(y)) for f, x, y in track_points)
        if not points:
            continue
        track = clip.tracking.tracks.new(name=f"{prefix}_{index:05d}", frame=shot_frame(points[0][0]))
        for number, x, y in points:
            frame = shot_frame(number)
            marker = track.markers.find_frame(frame, exact=True) or track.markers.insert_frame(frame, co=(0.0, 0.0))
            marker.co = marker_position(x, y, width, height)
            marker.mute = False
        if views:  # lost at a reconstructed view: a disabled marker there, so the track has a gap
            seen = {n for n, _, _ in points}
            for number in views:
                if points[0][0] < number < points[-1][0] and number not in seen:
                    previous = track.markers.find_frame(shot_frame(number), exact=False)
                    gap = track.markers.insert_frame(shot_frame(number), co=previous.co)
                    gap.mute = True
        created.append(track)
    clip["vggt_tracks"] = int(clip.get("vggt_tracks", 0)) + len(created)  # tracks hold no custom properties
    return created


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
