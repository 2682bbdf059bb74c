"""EXIF orientation read with the standard library, checked against Pillow on files Pillow writes."""

from __future__ import annotations

import pytest
from PIL import Image, ImageOps

from vggt_blender.io.exif_orientation import exif_orientation, upright_size


@pytest.mark.parametrize("fmt,suffix", [("JPEG", "jpg"), ("TIFF", "tif"), ("PNG", "png"), ("WEBP", "webp")])
@pytest.mark.parametrize("orientation", [1, 3, 6, 8])
def test_orientation_matches_pillow(tmp_path, fmt, suffix, orientation):
    path = tmp_path / f"photo.{suffix}"
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.new("RGB", (40, 30), (200, 10, 10)).save(path, fmt, exif=exif.tobytes())
    assert exif_orientation(path) == orientation
    upright = upright_size(40, 30, exif_orientation(path))
    assert upright == ((30, 40) if orientation in (6, 8) else (40, 30))
    if fmt != "TIFF":  # Pillow turns TIFFs upright while loading: its size is already the upright one
        with Image.open(path) as im:
            assert ImageOps.exif_transpose(im).size == upright


def test_no_exif_or_not_an_image_counts_as_upright(tmp_path):
    plain = tmp_path / "plain.jpg"
    Image.new("RGB", (4, 3)).save(plain)
    junk = tmp_path / "junk.jpg"
    junk.write_bytes(b"\xff\xd8\xff\xe1\x00\x10Exif\x00\x00MM\x00*\x00\x00\xff\xff")  # truncated IFD
    assert exif_orientation(plain) == 1
    assert exif_orientation(junk) == 1
    assert exif_orientation(tmp_path / "missing.jpg") == 1
