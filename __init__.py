"""VGGT Reconstruction: the Blender extension's entry point (register()/unregister() only).

Everything Blender-side imports relatively: installed, this package is `bl_ext.<repo>.vggt_blender`.
The model runs in a separate Python (the inference runtime), never inside Blender.
"""

from __future__ import annotations

import importlib

# Submodules in registration order; unregister runs in reverse.
_MODULE_NAMES = ("properties", "preferences", "operators", "panels")


def _modules() -> list:
    return [importlib.import_module(f".{name}", __package__) for name in _MODULE_NAMES]


def register() -> None:
    started = []
    try:
        for module in _modules():
            started.append(module)
            module.register()
    except Exception:
        # Leave nothing half-registered behind: a failed enable must not poison the next attempt.
        # Each unregister() only removes what is registered, so the failing module is included.
        for module in reversed(started):
            try:
                module.unregister()
            except Exception:
                pass
        raise


def unregister() -> None:
    for module in reversed(_modules()):
        module.unregister()
