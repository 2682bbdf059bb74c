"""Choosing photos: several files, a whole folder, or an image sequence (the panel's photo list)."""

from __future__ import annotations

import os

import bpy
from bpy.props import BoolProperty, CollectionProperty, StringProperty
from bpy_extras.io_utils import ImportHelper

from ..vggt_blender.errors import VGGTError
from ..vggt_blender.io.photo_paths import collect_images
from .drop import DropImport, SidebarDrop


# What a drop on the panel takes as photos (the file browser's filter, lower-case and upper-case alike).
DROP_PHOTO_EXTENSIONS = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp", ".webp", ".heic", ".heif")


class VGGT_OT_add_photos(DropImport, bpy.types.Operator, ImportHelper):
    """Add photos to the list: select several files, or none to add every image in the folder (natural order)"""

    bl_idname = "vggt.add_photos"
    bl_label = "Add Photos"
    bl_options = {"REGISTER", "UNDO"}

    filter_glob: StringProperty(
        default="*.jpg;*.jpeg;*.png;*.tif;*.tiff;*.bmp;*.webp;*.JPG;*.JPEG;*.PNG", options={"HIDDEN"})
    filter_image: BoolProperty(default=True, options={"HIDDEN"})
    files: CollectionProperty(type=bpy.types.OperatorFileListElement, options={"HIDDEN", "SKIP_SAVE"})
    directory: StringProperty(subtype="DIR_PATH", options={"SKIP_SAVE"})
    drop_properties = ("directory", "files")  # what a drop on the panel sets (VGGT_FH_photos)
    replace: BoolProperty(name="Replace List", default=False,
                          description="Replace the current photo list instead of adding to it")

    def execute(self, context: bpy.types.Context) -> set[str]:
        directory = self.directory or os.path.dirname(self.filepath)
        chosen = [os.path.join(directory, f.name) for f in self.files if f.name]
        # Nothing selected (or only the folder): the whole folder is the photo set.
        inputs = chosen or [directory]
        try:
            paths, warnings = collect_images(inputs)
        except VGGTError as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        settings = context.scene.vggt
        if self.replace:
            settings.photos.clear()
        known = {os.path.normpath(bpy.path.abspath(p.filepath)) for p in settings.photos}
        for path in paths:
            if os.path.normpath(path) not in known:  # adding the same photo twice changes nothing
                settings.photos.add().filepath = path
                known.add(os.path.normpath(path))
        for warning in warnings[:5]:
            self.report({"WARNING"}, warning)
        self.report({"INFO"}, f"{len(settings.photos)} photos")
        return {"FINISHED"}


class VGGT_OT_clear_photos(bpy.types.Operator):
    """Remove all photos from the list"""

    bl_idname = "vggt.clear_photos"
    bl_label = "Clear Photos"
    bl_options = {"REGISTER", "UNDO"}

    def execute(self, context: bpy.types.Context) -> set[str]:
        context.scene.vggt.photos.clear()
        return {"FINISHED"}


class VGGT_OT_remove_photo(bpy.types.Operator):
    """Remove the selected photo from the list"""

    bl_idname = "vggt.remove_photo"
    bl_label = "Remove Photo"
    bl_options = {"REGISTER", "UNDO"}

    def execute(self, context: bpy.types.Context) -> set[str]:
        settings = context.scene.vggt
        if 0 <= settings.photo_index < len(settings.photos):
            settings.photos.remove(settings.photo_index)
            settings.photo_index = max(0, min(settings.photo_index, len(settings.photos) - 1))
        return {"FINISHED"}


class VGGT_FH_photos(SidebarDrop, bpy.types.FileHandler):
    """Photos dragged from the desktop onto the VGGT sidebar are added to the photo list"""

    bl_idname = "VGGT_FH_photos"
    bl_label = "VGGT: Add Photos"
    bl_import_operator = "vggt.add_photos"
    bl_file_extensions = ";".join(DROP_PHOTO_EXTENSIONS)


classes = (VGGT_OT_add_photos, VGGT_OT_clear_photos, VGGT_OT_remove_photo, VGGT_FH_photos)
