"""All operators of the extension, registered together (and the File > Import / Export menu entries)."""

from __future__ import annotations

import importlib

import bpy

from ..registration import unregister_classes

# Modules exposing `classes`; a module may also expose `menu_func_import` (File > Import),
# `menu_func_export` (File > Export) and its own
# register()/unregister() for what is not a class (handlers, timers, background tasks).
_MODULE_NAMES = ("photos", "runtime", "server", "reconstruct", "import_reconstruction", "look_through",
                 "alignment", "export_colmap", "refine", "shot")
_MENUS = (("menu_func_import", "TOPBAR_MT_file_import"), ("menu_func_export", "TOPBAR_MT_file_export"))

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
        for attr, menu in _MENUS:
            menu_func = getattr(module, attr, None)
            if menu_func is not None:
                getattr(bpy.types, menu).append(menu_func)
                _menu_funcs.append((menu, menu_func))
        hook = getattr(module, "register", None)
        if hook is not None:
            hook()
            _hooked.append(module)


def unregister() -> None:
    # First stop what runs (the worker, installs, downloads, timers), then remove the classes.
    for module in reversed(_hooked):
        module.unregister()
    _hooked.clear()
    for menu, menu_func in reversed(_menu_funcs):
        getattr(bpy.types, menu).remove(menu_func)
    _menu_funcs.clear()
    unregister_classes(_registered)
    _registered.clear()
