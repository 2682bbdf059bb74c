"""Registering a module's classes with Blender, shared by properties, preferences, panels and operators."""

from __future__ import annotations

from typing import Iterable

import bpy


def register_classes(classes: Iterable[type]) -> None:
    for cls in classes:
        bpy.utils.register_class(cls)


def unregister_classes(classes: Iterable[type]) -> None:
    """In reverse order, skipping what is not registered: a failed or partial register() must still undo."""
    for cls in reversed(tuple(classes)):
        if getattr(cls, "is_registered", False):
            bpy.utils.unregister_class(cls)
