"""Files dragged from the desktop onto the VGGT sidebar (Blender's FileHandler, 4.1 and newer): one mixin for
the operators that take them, one for their handlers."""

from __future__ import annotations

import bpy


def dropped_on_the_sidebar(context: bpy.types.Context) -> bool:
    """Where a file dropped from the desktop is ours: the 3D viewport's sidebar (the VGGT panel lives there).
    The viewport itself keeps Blender's own drops (images as empties or planes, camera backgrounds)."""
    area, region = getattr(context, "area", None), getattr(context, "region", None)
    return area is not None and area.type == "VIEW_3D" and region is not None and region.type == "UI"


class DropImport:
    """For an ImportHelper operator a file handler calls: Blender invokes it with the dropped paths already set
    (`drop_properties`, which need SKIP_SAVE), so it runs at once; the panel's button opens the file browser."""

    drop_properties = ("filepath",)  # no annotation: Blender reads class annotations as properties

    def invoke(self, context: bpy.types.Context, event: bpy.types.Event) -> set[str]:
        if any(self.properties.is_property_set(name) for name in self.drop_properties):
            return self.execute(context)
        context.window_manager.fileselect_add(self)
        return {"RUNNING_MODAL"}


class SidebarDrop:
    """For a FileHandler: drops on the VGGT sidebar only."""

    @classmethod
    def poll_drop(cls, context: bpy.types.Context) -> bool:
        return dropped_on_the_sidebar(context)
