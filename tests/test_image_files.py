"""collect_images: folders in natural order, skipped files as warnings, clear errors."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from vggt_blender.errors import ImageLoadError
from vggt_blender.io.photo_paths import collect_images, is_image_file, natural_key


def _touch(folder: Path, *names: str) -> None:
    for name in names:
        (folder / name).write_bytes(b"x")


def test_folder_in_natural_order_with_warnings(tmp_path: Path) -> None:
    _touch(tmp_path, "frame_10.jpg", "frame_2.JPG", "frame_1.png", "Frame_3.jpeg", "notes.txt", "IMG_9.HEIC")
    _touch(tmp_path, ".DS_Store")
    (tmp_path / "sub").mkdir()
    paths, warnings = collect_images([str(tmp_path)])
    assert [os.path.basename(p) for p in paths] == ["frame_1.png", "frame_2.JPG", "Frame_3.jpeg", "frame_10.jpg"]
    assert all(os.path.isabs(p) for p in paths)
    assert "skipped notes.txt: not an image file" in warnings
    assert any(w.startswith("skipped IMG_9.HEIC: HEIC") for w in warnings)
    assert any(w.startswith("skipped sub: a folder") for w in warnings)
    assert not any(".DS_Store" in w for w in warnings)  # hidden files are skipped silently
    assert len(warnings) == 3


def test_files_and_folders_keep_input_order_and_dedupe(tmp_path: Path) -> None:
    folder = tmp_path / "set"
    folder.mkdir()
    _touch(folder, "b.png", "a.png")
    extra = tmp_path / "z_first.tif"
    extra.write_bytes(b"x")
    paths, warnings = collect_images([str(extra), str(folder), str(folder / "a.png")])
    assert [os.path.basename(p) for p in paths] == ["z_first.tif", "a.png", "b.png"]
    assert warnings == ["skipped a.png: listed more than once"]


def test_explicit_non_image_file_is_skipped_with_warning(tmp_path: Path) -> None:
    _touch(tmp_path, "photo.webp", "readme.md")
    paths, warnings = collect_images([str(tmp_path / "photo.webp"), str(tmp_path / "readme.md")])
    assert [os.path.basename(p) for p in paths] == ["photo.webp"]
    assert warnings == ["skipped readme.md: not an image file"]


def test_missing_explicit_file_raises(tmp_path: Path) -> None:
    missing = str(tmp_path / "gone.jpg")
    with pytest.raises(ImageLoadError) as info:
        collect_images([missing])
    assert missing in str(info.value) and "does not exist" in str(info.value)
    assert info.value.file == missing


def test_empty_result_raises_saying_where(tmp_path: Path) -> None:
    _touch(tmp_path, "notes.txt")
    with pytest.raises(ImageLoadError) as info:
        collect_images([str(tmp_path)])
    assert "no images were found" in str(info.value) and str(tmp_path) in str(info.value)
    with pytest.raises(ImageLoadError):
        collect_images([])


def test_extensions_and_natural_key() -> None:
    for name in ["a.jpg", "a.JPEG", "a.Png", "a.tif", "a.TIFF", "a.bmp", "a.webp"]:
        assert is_image_file(name), name
    for name in ["a.txt", "a.heic", "a.exr", "a", "a.jpg.bak"]:
        assert not is_image_file(name), name
    names = ["img10.png", "img2.png", "IMG1.png", "img02.png", "img1b.png"]
    assert sorted(names, key=natural_key) == ["IMG1.png", "img1b.png", "img02.png", "img2.png", "img10.png"]


def test_extensions_are_readable_by_pillow() -> None:
    from PIL import Image

    from vggt_blender.io.photo_paths import IMAGE_EXTENSIONS

    registered = set(Image.registered_extensions())
    assert IMAGE_EXTENSIONS <= registered, IMAGE_EXTENSIONS - registered


def test_a_folder_named_like_a_photo_is_reported(tmp_path: Path) -> None:
    """Issue 9 §2.12: `x.jpg/` among chosen photos (the Blender file browser can select it) is said, whether
    named or found in a folder, and its contents are not taken for photos."""
    _touch(tmp_path, "a.png")
    (tmp_path / "x.jpg").mkdir()
    _touch(tmp_path / "x.jpg", "inside.png")
    paths, warnings = collect_images([str(tmp_path / "a.png"), str(tmp_path / "x.jpg")])
    assert [os.path.basename(p) for p in paths] == ["a.png"]
    assert warnings == ["skipped x.jpg: a folder, not a photo"]
    paths, warnings = collect_images([str(tmp_path)])
    assert [os.path.basename(p) for p in paths] == ["a.png"]
    assert warnings == ["skipped x.jpg: a folder (folders are not searched recursively)"]
    with pytest.raises(ImageLoadError, match="no images were found"):
        collect_images([str(tmp_path / "x.jpg")])
