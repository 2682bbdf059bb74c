"""Headless: build the Blender scene of a reconstruction with the bpy module and save it as a .blend.

Outside Blender this module is reached through `vggt_blender.extension_package.scene_module("blend_file")`.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..vggt_blender.errors import VGGTError

BPY_MISSING = "the --blend option needs the bpy module (pip install bpy==5.0.1) in this Python"


class BlendFileError(VGGTError):
    code = "bad_request"


# A .blend opens in the Blender that wrote it and newer ones; Blender 4.5 LTS also reads 5.x files (it warns),
# 4.2 LTS refuses them ("not a blend file"). Measured with the bpy wheels: 5.0.1 -> 4.5.15 opens, 4.2.23 not.
_OLDEST_READER = {(5, 0): (4, 5)}


def oldest_blender_that_opens(written_by: tuple[int, int]) -> tuple[int, int]:
    """The oldest Blender (major, minor) known to open a .blend saved by Blender `written_by`."""
    return _OLDEST_READER.get(tuple(written_by[:2]), tuple(written_by[:2]))


def blend_compatibility_note(blend_path: str | os.PathLike, reconstruction_path: str | os.PathLike) -> str:
    """One line for the command line after writing a .blend: which Blender opens it, and the way for others."""
    import bpy

    major, minor = bpy.app.version[:2]
    low = "%d.%d" % oldest_blender_that_opens((major, minor))
    return (f"{Path(blend_path).name} was saved by Blender {major}.{minor} and opens in Blender {low} or newer; "
            f"in older Blender (4.2 LTS) use File > Import > VGGT Reconstruction on "
            f"{Path(reconstruction_path).name} (the .npz imports in every supported Blender)")


def write_blend(reconstruction_path: str | os.PathLike, blend_path: str | os.PathLike, options=None) -> Path:
    """Load the reconstruction, build its scene into an empty Blender file and save it to `blend_path`."""
    try:
        import bpy
    except ImportError as exc:
        raise BlendFileError(BPY_MISSING) from exc
    from ..vggt_blender.io.reconstruction import load_reconstruction
    from . import build
    from ..vggt_blender.options import SceneOptions

    blend_path = Path(blend_path).expanduser().resolve()
    if blend_path.suffix.lower() != ".blend":
        raise BlendFileError(f"{blend_path}: the output file must end in .blend", file=str(blend_path))
    if not blend_path.parent.is_dir():
        raise BlendFileError(f"{blend_path}: the folder {blend_path.parent} does not exist", file=str(blend_path))
    if isinstance(options, dict):
        options = SceneOptions.from_dict(options)

    rec = load_reconstruction(reconstruction_path)  # before touching the open file: a bad file changes nothing
    bpy.ops.wm.read_homefile(use_empty=True)
    build.build_scene(rec, options or SceneOptions(), build.default_collection_name(rec, reconstruction_path),
                      bpy.context, source_path=reconstruction_path, blend_path=blend_path)
    # Cycles renders the emission materials as the photos; keep a neutral view transform for that.
    scene = bpy.context.scene
    scene.view_settings.view_transform = "Standard"
    result = bpy.ops.wm.save_as_mainfile(filepath=str(blend_path), check_existing=False)
    if "FINISHED" not in result or not blend_path.is_file():
        raise BlendFileError(f"{blend_path}: Blender could not save the file", file=str(blend_path))
    return blend_path
