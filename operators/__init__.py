"""All operators of the extension, registered together (and the File > Import menu entry)."""

from __future__ import annotations

import importlib

import bpy

from ..registration import unregister_classes

# Modules exposing `classes`; the import operator's module may also expose `menu_func_import`.
_MODULE_NAMES = ("photos", "runtime", "reconstruct", "import_reconstruction", "look_through")

_registered: list[type] = []
_menu_funcs: list = []


def _load(name: str):
    try:
        return importlib.import_module(f".{name}", __package__)
    except ModuleNotFoundError as exc:
        # Only tolerate a module of ours that is absent; a missing dependency inside one is a real error.
        if exc.name == f"{__package__}.{name}":
            return None
        raise


def register() -> None:
    for name in _MODULE_NAMES:
        module = _load(name)
        if module is None:
            continue
        for cls in getattr(module, "classes", ()):
            bpy.utils.register_class(cls)
            _registered.append(cls)
        menu_func = getattr(module, "menu_func_import", None)
        if menu_func is not None:
            bpy.types.TOPBAR_MT_file_import.append(menu_func)
            _menu_funcs.append(menu_func)


def unregister() -> None:
    import sys

    reconstruct = sys.modules.get(f"{__package__}.reconstruct")
    if reconstruct is not None:
        reconstruct.cancel_active()  # never leave a worker process running without its operator
    for menu_func in reversed(_menu_funcs):
        bpy.types.TOPBAR_MT_file_import.remove(menu_func)
    _menu_funcs.clear()
    unregister_classes(_registered)
    _registered.clear()
