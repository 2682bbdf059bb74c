"""Reconstructions made in an unsaved file (bpy): kept where uninstalling keeps them, moved beside the .blend
(with their log and upright photo copies) when the file is saved, and stored relative."""

from __future__ import annotations

import importlib
from pathlib import Path

import bpy
import numpy as np
import pytest

from vggt_blender.extension_package import load_extension_package
from vggt_blender.io.reconstruction import make_reconstruction, save_reconstruction
from vggt_blender.options import SceneOptions

EXT = load_extension_package("_vggt_ext_tests")
build = importlib.import_module(f"{EXT.__name__}.scene.build")
project_files = importlib.import_module(f"{EXT.__name__}.scene.project_files")

CAMERAS_ONLY = SceneOptions(create_point_cloud=False, create_depth_planes=False, background_images=True)


@pytest.fixture()
def unsaved(tmp_path, monkeypatch):
    folder = tmp_path / "user" / "unsaved"
    folder.mkdir(parents=True)
    monkeypatch.setattr(project_files, "unsaved_reconstruction_dir", lambda: folder)
    bpy.ops.wm.read_homefile(use_empty=True)
    project_files.register_handlers()
    yield folder
    project_files.unregister_handlers()
    bpy.ops.wm.read_homefile(use_empty=True)


def _png(path: Path, w: int = 8, h: int = 6) -> None:
    img = bpy.data.images.new("png_writer", w, h, alpha=False)
    img.pixels.foreach_set(np.linspace(0, 1, w * h * 4, dtype=np.float32))
    img.filepath_raw = str(path)
    img.file_format = "PNG"
    img.save()
    bpy.data.images.remove(img)


def _reconstruction_in(folder: Path, stem: str = "room") -> Path:
    """room.npz, room.log and room_images/IMG_0.png (an upright copy the scene shows) in `folder`."""
    images = folder / f"{stem}_images"
    images.mkdir()
    _png(images / "IMG_0.png")
    (folder / f"{stem}.log").write_text("worker log\n")
    K = np.array([[[10.0, 0, 4], [0, 10, 3], [0, 0, 1]]])
    E = np.hstack([np.eye(3), np.zeros((3, 1))])[None]
    rec = make_reconstruction(np.full((1, 6, 8), 2.0, np.float32), E, K, image_paths=[str(images / "IMG_0.png")])
    path = folder / f"{stem}.npz"
    save_reconstruction(path, rec)
    return path


def test_unsaved_folder_survives_uninstalling():
    # Blender's user data folder, not the extension's user folder (which uninstalling deletes).
    folder = project_files.unsaved_reconstruction_dir()
    assert folder.is_dir()
    assert "extensions" not in folder.parts
    assert folder.is_relative_to(Path(bpy.utils.user_resource("DATAFILES")))
    assert project_files.reconstruction_output_dir() == folder  # what Reconstruct uses in an unsaved file


def test_saving_moves_the_reconstruction_beside_the_blend(unsaved, tmp_path):
    npz = _reconstruction_in(unsaved)
    col = build.import_reconstruction_file(npz, CAMERAS_ONLY, name="room")
    assert col["vggt_reconstruction"] == str(npz)
    project = tmp_path / "project"
    project.mkdir()
    (project / "vggt").mkdir()
    (project / "vggt" / "room.npz").write_bytes(b"an earlier run: kept")
    blend = project / "scene.blend"
    bpy.ops.wm.save_as_mainfile(filepath=str(blend))

    moved = project / "vggt" / "room_2.npz"  # the earlier room.npz is not overwritten
    assert (project / "vggt" / "room.npz").read_bytes() == b"an earlier run: kept"
    assert moved.is_file() and (project / "vggt" / "room_2.log").is_file()
    assert (project / "vggt" / "room_2_images" / "IMG_0.png").is_file()
    assert list(unsaved.iterdir()) == []
    assert col["vggt_reconstruction"] == "//vggt/room_2.npz"
    (image,) = [im for im in bpy.data.images]
    assert Path(bpy.path.abspath(image.filepath)) == project / "vggt" / "room_2_images" / "IMG_0.png"

    # What was written is already the moved, relative state.
    bpy.ops.wm.read_homefile(use_empty=True)
    bpy.ops.wm.open_mainfile(filepath=str(blend))
    col = bpy.data.collections["room"]
    assert col["vggt_reconstruction"] == "//vggt/room_2.npz"
    assert Path(bpy.path.abspath(col["vggt_reconstruction"])) == moved
    (image,) = [im for im in bpy.data.images]
    assert tuple(image.size) == (8, 6)  # the photo copy loads from its new place
    # A later save of the saved file moves nothing.
    bpy.ops.wm.save_mainfile()
    assert moved.is_file()


def test_save_copy_leaves_the_open_file_its_reconstruction(unsaved, tmp_path):
    npz = _reconstruction_in(unsaved)
    col = build.import_reconstruction_file(npz, CAMERAS_ONLY, name="room")
    copy = tmp_path / "copy" / "scene.blend"
    copy.parent.mkdir()
    bpy.ops.wm.save_as_mainfile(filepath=str(copy), copy=True)
    assert bpy.data.filepath == ""
    assert col["vggt_reconstruction"] == str(npz) and npz.is_file()
    assert (unsaved / "room_images" / "IMG_0.png").is_file()
    assert (copy.parent / "vggt" / "room.npz").is_file()
    bpy.ops.wm.open_mainfile(filepath=str(copy))
    assert bpy.data.collections["room"]["vggt_reconstruction"] == "//vggt/room.npz"
