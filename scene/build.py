"""Build the Blender scene of one reconstruction: a new collection with cameras, point cloud and depth planes."""

from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path

import bpy

from ..vggt_blender.geometry.alignment import reconstruction_alignment, scaled_alignment, similarity_parts
from ..vggt_blender.geometry.lens_check import lens_warnings
from ..vggt_blender.geometry.selection import available_point_sources, family_name
from ..vggt_blender.io.reconstruction import load_reconstruction
from ..vggt_blender.options import SceneOptions
from .cameras import activate_camera, create_animated_camera, create_photo_cameras, scene_size_estimate, solve_errors
from .depth_planes import create_depth_plane
from .node_groups import PLANE_MIN_CONFIDENCE_PROP
from .point_cloud import create_point_cloud
from .shot import create_shot_camera, load_shot_clip, plane_views, set_scene_from_shot
from .tracks import add_reconstruction_tracks
from ..vggt_blender.io.shot_fields import read_shot_fields

CAMERA_MODES = ("per_photo", "animated", "both")


def default_collection_name(rec, path: str | os.PathLike | None = None) -> str:
    """The photo set's folder name (e.g. "kitchen"), else the reconstruction file's stem."""
    try:
        folder = Path(str(rec.image_paths[0])).parent.name
    except (AttributeError, IndexError):
        folder = ""
    if folder:
        return folder
    return Path(path).stem if path else "VGGT"


def load_images(rec) -> tuple[list, list[str]]:
    """bpy images for the photos (lazy: pixels are read when first drawn), and warnings for missing ones."""
    images, warnings = [], []
    for path in rec.display_paths:
        path = str(path)
        if not os.path.isfile(path):
            images.append(None)
            warnings.append(f"photo not found: {path}")
            continue
        try:
            images.append(bpy.data.images.load(path, check_existing=True))
        except RuntimeError as exc:
            images.append(None)
            warnings.append(f"could not load photo {path}: {exc}")
    return images, warnings


def build_scene(rec, options: SceneOptions | None = None, name: str | None = None, context=None,
                timings: dict | None = None, source_path: str | os.PathLike | None = None,
                blend_path: str | os.PathLike | None = None) -> bpy.types.Collection:
    """Create ONE new collection (under the scene collection) holding the reconstruction's objects.

    `rec` is a Reconstruction (or anything with the schema's arrays as attributes); `source_path` (the
    reconstruction file) is stored on the collection as "vggt_reconstruction", relative to `blend_path` (the
    .blend this scene will be saved as; default: the open file) when it lies in that folder. `timings`, when given, is
    filled with seconds per part (for the benchmark). Missing photos do not stop the import; they are listed
    in the collection's "vggt_warnings" property.
    """
    options = options or SceneOptions()
    if options.camera_mode not in CAMERA_MODES:
        raise ValueError(f"unknown camera mode {options.camera_mode!r} (use one of {', '.join(CAMERA_MODES)})")
    if options.scale <= 0:
        raise ValueError(f"scale must be positive, got {options.scale}")
    context = context or bpy.context
    scene = context.scene
    timings = timings if timings is not None else {}
    source_path = source_path or getattr(rec, "path", None)
    name = name or default_collection_name(rec, source_path)

    t = time.perf_counter()
    before = _snapshot(scene)
    collection = bpy.data.collections.new(name)  # Blender adds ".001" when the name is taken
    scene.collection.children.link(collection)
    try:
        _fill_collection(rec, options, name, scene, collection, timings, source_path, t, blend_path)
    except BaseException:
        # A failed import leaves nothing half-built behind.
        _roll_back(scene, collection, before)
        raise
    return collection


# Data-blocks a build may create (besides the collection), removed again when it fails.
_CREATED_KINDS = ("objects", "meshes", "cameras", "materials", "images", "actions", "node_groups", "movieclips")


def _snapshot(scene: bpy.types.Scene) -> dict:
    state = {kind: {id_.as_pointer() for id_ in getattr(bpy.data, kind)} for kind in _CREATED_KINDS}
    state["frame_range"] = (scene.frame_start, scene.frame_end)
    state["render"] = (scene.render.fps, scene.render.fps_base, scene.render.resolution_x,
                       scene.render.resolution_y)
    state["camera"] = scene.camera
    return state


def _roll_back(scene: bpy.types.Scene, collection: bpy.types.Collection, before: dict) -> None:
    """Undo a failed build: its collection, every data-block it created, the frame range and camera."""
    remove_collection(collection)
    new_ids = [id_ for kind in _CREATED_KINDS for id_ in getattr(bpy.data, kind)
               if id_.as_pointer() not in before[kind]]
    if new_ids:
        bpy.data.batch_remove(new_ids)
    scene.frame_start, scene.frame_end = before["frame_range"]
    (scene.render.fps, scene.render.fps_base, scene.render.resolution_x,
     scene.render.resolution_y) = before["render"]
    if scene.camera != before["camera"]:
        scene.camera = before["camera"]


def remove_collection(collection: bpy.types.Collection) -> None:
    """Delete `collection`, its objects and their (now unused) object data."""
    for ob in list(collection.objects):
        data = ob.data
        bpy.data.objects.remove(ob)
        if isinstance(data, bpy.types.Mesh) and data.users == 0:
            bpy.data.meshes.remove(data)
        elif isinstance(data, bpy.types.Camera) and data.users == 0:
            bpy.data.cameras.remove(data)
    bpy.data.collections.remove(collection)


def stored_source_path(source_path: str | os.PathLike | None,
                       blend_path: str | os.PathLike | None = None) -> str:
    """The reconstruction file as the collection stores it: relative ("//vggt/x.npz") when it lies under the
    folder of the .blend (`blend_path`, else the open file), so the project folder can move; else absolute."""
    if not source_path:
        return ""
    path = Path(source_path).resolve()
    blend = blend_path or bpy.data.filepath
    if blend:
        blend_dir = Path(blend).resolve().parent
        if path.is_relative_to(blend_dir):
            return bpy.path.relpath(str(path), start=str(blend_dir))
    return str(path)


def reconstruction_warnings(rec) -> list[str]:
    """What the scene cannot fix but the user should know: cameras no real lens has (the camera would not
    match its photo: Blender clamps the pixel aspect at 200)."""
    try:
        return lens_warnings(rec.intrinsics, rec.original_sizes, list(rec.image_names))
    except (AttributeError, IndexError, TypeError, ValueError):
        return []


def add_plane_confidence_control(collection: bpy.types.Collection, value: float) -> None:
    """The one Min Confidence every depth plane of this reconstruction follows (a driver on each plane)."""
    collection[PLANE_MIN_CONFIDENCE_PROP] = float(value)
    collection.id_properties_ui(PLANE_MIN_CONFIDENCE_PROP).update(
        min=1.0, max=1e6, soft_min=1.0, soft_max=20.0, default=1.0, precision=2,
        description="Depth planes of this reconstruction hide vertices whose confidence is below this")


def _fill_collection(rec, options: SceneOptions, name: str, scene, collection, timings: dict, source_path,
                     t: float, blend_path=None) -> None:
    def lap(part: str, start: float) -> float:
        now = time.perf_counter()
        timings[part] = timings.get(part, 0.0) + now - start
        return now

    collection["vggt_reconstruction"] = stored_source_path(source_path, blend_path)
    collection["vggt_scale"] = float(options.scale)
    known = [e for e in solve_errors(rec) if e is not None]
    if known:
        collection["vggt_solve_error_mean"] = sum(known) / len(known)
        collection["vggt_solve_error_max"] = max(known)
    # What the objects were placed with (scale folded in): the alignment operators start from it.
    alignment = reconstruction_alignment(rec)
    collection["vggt_alignment"] = [float(v) for v in scaled_alignment(alignment, options.scale).ravel()]
    scene_size = scene_size_estimate(rec) * float(options.scale) * similarity_parts(alignment)[0]
    shot = read_shot_fields(rec)
    # What the reconstruction came from: the panel offers a shot's refinement with one camera for all frames.
    collection["vggt_source_kind"] = shot.source_kind if shot is not None else "photos"
    if shot is not None:  # a video or image sequence: scene/shot.py
        _fill_shot(rec, shot, options, name, scene, collection, timings, scene_size, lap, t)
        return
    needs_images = options.create_depth_planes or (options.create_cameras and options.background_images)
    images, warnings = load_images(rec) if needs_images else ([], [])
    t = lap("images", t)

    cameras = []
    if options.create_cameras:
        bg_images = images if options.background_images else []
        if options.camera_mode in ("per_photo", "both"):
            cameras = create_photo_cameras(rec, options.scale, collection, bg_images, scene_size, warnings)
        t = lap("cameras", t)
        if options.camera_mode in ("animated", "both"):
            shot = create_animated_camera(rec, options.scale, collection, scene, name, scene_size, bg_images)
            cameras = cameras or [shot]
        t = lap("animated_camera", t)

    if options.create_point_cloud:
        options = _point_source_for(rec, options, warnings)
        create_point_cloud(rec, options, collection, name)
        t = lap("point_cloud", t)

    if options.create_depth_planes:
        add_plane_confidence_control(collection, float(options.min_confidence))
        for i in range(len(rec.image_names)):
            create_depth_plane(rec, i, options, collection, images[i] if images else None)
        t = lap("depth_planes", t)

    if cameras and scene.camera is None:
        activate_camera(scene, cameras[0])
    warnings += reconstruction_warnings(rec)
    if warnings:
        collection["vggt_warnings"] = warnings
    lap("finish", t)


def _point_source_for(rec, options: SceneOptions, warnings: list[str]) -> SceneOptions:
    """The options with a point source this file has: a VGGT-Omega file has no point map, so its points come
    from depth, said once, not an error."""
    if options.point_source in available_point_sources(rec):
        return options
    warnings.append(f"this {family_name(rec)} reconstruction has no point map: the point cloud is built from "
                    "depth + camera instead")
    return dataclasses.replace(options, point_source="depth")


def _fill_shot(rec, shot, options: SceneOptions, name: str, scene, collection, timings: dict,
               scene_size: float, lap, t: float) -> None:
    """A shot: ONE animated camera on its Movie Clip ("per_photo", the default, means it for a shot;
    "both" adds a camera per view), the point cloud, depth planes for at most SHOT_MAX_PLANES views."""
    warnings = []
    shot_camera = None
    if options.create_cameras:
        clip = None
        if options.background_images:
            clip, problem = load_shot_clip(rec, shot)
            if problem:
                warnings.append(problem)
        shot_camera = create_shot_camera(rec, shot, options.scale, collection, scene, name, scene_size, clip)
        if clip is not None:  # a refined shot: its tracks into the clip, its camera as the tracking camera
            sensor = shot_camera.data.sensor_width if shot_camera.data.sensor_fit != "VERTICAL" else 36.0
            warnings += add_reconstruction_tracks(clip, rec, shot, sensor)
        if options.camera_mode == "both":
            create_photo_cameras(rec, options.scale, collection, [], scene_size, lens_clips=False)
        t = lap("animated_camera", t)
    set_scene_from_shot(scene, shot, rec)
    if options.create_point_cloud:
        options = _point_source_for(rec, options, warnings)
        create_point_cloud(rec, options, collection, name)
        t = lap("point_cloud", t)
    if options.create_depth_planes:
        images, missing = load_images(rec) if shot.source_kind == "sequence" else ([], [])
        warnings += missing
        for i in plane_views(len(rec.image_names)):
            create_depth_plane(rec, i, options, collection, images[i] if images else None)
        t = lap("depth_planes", t)
    if shot_camera is not None:
        activate_camera(scene, shot_camera)
    if warnings:
        collection["vggt_warnings"] = warnings
    lap("finish", t)


def import_reconstruction_file(path: str | os.PathLike, options: SceneOptions | None = None, context=None,
                               name: str | None = None) -> bpy.types.Collection:
    """Load a reconstruction file (raises ReconstructionFileError for a bad file) and build its scene."""
    rec = load_reconstruction(path)
    return build_scene(rec, options, name or default_collection_name(rec, path), context, source_path=path)
