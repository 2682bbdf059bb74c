"""The sidebar panel (3D viewport, tab "VGGT")."""

from __future__ import annotations

from ..registration import register_classes, unregister_classes
from . import main_panel

classes = main_panel.classes


def register() -> None:
    register_classes(classes)


def unregister() -> None:
    unregister_classes(classes)
