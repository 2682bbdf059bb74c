"""Loading the extension's Blender-side packages (`scene/`, ...) outside Blender, e.g. for `--blend` and tests.

Those packages use relative imports (`from ..vggt_blender import ...`), so the repository root is loaded as a
package under a private name without running its `__init__.py` (that one registers UI classes). stdlib only:
nothing here imports bpy; the modules it hands out may.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType

from .errors import RequestError

PACKAGE_NAME = "_vggt_blender_extension"
_REPO_ROOT = Path(__file__).resolve().parent.parent


def load_extension_package(name: str = PACKAGE_NAME, root: str | os.PathLike | None = None) -> ModuleType:
    """Make the repository root importable as package `name` (its `__init__.py` is not executed).

    `importlib.import_module(name + ".scene.build")` then works with the builders' relative imports.
    """
    if name in sys.modules:
        return sys.modules[name]
    root = Path(root) if root is not None else _REPO_ROOT
    spec = importlib.util.spec_from_file_location(
        name, root / "__init__.py", submodule_search_locations=[str(root)])
    if spec is None:
        raise RequestError(f"{root}: cannot load the extension package from this folder", file=str(root))
    package = importlib.util.module_from_spec(spec)
    sys.modules[name] = package
    if root == _REPO_ROOT:
        _share_pure_package(name)
    return package


def _share_pure_package(name: str) -> None:
    """Let `<name>.vggt_blender` be this very `vggt_blender` package, so errors raised by the builders are the
    classes callers catch (a second copy would make `except VGGTError` miss them)."""
    from . import errors, options  # noqa: F401 - imported so that they are aliased below
    from .geometry import blender_camera, cameras  # noqa: F401
    from .io import reconstruction  # noqa: F401

    sys.modules.setdefault(f"{name}.vggt_blender", sys.modules[__package__])
    for mod_name, module in list(sys.modules.items()):
        if module is not None and mod_name.startswith("vggt_blender."):
            sys.modules.setdefault(f"{name}.{mod_name}", module)


def scene_module(module: str) -> ModuleType:
    """`scene.<module>` of the extension (imports bpy when that module does)."""
    package = load_extension_package()
    return importlib.import_module(f"{package.__name__}.scene.{module}")
