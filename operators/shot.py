"""Choosing a shot for the panel: a movie file, or one file of a numbered image sequence."""

from __future__ import annotations

import os

import bpy
from bpy.props import StringProperty
from bpy_extras.io_utils import ImportHelper

from ..vggt_blender.shot.selection import SEQUENCE_EXTENSIONS, VIDEO_EXTENSIONS, is_video_path
from ..vggt_blender.shot.selection import sequence_pattern_for
from .drop import DropImport, SidebarDrop


class VGGT_OT_choose_shot(DropImport, bpy.types.Operator, ImportHelper):
    """Reconstruct a shot: a movie file, or any file of a numbered image sequence (the whole sequence)"""

    bl_idname = "vggt.choose_shot"
    bl_label = "Choose Shot"
    bl_options = {"REGISTER", "UNDO"}

    # SKIP_SAVE: a drop sets it; the next click must open the file browser, not reuse the last file.
    filepath: StringProperty(subtype="FILE_PATH", options={"HIDDEN", "SKIP_SAVE"})
    filter_glob: StringProperty(
        default=";".join(f"*{e};*{e.upper()}" for e in VIDEO_EXTENSIONS + SEQUENCE_EXTENSIONS),
        options={"HIDDEN"})

    def execute(self, context: bpy.types.Context) -> set[str]:
        if not os.path.isfile(self.filepath):
            self.report({"ERROR"}, f"{self.filepath}: not a file")
            return {"CANCELLED"}
        context.scene.vggt.shot_path = self.filepath
        return {"FINISHED"}


class VGGT_OT_clear_shot(bpy.types.Operator):
    """Forget the chosen shot (reconstruct the photo list instead)"""

    bl_idname = "vggt.clear_shot"
    bl_label = "Clear Shot"
    bl_options = {"REGISTER", "UNDO"}

    def execute(self, context: bpy.types.Context) -> set[str]:
        context.scene.vggt.shot_path = ""
        return {"FINISHED"}


def shot_request_fields(settings) -> dict:
    """The worker request's shot fields from the panel ({} when no shot is chosen): `images` is the video,
    or the sequence as a #### pattern made from the chosen file."""
    if not settings.shot_path:
        return {}
    path = bpy.path.abspath(settings.shot_path)
    fields = {"images": [path if is_video_path(path) else sequence_pattern_for(path)],
              "every": int(settings.shot_every), "start": int(settings.shot_start)}
    if settings.shot_end >= 0:
        fields["end"] = int(settings.shot_end)
    if settings.shot_max_frames > 0:
        fields["max_frames"] = int(settings.shot_max_frames)
    if settings.shot_refine:  # one physical camera: one lens for every frame
        fields["refine"] = {"shared_intrinsics": True}
    return fields


class VGGT_FH_shot(SidebarDrop, bpy.types.FileHandler):
    """A movie file dragged from the desktop onto the VGGT sidebar becomes the panel's shot"""

    bl_idname = "VGGT_FH_shot"
    bl_label = "VGGT: Reconstruct This Shot"
    bl_import_operator = "vggt.choose_shot"
    bl_file_extensions = ";".join(VIDEO_EXTENSIONS)


classes = (VGGT_OT_choose_shot, VGGT_OT_clear_shot, VGGT_FH_shot)
