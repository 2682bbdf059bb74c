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

from .lens import tracking_camera_from_reconstruction
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


# The refinement's tracks (vggt_blender/refine/pipeline.py): `track_observations` int [M,2] rows of
# (track id, view) and `track_pixels` float [M,2] photo pixels, the inlier observations it solved with.
TRACK_KEYS = ("track_observations", "track_pixels")


def refined_tracks(rec, frame_numbers) -> list[list[tuple[int, float, float]]]:
    """The refined file's tracks as create_clip_tracks takes them: per track, (frame_number, x, y) in the
    order of its views ([] when the file has no tracks or they do not fit its views)."""
    import numpy as np

    if not all(key in rec.extra for key in TRACK_KEYS):
        return []
    obs = np.asarray(rec.extra["track_observations"]).reshape(-1, 2).astype(np.int64)
    xy = np.asarray(rec.extra["track_pixels"], dtype=np.float64).reshape(-1, 2)
    numbers = np.asarray(frame_numbers, dtype=np.int64)
    if len(obs) != len(xy) or not len(obs) or obs[:, 1].min() < 0 or obs[:, 1].max() >= len(numbers):
        return []
    order = np.lexsort((numbers[obs[:, 1]], obs[:, 0]))
    tracks: list[list[tuple[int, float, float]]] = []
    last = None
    for k in order:
        if obs[k, 0] != last:
            tracks.append([])
            last = obs[k, 0]
        tracks[-1].append((int(numbers[obs[k, 1]]), float(xy[k, 0]), float(xy[k, 1])))
    return tracks


def add_reconstruction_tracks(clip: bpy.types.MovieClip, rec, shot, sensor_width: float = 36.0) -> list[str]:
    """A refined shot's tracks into the clip's tracking data and its tracking camera from the refined
    camera; returns warnings (nothing is written when the file has no tracks)."""
    tracks = refined_tracks(rec, shot.frame_numbers)
    if not tracks:
        return []
    width, height = (int(v) for v in rec.original_sizes[0])
    warnings = []
    if tuple(int(v) for v in clip.size) != (width, height):
        warnings.append(f"the clip {clip.name} is {clip.size[0]}x{clip.size[1]}, the reconstruction's frames "
                        f"{width}x{height}: the tracks are placed in the reconstruction's frame")
    create_clip_tracks(clip, tracks, width, height, views=[int(n) for n in shot.frame_numbers])
    warnings += tracking_camera_from_reconstruction(clip, rec, sensor_width)
    return warnings
