"""Build the Blender scene of one reconstruction: a new collection with cameras, point cloud and depth planes."""

from __future__ import annotations

import os
import time
from pathlib import Path

import bpy

from ..vggt_blender.io.reconstruction import load_reconstruction
from ..vggt_blender.options import SceneOptions
from .cameras import activate_camera, create_animated_camera, create_photo_cameras, scene_size_estimate
from .depth_planes import create_depth_plane
from .point_cloud import create_point_cloud
from .shot import create_shot_camera, load_shot_clip, plane_views, set_scene_from_shot
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
                ) -> bpy.types.Collection:
    """Create ONE new collection (under the scene collection) holding the reconstruction's objects.

    `rec` is a Reconstruction (or anything with the schema's arrays as attributes); `source_path` (the
    reconstruction file) is stored on the collection as "vggt_reconstruction". `timings`, when given, is
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
        _fill_collection(rec, options, name, scene, collection, timings, source_path, t)
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


def stored_source_path(source_path: str | os.PathLike | None) -> str:
    """The reconstruction file as the collection stores it: relative ("//vggt/x.npz") when it lies under the
    saved .blend's folder, so the project folder can move; absolute otherwise."""
    if not source_path:
        return ""
    path = Path(source_path).resolve()
    if bpy.data.filepath:
        blend_dir = Path(bpy.data.filepath).resolve().parent
        if path.is_relative_to(blend_dir):
            return bpy.path.relpath(str(path), start=str(blend_dir))
    return str(path)


def _fill_collection(rec, options: SceneOptions, name: str, scene, collection, timings: dict, source_path,
                     t: float) -> None:
    def lap(part: str, start: float) -> float:
        now = time.perf_counter()
        timings[part] = timings.get(part, 0.0) + now - start
        return now

    collection["vggt_reconstruction"] = stored_source_path(source_path)
    collection["vggt_scale"] = float(options.scale)
    scene_size = scene_size_estimate(rec) * float(options.scale)
    shot = read_shot_fields(rec)
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
            cameras = create_photo_cameras(rec, options.scale, collection, bg_images, scene_size)
        t = lap("cameras", t)
        if options.camera_mode in ("animated", "both"):
            shot = create_animated_camera(rec, options.scale, collection, scene, name, scene_size, bg_images)
            cameras = cameras or [shot]
        t = lap("animated_camera", t)

    if options.create_point_cloud:
        create_point_cloud(rec, options, collection, name)
        t = lap("point_cloud", t)

    if options.create_depth_planes:
        for i in range(len(rec.image_names)):
            create_depth_plane(rec, i, options, collection, images[i] if images else None)
        t = lap("depth_planes", t)

    if cameras and scene.camera is None:
        activate_camera(scene, cameras[0])
    if warnings:
        collection["vggt_warnings"] = warnings
    lap("finish", t)


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
        if options.camera_mode == "both":
            create_photo_cameras(rec, options.scale, collection, [], scene_size)
        t = lap("animated_camera", t)
    set_scene_from_shot(scene, shot, rec)
    if options.create_point_cloud:
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
