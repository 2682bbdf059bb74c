"""A shot (video or image sequence) in Blender: one animated camera on the plate.

The camera is keyed at scene frame SHOT_FRAME_START + frame_number for every reconstructed view (a stride
leaves the frames between keys interpolated, linearly), with the source as its Movie Clip background:
the clip starts at SHOT_FRAME_START with no offset, so scene frame SHOT_FRAME_START + n shows source frame
n (for a video the n-th frame, 0-based; for an image sequence the file numbered first_number + n; Blender
numbers a clip's frames from 1 and reads sequence files from the first file's number on). Scene fps
(fps/fps_base, exact for 23.976 and 29.97), frame range and render resolution come from the source.

Quaternions are made sign-continuous key to key (`make_compatible`) so the linear interpolation in
between never takes the long way round.
"""

from __future__ import annotations

import os
from fractions import Fraction

import bpy

from ..vggt_blender.shot.selection import blender_fps
from .cameras import create_keyed_camera, store_image_properties

SHOT_FRAME_START = 1  # scene frame of source frame 0 (Blender's default first frame)
SHOT_MAX_PLANES = 24  # depth planes for a shot: at most this many views, spread over it


def shot_frame(frame_number: int) -> int:
    return SHOT_FRAME_START + int(frame_number)


def load_shot_clip(rec, shot) -> tuple[bpy.types.MovieClip | None, str | None]:
    """The source as a Movie Clip (None and a warning when it cannot be loaded). A sequence is loaded from
    its first file (number `source_first_number`), so clip frame 1 is source frame 0."""
    path = shot.source_video
    if shot.source_kind == "sequence":
        path = _first_sequence_file(rec, shot)
    if not path or not os.path.exists(path):
        return None, f"shot source not found: {path}"
    try:
        clip = bpy.data.movieclips.load(path, check_existing=True)
    except RuntimeError as exc:
        return None, f"could not load the shot {path} as a movie clip: {exc}"
    clip.frame_start = SHOT_FRAME_START
    clip.frame_offset = 0
    return clip, None


def _first_sequence_file(rec, shot) -> str:
    """The sequence's first file: the first view's file with its number replaced by the first number."""
    import re

    path = str(rec.image_paths[0])
    folder, name = os.path.split(path)
    match = re.search(r"(\d+)(?=\D*$)", name)
    if match is None:
        return path
    digits = match.group(1)
    number = str(int(shot.source_first_number)).zfill(len(digits))
    return os.path.join(folder, name[:match.start()] + number + name[match.end():])


def set_scene_from_shot(scene: bpy.types.Scene, shot, rec) -> None:
    """Scene fps, frame range (the reconstructed frames) and render size (the source frame)."""
    fps, fps_base = blender_fps(Fraction(*shot.fps_fraction))
    scene.render.fps = int(fps)
    scene.render.fps_base = float(fps_base)
    numbers = [int(n) for n in shot.frame_numbers]
    scene.frame_start = shot_frame(min(numbers))
    scene.frame_end = shot_frame(max(numbers))
    width, height = (int(v) for v in rec.original_sizes[0])
    scene.render.resolution_x, scene.render.resolution_y = width, height
    scene.render.resolution_percentage = 100


def create_shot_camera(rec, shot, scale: float, collection: bpy.types.Collection, scene: bpy.types.Scene,
                       name: str, scene_size: float, clip: bpy.types.MovieClip | None = None
                       ) -> bpy.types.Object:
    """One camera keyed at SHOT_FRAME_START + frame_number per view (pose, lens, shifts), the clip behind."""
    ob, first = create_keyed_camera(rec, scale, collection, name, scene_size,
                                    [shot_frame(number) for number in shot.frame_numbers])
    cam = ob.data
    if clip is not None:
        cam.show_background_images = True
        bg = cam.background_images.new()
        bg.source = "MOVIE_CLIP"
        bg.clip = clip
        bg.use_camera_clip = False
        bg.frame_method = "STRETCH"  # the plate fills the camera frame, as the intrinsics assume
        bg.alpha = 1.0
    store_image_properties(ob, first, 0, shot.source_video, "animated_camera")
    ob["vggt_frame_count"] = len(shot.frame_numbers)
    ob["vggt_frame_numbers"] = [int(n) for n in shot.frame_numbers]
    ob["vggt_fps"] = float(shot.fps)
    ob["vggt_source_video"] = shot.source_video
    return ob


def plane_views(count: int) -> list[int]:
    """Views that get a depth plane in a shot: all up to SHOT_MAX_PLANES, else that many spread evenly."""
    if count <= SHOT_MAX_PLANES:
        return list(range(count))
    step = (count - 1) / (SHOT_MAX_PLANES - 1)
    return sorted({round(k * step) for k in range(SHOT_MAX_PLANES)})


_clip_info_cache: dict[str, dict | None] = {}


def probe_clip(path: str) -> dict | None:
    """Frame count, fps and size of a movie file or image sequence, read by Blender's own clip loader (no
    PyAV in Blender's process); None when Blender cannot open it. Cached per path: panels redraw often."""
    path = bpy.path.abspath(path)
    if path in _clip_info_cache:
        return _clip_info_cache[path]
    info = None
    if os.path.isfile(path):
        before = set(bpy.data.movieclips)
        try:
            clip = bpy.data.movieclips.load(path, check_existing=True)
        except RuntimeError:
            clip = None
        if clip is not None:
            info = {"frames": int(clip.frame_duration), "fps": float(clip.fps),
                    "width": int(clip.size[0]), "height": int(clip.size[1]),
                    "sequence": clip.source == "SEQUENCE"}
            if info["width"] == 0 or info["frames"] == 0:
                info = None  # Blender made a clip of something it cannot read
            if clip not in before:
                bpy.data.movieclips.remove(clip)
    _clip_info_cache[path] = info
    return info


def selected_count(frames: int, every: int, start: int, end: int, max_frames: int) -> int:
    """How many frames the panel's stride choice gives (the same rule as the worker's selection)."""
    from ..vggt_blender.shot.selection import FrameSelection, select_frame_numbers

    try:
        selection = FrameSelection(every=every, start=start, end=None if end < 0 else end,
                                   max_frames=max_frames or None)
        return len(select_frame_numbers(list(range(frames)), selection))
    except Exception:  # noqa: BLE001 - a selection outside the shot: nothing selected
        return 0
