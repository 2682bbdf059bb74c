"""Headless: build the Blender scene of a reconstruction with the bpy module and save it as a .blend.

The scene builders live in the extension's `scene/` package, which uses relative imports
(`from ..vggt_blender import ...`). Outside Blender the repository root is therefore loaded as a package under
a private name, without running its `__init__.py` (that one registers UI classes, which is not wanted here).
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType

from .errors import VGGTError

_PACKAGE_NAME = "_vggt_blender_extension"
_REPO_ROOT = Path(__file__).resolve().parent.parent

BPY_MISSING = "the --blend option needs the bpy module (pip install bpy==5.0.1) in this Python"


class BlendFileError(VGGTError):
    code = "bad_request"


def load_extension_package(name: str = _PACKAGE_NAME, root: str | os.PathLike | None = None) -> ModuleType:
    """Make the repository root importable as package `name` (its `__init__.py` is not executed).

    `importlib.import_module(name + ".scene.build")` then works with the builders' relative imports.
    """
    if name in sys.modules:
        return sys.modules[name]
    root = Path(root) if root is not None else _REPO_ROOT
    spec = importlib.util.spec_from_file_location(
        name, root / "__init__.py", submodule_search_locations=[str(root)])
    if spec is None:
        raise BlendFileError(f"{root}: cannot load the extension package from this folder", file=str(root))
    package = importlib.util.module_from_spec(spec)
    sys.modules[name] = package
    if __package__ == "vggt_blender" and root == _REPO_ROOT:
        _share_pure_package(name)
    return package


def _share_pure_package(name: str) -> None:
    """Let `<name>.vggt_blender` be this very `vggt_blender` package, so errors raised by the builders are the
    classes callers catch (a second copy would make `except VGGTError` miss them)."""
    from . import blender_camera, errors, reconstruction, scene_options  # noqa: F401 - import to alias them

    for mod_name, module in list(sys.modules.items()):
        if module is not None and (mod_name == "vggt_blender" or mod_name.startswith("vggt_blender.")):
            sys.modules.setdefault(f"{name}.{mod_name}", module)


def _scene_build_module() -> ModuleType:
    # Inside Blender (installed extension) this module is <ext>.vggt_blender.blend_file: use the sibling.
    if __package__ and "." in __package__:
        parent = __package__.rsplit(".", 1)[0]
        return importlib.import_module(f"{parent}.scene.build")
    package = load_extension_package()
    return importlib.import_module(f"{package.__name__}.scene.build")


def write_blend(reconstruction_path: str | os.PathLike, blend_path: str | os.PathLike, options=None) -> Path:
    """Load the reconstruction, build its scene into an empty Blender file and save it to `blend_path`."""
    try:
        import bpy
    except ImportError as exc:
        raise BlendFileError(BPY_MISSING) from exc
    from .reconstruction import load_reconstruction
    from .scene_options import SceneOptions

    blend_path = Path(blend_path).expanduser().resolve()
    if blend_path.suffix.lower() != ".blend":
        raise BlendFileError(f"{blend_path}: the output file must end in .blend", file=str(blend_path))
    if not blend_path.parent.is_dir():
        raise BlendFileError(f"{blend_path}: the folder {blend_path.parent} does not exist", file=str(blend_path))
    if isinstance(options, dict):
        options = SceneOptions.from_dict(options)
    build = _scene_build_module()

    rec = load_reconstruction(reconstruction_path)  # before touching the open file: a bad file changes nothing
    bpy.ops.wm.read_homefile(use_empty=True)
    build.build_scene(rec, options or SceneOptions(), build.default_collection_name(rec, reconstruction_path),
                      bpy.context, source_path=reconstruction_path)
    # Cycles renders the emission materials as the photos; keep a neutral view transform for that.
    scene = bpy.context.scene
    scene.view_settings.view_transform = "Standard"
    result = bpy.ops.wm.save_as_mainfile(filepath=str(blend_path), check_existing=False)
    if "FINISHED" not in result or not blend_path.is_file():
        raise BlendFileError(f"{blend_path}: Blender could not save the file", file=str(blend_path))
    return blend_path
