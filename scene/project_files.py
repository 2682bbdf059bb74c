"""Where reconstruction files live, and moving them beside the .blend when an unsaved file is first saved.

A saved .blend keeps its reconstructions in `//vggt/`. An unsaved file has no folder yet: its reconstructions
go to Blender's user data folder (`<config>/<version>/datafiles/vggt_blender/unsaved/`), which, unlike the
extension's own user folder, uninstalling the extension does not delete. When the file is saved, a save_pre
handler moves them (the .npz, its .log and its `<stem>_images/` folder of upright photo copies) into
`//vggt/` beside the new .blend and points the collection and its images there, so what is written is
already relative; save_post undoes that for "Save Copy" (the open file stays unsaved and keeps its files).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import bpy

RECONSTRUCTION_PROP = "vggt_reconstruction"
PROJECT_SUBFOLDER = "vggt"


def unsaved_reconstruction_dir() -> Path:
    """The folder for reconstructions made in a file that was never saved (created if missing)."""
    try:
        folder = bpy.utils.user_resource("DATAFILES", path=os.path.join("vggt_blender", "unsaved"), create=True)
    except (ValueError, RuntimeError, TypeError):
        folder = ""
    path = Path(folder) if folder else Path(tempfile.gettempdir()) / "vggt_blender" / "unsaved"
    path.mkdir(parents=True, exist_ok=True)
    return path


def reconstruction_output_dir() -> Path:
    """Beside the saved .blend (`//vggt/`), else the unsaved folder above."""
    if bpy.data.filepath:
        return Path(bpy.path.abspath("//" + PROJECT_SUBFOLDER))
    return unsaved_reconstruction_dir()


def _companions(npz: Path) -> list[Path]:
    """The files a reconstruction brings along: the worker's log and the upright photo copies."""
    return [p for p in (npz.with_suffix(".log"), npz.with_name(f"{npz.stem}_images")) if p.exists()]


def _free_stem(folder: Path, stem: str) -> str:
    candidate, n = stem, 2
    while any((folder / name).exists() for name in (f"{candidate}.npz", f"{candidate}.log",
                                                   f"{candidate}_images")):
        candidate, n = f"{stem}_{n}", n + 1
    return candidate


def _is_inside(path: Path, folder: Path) -> bool:
    try:
        return path.resolve().is_relative_to(folder.resolve())
    except OSError:
        return False


def _retarget_images(old_root: Path, new_root: Path) -> list[tuple[bpy.types.Image, str]]:
    """Point images loaded from `old_root/...` at `new_root/...`; returns (image, previous filepath)."""
    changed = []
    for image in bpy.data.images:
        if not image.filepath or image.library is not None:
            continue
        path = Path(bpy.path.abspath(image.filepath))
        if _is_inside(path, old_root):
            changed.append((image, image.filepath))
            image.filepath = str(new_root / path.resolve().relative_to(old_root.resolve()))
    return changed


# Moves done by save_pre, for save_post: (collection, old npz, new npz, [(old, new) companion paths],
# [(image, previous filepath)]).
_pending: list[tuple] = []


def move_unsaved_reconstructions(blend_path: str) -> int:
    """Move every collection's reconstruction that lives in the unsaved folder into `<blend dir>/vggt/` and
    store it relative to `blend_path`. Returns how many moved. Failures leave that reconstruction where it is."""
    from .build import stored_source_path

    unsaved = unsaved_reconstruction_dir()
    target = Path(blend_path).resolve().parent / PROJECT_SUBFOLDER
    moved = 0
    for collection in bpy.data.collections:
        stored = collection.get(RECONSTRUCTION_PROP)
        if not isinstance(stored, str) or not stored or stored.startswith("//"):
            continue
        npz = Path(stored)
        if not npz.is_file() or not _is_inside(npz, unsaved):
            continue
        try:
            target.mkdir(parents=True, exist_ok=True)
            stem = _free_stem(target, npz.stem)
            new_npz = target / f"{stem}.npz"
            companions = [(old, target / old.name.replace(npz.stem, stem, 1)) for old in _companions(npz)]
            shutil.move(str(npz), str(new_npz))
            for old, new in companions:
                shutil.move(str(old), str(new))
        except OSError as exc:
            print(f"VGGT: could not move {npz} beside {blend_path}: {exc}")
            continue
        images = []
        for old, new in companions:
            if old.name.endswith("_images"):
                images += _retarget_images(old, new)
        collection[RECONSTRUCTION_PROP] = stored_source_path(new_npz, blend_path)
        _pending.append((collection, npz, new_npz, companions, images))
        moved += 1
    return moved


def finish_moves(blend_path: str) -> None:
    """After the save: a real save keeps the moves; "Save Copy" (the open file is still not `blend_path`)
    copies the files back and restores the open file's paths, so both files find their reconstruction."""
    current = bpy.data.filepath
    kept_copy = not current or Path(current).resolve() != Path(blend_path).resolve()
    try:
        if not kept_copy:
            return
        for collection, npz, new_npz, companions, images in _pending:
            try:
                shutil.copy2(new_npz, npz)
                for old, new in companions:
                    if new.is_dir():
                        shutil.copytree(new, old, dirs_exist_ok=True)
                    else:
                        shutil.copy2(new, old)
            except OSError as exc:
                print(f"VGGT: could not copy {new_npz} back to {npz}: {exc}")
                continue
            collection[RECONSTRUCTION_PROP] = str(npz)
            for image, previous in images:
                image.filepath = previous
    finally:
        _pending.clear()


@bpy.app.handlers.persistent
def on_save_pre(filepath: str = "", *_args) -> None:
    _pending.clear()
    if filepath and not bpy.data.filepath:
        move_unsaved_reconstructions(filepath)


@bpy.app.handlers.persistent
def on_save_post(filepath: str = "", *_args) -> None:
    if _pending and filepath:
        finish_moves(filepath)


_HANDLERS = (("save_pre", on_save_pre), ("save_post", on_save_post))


def register_handlers() -> None:
    for name, handler in _HANDLERS:
        handlers = getattr(bpy.app.handlers, name)
        if not any(getattr(h, "__name__", "") == handler.__name__ and getattr(h, "__module__", "") == __name__
                   for h in handlers):
            handlers.append(handler)


def unregister_handlers() -> None:
    for name, handler in _HANDLERS:
        handlers = getattr(bpy.app.handlers, name)
        for h in list(handlers):
            if getattr(h, "__name__", "") == handler.__name__ and getattr(h, "__module__", "") == __name__:
                handlers.remove(h)
