"""`vggt.look_through`: make a reconstruction camera active with its own photo's resolution and pixel aspect."""

from __future__ import annotations

import bpy
from bpy.props import StringProperty

from ..scene.cameras import activate_camera


class VGGT_OT_look_through(bpy.types.Operator):
    """Look through this camera, with the render size of its photo"""

    bl_idname = "vggt.look_through"
    bl_label = "Look Through Camera"
    bl_options = {"REGISTER", "UNDO"}

    camera: StringProperty(name="Camera", default="",
                           description="Camera object name (empty: the active object)")

    @classmethod
    def poll(cls, context) -> bool:
        return context.scene is not None

    def execute(self, context):
        ob = bpy.data.objects.get(self.camera) if self.camera else context.active_object
        if ob is None or ob.type != "CAMERA":
            self.report({"ERROR"}, f"not a camera: {self.camera or 'active object'}")
            return {"CANCELLED"}
        # Resolution and pixel aspect are per scene: a mixed-size photo set needs them per camera.
        activate_camera(context.scene, ob)
        area = context.area if context.area is not None and context.area.type == "VIEW_3D" else None
        if area is None and context.screen is not None:
            area = next((a for a in context.screen.areas if a.type == "VIEW_3D"), None)
        if area is not None:
            space = area.spaces.active
            # A view-local camera, so this view shows `ob` even when other views follow the scene camera.
            space.use_local_camera = True
            space.camera = ob
            space.region_3d.view_perspective = "CAMERA"
        return {"FINISHED"}


classes = (VGGT_OT_look_through,)
