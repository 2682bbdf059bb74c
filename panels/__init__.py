"""The sidebar panel (3D viewport, tab "VGGT")."""

from __future__ import annotations

import bpy

from . import main_panel

classes = main_panel.classes


def register() -> None:
    for cls in classes:
        bpy.utils.register_class(cls)


def unregister() -> None:
    for cls in reversed(classes):
        if getattr(cls, "is_registered", False):
            bpy.utils.unregister_class(cls)
