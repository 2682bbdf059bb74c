"""Move a built reconstruction by a scene-space similarity D (rotation, uniform scale, translation).

Every object of the collection moves by D and the result is what a fresh import with the new alignment
(D @ old) builds: meshes (point cloud, depth planes) get D baked into their vertices so their objects keep
their transforms, cameras keep orthonormal matrices (a camera's scale would not change what it sees, but it
would differ from an import), the animated camera's keys are moved, and lengths stored in scene units
(depth attribute, clip range, display size, point radius) follow the scale.
"""

from __future__ import annotations

import bpy
import numpy as np
from mathutils import Matrix, Quaternion

from ..vggt_blender.geometry.alignment import DEFAULT_ALIGNMENT, scaled_alignment, similarity_parts
from .attributes import read_attribute, write_attribute
from .cameras import _fcurves
from .node_groups import socket_identifier

ALIGNMENT_PROPERTY = "vggt_alignment"


def collection_alignment(collection: bpy.types.Collection) -> np.ndarray:
    """The scene_from_world the collection's objects are placed with (the user's import scale folded in)."""
    values = collection.get(ALIGNMENT_PROPERTY)
    if values is not None and len(values) == 16:
        return np.array([float(v) for v in values], dtype=np.float64).reshape(4, 4)
    # Built before alignments existed: the axis change times the import scale.
    return scaled_alignment(DEFAULT_ALIGNMENT, float(collection.get("vggt_scale", 1.0)))


def set_collection_alignment(collection: bpy.types.Collection, matrix: np.ndarray) -> None:
    collection[ALIGNMENT_PROPERTY] = [float(v) for v in np.asarray(matrix, dtype=np.float64).ravel()]
    collection["vggt_scale"] = 1.0  # the scale now lives in the alignment


def _rigid(matrix_world: np.ndarray, D: np.ndarray) -> np.ndarray:
    """D @ matrix_world with the rotation part re-normalised (for cameras)."""
    _, rot, _ = similarity_parts(D)
    M = np.asarray(matrix_world, dtype=np.float64)
    out = np.eye(4)
    col_norms = np.linalg.norm(M[:3, :3], axis=0)
    out[:3, :3] = rot @ (M[:3, :3] / col_norms) * col_norms
    out[:3, 3] = D[:3, :3] @ M[:3, 3] + D[:3, 3]
    return out


def _move_animated_camera(ob: bpy.types.Object, D: np.ndarray) -> None:
    """Move every location / rotation_quaternion key by D (keys share frames: the builder keys them together)."""
    _, rot, _ = similarity_parts(D)
    q_d = Matrix(rot.tolist()).to_quaternion()
    curves = {(fc.data_path, fc.array_index): fc for fc in _fcurves(ob)}
    loc = [curves.get(("location", i)) for i in range(3)]
    quat = [curves.get(("rotation_quaternion", i)) for i in range(4)]
    if all(loc):
        for k in range(len(loc[0].keyframe_points)):
            p = np.array([fc.keyframe_points[k].co[1] for fc in loc])
            moved = D[:3, :3] @ p + D[:3, 3]
            for fc, v in zip(loc, moved):
                _set_key(fc.keyframe_points[k], float(v))
    if all(quat):
        previous = None
        for k in range(len(quat[0].keyframe_points)):
            q = q_d @ Quaternion([fc.keyframe_points[k].co[1] for fc in quat])
            if previous is not None:
                q.make_compatible(previous)
            previous = q
            for fc, v in zip(quat, q):
                _set_key(fc.keyframe_points[k], float(v))
    for fc in loc + quat:
        if fc is not None:
            fc.update()
    if not all(loc) or not all(quat):  # not animated after all: move it as an object
        ob.matrix_world = Matrix(_rigid(np.array(ob.matrix_world), D).tolist())


def _set_key(point, value: float) -> None:
    delta = value - point.co[1]
    point.co[1] = value
    point.handle_left[1] += delta
    point.handle_right[1] += delta


def _scale_camera_data(cam: bpy.types.Camera, s: float) -> None:
    cam.clip_start *= s
    cam.clip_end *= s
    cam.display_size *= s


def move_collection(collection: bpy.types.Collection, D: np.ndarray, scene: bpy.types.Scene | None = None) -> None:
    """Move every object of `collection` by the scene-space similarity D (4x4)."""
    D = np.asarray(D, dtype=np.float64)
    s, _, _ = similarity_parts(D)
    members = set(collection.objects)
    cameras_done: set = set()
    for ob in collection.objects:
        if ob.parent is not None and ob.parent in members:
            continue  # moves with its parent
        kind = ob.get("vggt_kind")
        if ob.type == "MESH" and kind in ("point_cloud", "depth_plane"):
            M = np.array(ob.matrix_world)
            ob.data.transform(Matrix((np.linalg.inv(M) @ D @ M).tolist()))
            ob.data.update()
            if kind == "depth_plane" and "depth" in ob.data.attributes:
                depth = read_attribute(ob.data, "depth")
                write_attribute(ob.data, "depth", "POINT", "FLOAT", (depth * s).astype(np.float32))
            _scale_point_radius(ob, s)
        elif ob.type == "CAMERA" and kind == "animated_camera":
            _move_animated_camera(ob, D)
        elif ob.type == "CAMERA":
            ob.matrix_world = Matrix(_rigid(np.array(ob.matrix_world), D).tolist())
        else:
            ob.matrix_world = Matrix((D @ np.array(ob.matrix_world)).tolist())
        if ob.type == "CAMERA" and ob.data not in cameras_done:
            _scale_camera_data(ob.data, s)
            cameras_done.add(ob.data)
    if scene is not None:
        scene.frame_set(scene.frame_current)  # re-evaluate animated cameras at the current frame


def _scale_point_radius(ob: bpy.types.Object, s: float) -> None:
    mod = ob.modifiers.get("VGGT")
    if s == 1.0 or mod is None or mod.node_group is None:
        return
    try:
        key = socket_identifier(mod.node_group, "Point Radius")
    except KeyError:
        return
    try:
        mod[key] = float(mod[key]) * s
    except (TypeError, KeyError):  # an input API this Blender does not take: the radius is cosmetic, skip it
        return
    ob.update_tag()
