"""Cameras: one per photo (exact intrinsics and pose at the photo's resolution) and an animated shot camera.

Render resolution and pixel aspect are per scene in Blender, so each camera stores its image size and pixel
aspect as custom properties; `activate_camera` applies them when the camera becomes the active one.
"""

from __future__ import annotations

import os

import bpy
import numpy as np
from mathutils import Matrix

from ..vggt_blender.geometry.alignment import reconstruction_alignment
from ..vggt_blender.geometry.blender_camera import BlenderCameraParams, blender_camera_params
from .lens import has_distortion, lens_distortion, tracking_camera_from_reconstruction


def camera_params_for_view(rec, i: int, scale: float) -> BlenderCameraParams:
    width, height = (int(v) for v in rec.original_sizes[i])
    return blender_camera_params(rec.intrinsics[i], width, height, rec.extrinsics[i], scale=scale,
                                 alignment=reconstruction_alignment(rec))


def apply_lens(cam: bpy.types.Camera, params: BlenderCameraParams) -> None:
    cam.sensor_fit = params.sensor_fit
    cam.sensor_width = params.sensor_width
    cam.lens = params.lens
    cam.shift_x = params.shift_x
    cam.shift_y = params.shift_y


def store_image_properties(ob: bpy.types.Object, params: BlenderCameraParams, view_index: int,
                           image_path: str, kind: str) -> None:
    ob["vggt_kind"] = kind
    ob["vggt_view_index"] = int(view_index)
    ob["vggt_image_width"] = int(params.resolution_x)
    ob["vggt_image_height"] = int(params.resolution_y)
    ob["vggt_image_path"] = str(image_path)
    ob["vggt_pixel_aspect_x"] = float(params.pixel_aspect_x)
    ob["vggt_pixel_aspect_y"] = float(params.pixel_aspect_y)


def solve_errors(rec) -> list[float | None]:
    """Per view: the refined file's mean reprojection error in photo pixels, None where unknown (unrefined)."""
    err = rec.extra.get("reprojection_error")
    if err is None or np.shape(err) != (len(rec.image_names),):
        return [None] * len(rec.image_names)
    return [float(e) if np.isfinite(e) else None for e in np.asarray(err, dtype=np.float64)]


def activate_camera(scene: bpy.types.Scene, ob: bpy.types.Object) -> None:
    """Make `ob` the scene camera and set the render size/pixel aspect its intrinsics were computed for."""
    scene.camera = ob
    if "vggt_image_width" in ob and "vggt_image_height" in ob:
        render = scene.render
        render.resolution_x = int(ob["vggt_image_width"])
        render.resolution_y = int(ob["vggt_image_height"])
        render.resolution_percentage = 100
        render.pixel_aspect_x = float(ob.get("vggt_pixel_aspect_x", 1.0))
        render.pixel_aspect_y = float(ob.get("vggt_pixel_aspect_y", 1.0))


def _clip_and_display(cam: bpy.types.Camera, scene_size: float) -> None:
    # VGGT's units are normalised (scene size ~1): Blender's defaults (clip 0.1, display 1 m) would hide it.
    cam.clip_start = max(scene_size * 1e-3, 1e-5)
    cam.clip_end = max(scene_size * 1e3, 10.0)
    cam.display_size = scene_size * 0.1


def add_lens_clip(ob: bpy.types.Object, rec, view: int) -> list[str]:
    """A refined view whose lens distortion was solved: a Movie Clip of its photo whose tracking camera holds
    the view's focal length, principal point and distortion, which is where Blender keeps lens distortion
    (the compositor's Movie Distortion node undistorts the photo with it; the camera is exact for the
    undistorted photo). The camera object holds the clip in `vggt_lens_clip`, which also keeps it saved with
    the .blend for as long as the camera exists. Returns warnings."""
    distortion, warnings = lens_distortion(rec, view)
    path = str(rec.display_paths[view])
    if not has_distortion(distortion) or not os.path.isfile(path):
        return warnings
    clip = bpy.data.movieclips.load(path)
    clip.name = f"{ob.name} lens"
    clip["vggt_kind"] = "lens_clip"
    clip["vggt_view_index"] = int(view)
    warnings += tracking_camera_from_reconstruction(clip, rec, sensor_width=ob.data.sensor_width, view=view)
    ob["vggt_lens_clip"] = clip  # an ID property: the camera is the clip's user
    return warnings


def create_photo_cameras(rec, scale: float, collection: bpy.types.Collection, images: list,
                         scene_size: float, warnings: list[str] | None = None,
                         lens_clips: bool = True) -> list[bpy.types.Object]:
    """One camera per photo, named after the photo's file stem, with its photo as background image and, when
    the refinement solved a lens distortion and `lens_clips`, a lens clip (`add_lens_clip`). Lens warnings go
    to `warnings`. A shot's views pass `lens_clips=False`: their file is the whole video or sequence, and the
    shot's own clip already holds the lens."""
    objects = []
    errors = solve_errors(rec)
    for i, stem in enumerate(rec.image_names):
        params = camera_params_for_view(rec, i, scale)
        cam = bpy.data.cameras.new(str(stem))
        apply_lens(cam, params)
        _clip_and_display(cam, scene_size)
        image = images[i] if images else None
        if image is not None:
            cam.show_background_images = True
            bg = cam.background_images.new()
            bg.image = image
            bg.alpha = 0.8
            bg.frame_method = "STRETCH"  # the photo fills the camera frame exactly
        ob = bpy.data.objects.new(str(stem), cam)
        ob.matrix_world = Matrix(params.matrix_world.tolist())
        store_image_properties(ob, params, i, str(rec.display_paths[i]), "camera")
        if errors[i] is not None:
            ob["vggt_solve_error"] = errors[i]  # mean reprojection error of the refined camera, photo pixels
        for line in add_lens_clip(ob, rec, i) if lens_clips else ():
            # One line per kind of problem, not one per photo.
            if warnings is not None and not any(w.split(" (")[0] == line.split(" (")[0] for w in warnings):
                warnings.append(line)
        collection.objects.link(ob)
        objects.append(ob)
    return objects


def _fcurves(id_data) -> list:
    """F-curves of `id_data`'s own animation.

    With slotted actions (Blender 4.4+) an object and its camera data may share one Action in two slots, and
    the legacy `Action.fcurves` (gone in 5.0) then lists the first slot's curves, not this ID's: read the
    channelbag of the ID's slot wherever `action_slot` exists, whatever the version number says.
    """
    anim = id_data.animation_data
    if anim is None or anim.action is None:
        return []
    action = anim.action
    if hasattr(anim, "action_slot"):
        from bpy_extras.anim_utils import action_get_channelbag_for_slot

        if anim.action_slot is None:
            return []
        bag = action_get_channelbag_for_slot(action, anim.action_slot)
        return list(bag.fcurves) if bag is not None else []
    return list(action.fcurves)


def _key_background_sequence(cam: bpy.types.Camera, images: list) -> None:
    """One background per photo, shown only on that photo's frame (CONSTANT keys on its visibility).

    Keying visibility rather than opacity matters: Blender uploads every shown background to the GPU, even
    at zero opacity, which for a long shot is every photo at once.
    """
    cam.show_background_images = True
    for i, image in enumerate(images):
        if image is None:
            continue
        bg = cam.background_images.new()
        bg.image = image
        bg.frame_method = "STRETCH"
        bg.alpha = 0.8
        path = f"background_images[{len(cam.background_images) - 1}].show_background_image"
        frame = i + 1
        for f, shown in ((frame - 1, False), (frame, True), (frame + 1, False)):
            if f >= 1:
                bg.show_background_image = shown
                cam.keyframe_insert(path, frame=f)


def create_keyed_camera(rec, scale: float, collection: bpy.types.Collection, name: str, scene_size: float,
                        frames: list[int]) -> tuple[bpy.types.Object, BlenderCameraParams]:
    """One camera keyed at frames[i] with view i's pose, lens and shifts, linear in between; each key's
    quaternion takes the sign nearest the previous one, so the path never flips. Returns it and view 0's
    parameters."""
    cam = bpy.data.cameras.new(f"{name} Shot")
    _clip_and_display(cam, scene_size)
    ob = bpy.data.objects.new(f"{name} Shot", cam)
    ob.rotation_mode = "QUATERNION"
    collection.objects.link(ob)
    previous = None
    first = None
    for i, frame in enumerate(frames):
        params = camera_params_for_view(rec, i, scale)
        first = first or params
        M = Matrix(params.matrix_world.tolist())
        quat = M.to_quaternion()
        if previous is not None:
            quat.make_compatible(previous)
        previous = quat
        ob.location = M.to_translation()
        ob.rotation_quaternion = quat
        ob.keyframe_insert("location", frame=frame)
        ob.keyframe_insert("rotation_quaternion", frame=frame)
        apply_lens(cam, params)
        for path in ("lens", "shift_x", "shift_y"):
            cam.keyframe_insert(path, frame=frame)
    for id_data in (ob, cam):
        for fc in _fcurves(id_data):
            for kp in fc.keyframe_points:
                kp.interpolation = "LINEAR"
    return ob, first


def create_animated_camera(rec, scale: float, collection: bpy.types.Collection, scene: bpy.types.Scene,
                           name: str, scene_size: float, images: list | None = None) -> bpy.types.Object:
    """One camera keyed per frame (frame i+1 = photo i): pose, lens and shifts; scene frame range set.

    With `images`, each photo is a background image shown on its own frame only.
    """
    n = len(rec.image_names)
    ob, first = create_keyed_camera(rec, scale, collection, name, scene_size, list(range(1, n + 1)))
    if images:
        _key_background_sequence(ob.data, images)
        # Backgrounds switch on and off at their frame.
        for fc in _fcurves(ob.data):
            if fc.data_path.startswith("background_images"):
                for kp in fc.keyframe_points:
                    kp.interpolation = "CONSTANT"
    store_image_properties(ob, first, 0, str(rec.display_paths[0]), "animated_camera")
    ob["vggt_frame_count"] = n
    scene.frame_start = 1
    scene.frame_end = n
    return ob


def scene_size_estimate(rec) -> float:
    """Rough size of the reconstruction (median depth), used for clip ranges and camera display size."""
    try:
        # Every 7th pixel is plenty for a median and keeps this cheap for 100 photos.
        d = np.asarray(rec.depth)[:, ::7, ::7]
        sample = d[np.asarray(rec.valid_mask)[:, ::7, ::7]]
        size = float(np.median(sample)) if sample.size else 1.0
    except (AttributeError, ValueError):
        size = 1.0
    return size if np.isfinite(size) and size > 0 else 1.0
