"""Level to Floor, Set Origin, Set Scale: move a built reconstruction and write its alignment back to its file.

Each operator computes a scene-space similarity D, writes the new alignment (D @ current, the import scale
folded in) to the reconstruction file first (atomically: on failure nothing in the scene changes), then moves
every object of the collection by D (scene/transform.py), so the scene equals a fresh import of the file.
Each is one undo step; undo restores the scene and the collection's alignment, not the file (the next
alignment operator writes the file from the collection again).
"""

from __future__ import annotations

import bpy
import numpy as np
from bpy.props import EnumProperty, FloatProperty

from ..scene.transform import collection_alignment, move_collection, set_collection_alignment
from ..vggt_blender.errors import VGGTError
from ..vggt_blender.geometry import alignment as al
from .reconstruct import one_line


def reconstruction_collection(context) -> bpy.types.Collection | None:
    """The reconstruction the user is working on: the active object's collection, else the active collection."""
    ob = context.active_object
    candidates = list(ob.users_collection) if ob is not None else []
    if context.collection is not None:
        candidates.append(context.collection)
    for col in candidates:
        if col.get("vggt_reconstruction") is not None:
            return col
    return None


def selected_points(context) -> np.ndarray:
    """World positions [P, 3] of the selection: selected vertices in Edit Mode, else selected objects."""
    if context.mode == "EDIT_MESH":
        pts = []
        for ob in context.objects_in_mode or [context.edit_object]:
            ob.update_from_editmode()
            mesh = ob.data
            sel = np.zeros(len(mesh.vertices), dtype=bool)
            mesh.vertices.foreach_get("select", sel)
            co = np.empty(len(mesh.vertices) * 3, dtype=np.float32)
            mesh.vertices.foreach_get("co", co)
            local = co.reshape(-1, 3)[sel].astype(np.float64)
            M = np.array(ob.matrix_world)
            pts.append(local @ M[:3, :3].T + M[:3, 3])
        return np.concatenate(pts) if pts else np.zeros((0, 3))
    return np.array([list(ob.matrix_world.translation) for ob in context.selected_objects]).reshape(-1, 3)


def _source_file(collection) -> str:
    return bpy.path.abspath(str(collection.get("vggt_reconstruction", "")))


class _AlignmentOperator:
    bl_options = {"REGISTER", "UNDO"}

    @classmethod
    def poll(cls, context) -> bool:
        return reconstruction_collection(context) is not None

    def delta(self, context, collection, rec) -> np.ndarray:  # pragma: no cover - overridden
        raise NotImplementedError

    def execute(self, context):
        from ..vggt_blender.io.reconstruction import load_reconstruction, save_reconstruction

        collection = reconstruction_collection(context)
        if collection is None:
            self.report({"ERROR"}, "select an object of a VGGT reconstruction")
            return {"CANCELLED"}
        path = _source_file(collection)
        try:
            if not path:
                raise al.AlignmentError(f"collection '{collection.name}' names no reconstruction file")
            rec = load_reconstruction(path)
            D = self.delta(context, collection, rec)
            new = D @ collection_alignment(collection)
            problem = al.alignment_problem(new)
            if problem:
                raise al.AlignmentError(f"{path}: the new alignment {problem}")
            rec.alignment = new
            save_reconstruction(path, rec)  # first the file: a failed write changes nothing in the scene
        except VGGTError as exc:
            self.report({"ERROR"}, one_line(exc))
            return {"CANCELLED"}
        edit = context.mode == "EDIT_MESH"
        if edit:  # mesh data edited under Edit Mode would be overwritten when it ends
            bpy.ops.object.mode_set(mode="OBJECT")
        move_collection(collection, D, context.scene)
        set_collection_alignment(collection, new)
        if edit:
            bpy.ops.object.mode_set(mode="EDIT")
        self.report({"INFO"}, f"{self.bl_label}: wrote the alignment to {path}")
        return {"FINISHED"}


class VGGT_OT_level_to_floor(_AlignmentOperator, bpy.types.Operator):
    """Rotate and move the reconstruction so its floor is the ground plane (z = 0): the floor found in its
    points, or the plane through the selected vertices (Edit Mode, at least 3)"""

    bl_idname = "vggt.level_to_floor"
    bl_label = "Level to Floor"
    bl_options = {"REGISTER", "UNDO"}

    def delta(self, context, collection, rec) -> np.ndarray:
        if context.mode == "EDIT_MESH":
            normal, point = al.fit_floor_in_scene(selected_points(context))
            return al.level_transform(normal, point)
        current = collection_alignment(collection)
        points = al.confident_world_points(rec)
        plane = al.find_floor(points, rec.extrinsics)
        if plane is None or plane.inlier_fraction < al.FLOOR_MIN_FRACTION:
            raise al.AlignmentError(f"{_source_file(collection)}: no floor found in the points; select at "
                                    f"least 3 vertices on the floor in Edit Mode")
        _, rot, _ = al.similarity_parts(current)
        normal = rot @ plane.normal
        return al.level_transform(normal, al.apply_alignment(current, plane.point))


class VGGT_OT_set_origin(_AlignmentOperator, bpy.types.Operator):
    """Move the reconstruction so the 3D cursor (or the selection's centre) becomes the world origin"""

    bl_idname = "vggt.set_origin"
    bl_label = "Set Origin"
    bl_options = {"REGISTER", "UNDO"}

    source: EnumProperty(name="Origin", items=(
        ("CURSOR", "3D Cursor", "The 3D cursor becomes the origin"),
        ("SELECTION", "Selection", "The centre of the selected vertices (Edit Mode) or objects"),
    ), default="CURSOR")

    def delta(self, context, collection, rec) -> np.ndarray:
        if self.source == "CURSOR":
            return al.origin_transform(np.array(context.scene.cursor.location))
        pts = selected_points(context)
        if not len(pts):
            raise al.AlignmentError("nothing selected: select vertices (Edit Mode) or objects")
        return al.origin_transform(pts.mean(axis=0))


class VGGT_OT_set_scale(_AlignmentOperator, bpy.types.Operator):
    """Scale the reconstruction about the origin so two points are the given distance apart (scene units are
    metres): two selected vertices or objects, or the 3D cursor and one selected"""

    bl_idname = "vggt.set_scale"
    bl_label = "Set Scale"
    bl_options = {"REGISTER", "UNDO"}

    distance: FloatProperty(name="Real Distance", default=1.0, min=1e-6, subtype="DISTANCE", unit="LENGTH",
                            description="The true distance between the two points (metres)")

    def invoke(self, context, event):
        return context.window_manager.invoke_props_dialog(self)

    def delta(self, context, collection, rec) -> np.ndarray:
        pts = selected_points(context)
        if len(pts) == 2:
            a, b = pts
        elif len(pts) == 1:
            a, b = np.array(context.scene.cursor.location), pts[0]
        else:
            raise al.AlignmentError(f"select two points (or one and place the 3D cursor); {len(pts)} selected")
        return al.scale_transform(a, b, float(self.distance))


classes = (VGGT_OT_level_to_floor, VGGT_OT_set_origin, VGGT_OT_set_scale)
