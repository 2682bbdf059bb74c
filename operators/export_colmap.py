"""File > Export > COLMAP Model: a reconstruction collection (the active object's, or the active collection)
written as a COLMAP sparse model with its photos, from the reconstruction file it was built from."""

from __future__ import annotations

import bpy
from bpy.props import BoolProperty, StringProperty

from ..vggt_blender.errors import VGGTError
from .reconstruct import one_line


def reconstruction_collection(context) -> "bpy.types.Collection | None":
    """The reconstruction collection the user means: the active object's, else the active collection."""
    ob = context.active_object
    if ob is not None:
        for collection in ob.users_collection:
            if collection.get("vggt_reconstruction"):
                return collection
    collection = getattr(context, "collection", None)
    if collection is not None and collection.get("vggt_reconstruction"):
        return collection
    return None


class VGGT_OT_export_colmap(bpy.types.Operator):
    """Write the selected reconstruction as a COLMAP model (sparse/0 and images/) for COLMAP, Gaussian
    splatting or NeRF trainers"""

    bl_idname = "vggt.export_colmap"
    bl_label = "Export COLMAP Model"
    bl_options = {"REGISTER"}

    directory: StringProperty(name="Folder", subtype="DIR_PATH")
    filter_folder: BoolProperty(default=True, options={"HIDDEN"})
    text: BoolProperty(name="Text Format", default=False, description="COLMAP's .txt files instead of .bin")

    @classmethod
    def poll(cls, context) -> bool:
        return reconstruction_collection(context) is not None

    def invoke(self, context, event):
        context.window_manager.fileselect_add(self)
        return {"RUNNING_MODAL"}

    def execute(self, context):
        from ..vggt_blender.io.colmap import export_colmap
        from ..vggt_blender.io.reconstruction import load_reconstruction

        collection = reconstruction_collection(context)
        if collection is None:
            self.report({"ERROR"}, "Select an object of a VGGT reconstruction collection first")
            return {"CANCELLED"}
        if not self.directory:
            self.report({"ERROR"}, "Choose a folder to export to")
            return {"CANCELLED"}
        source = bpy.path.abspath(str(collection["vggt_reconstruction"]))
        try:
            model = export_colmap(load_reconstruction(source), bpy.path.abspath(self.directory), text=self.text)
        except VGGTError as exc:
            self.report({"ERROR"}, one_line(exc))
            return {"CANCELLED"}
        self.report({"INFO"}, f"COLMAP model: {len(model.names)} images, {len(model.xyz):,} points "
                              f"in {self.directory}")
        return {"FINISHED"}


def menu_func_export(self, context) -> None:
    self.layout.operator(VGGT_OT_export_colmap.bl_idname, text="COLMAP Model (VGGT reconstruction)")


classes = (VGGT_OT_export_colmap,)
