"""All operators of the extension, registered together (and the File > Import menu entry)."""

from __future__ import annotations

import importlib

import bpy

from ..registration import unregister_classes

# Modules exposing `classes`; a module may also expose `menu_func_import` (File > Import) and its own
# register()/unregister() for what is not a class (handlers, timers, background tasks).
_MODULE_NAMES = ("photos", "runtime", "server", "reconstruct", "import_reconstruction", "look_through")

_registered: list[type] = []
_menu_funcs: list = []
_hooked: list = []


def _modules() -> list:
    # A missing module is a broken package: let the import error say so.
    return [importlib.import_module(f".{name}", __package__) for name in _MODULE_NAMES]


def register() -> None:
    for module in _modules():
        for cls in getattr(module, "classes", ()):
            bpy.utils.register_class(cls)
            _registered.append(cls)
        menu_func = getattr(module, "menu_func_import", None)
        if menu_func is not None:
            bpy.types.TOPBAR_MT_file_import.append(menu_func)
            _menu_funcs.append(menu_func)
        hook = getattr(module, "register", None)
        if hook is not None:
            hook()
            _hooked.append(module)


def unregister() -> None:
    # First stop what runs (the worker, installs, downloads, timers), then remove the classes.
    for module in reversed(_hooked):
        module.unregister()
    _hooked.clear()
    for menu_func in reversed(_menu_funcs):
        bpy.types.TOPBAR_MT_file_import.remove(menu_func)
    _menu_funcs.clear()
    unregister_classes(_registered)
    _registered.clear()
