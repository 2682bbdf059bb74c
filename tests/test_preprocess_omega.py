"""VGGT-Omega preprocessing: parity with the official loader (fixtures/preprocess_omega), its sizes, and
the model -> photo pixel map through the aspect pre-crop, the per-axis scale and the batch padding."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.test_preprocess import _check_marker, _exif_with_orientation, _marker_photo, _red_centroid
from vggt_blender.errors import RequestError
from vggt_blender.preprocess import omega_aspect_crop, omega_resized_size, preprocess_images

FIXTURES = Path(__file__).parent / "fixtures"
PRE = FIXTURES / "preprocess_omega"
CASES = json.loads((PRE / "cases.json").read_text())


@pytest.mark.parametrize("case", sorted(CASES))
def test_matches_official_loader(case: str) -> None:
    spec = CASES[case]
    official = np.load(PRE / "expected.npz")[case]  # official output * 255, uint8 [N,3,H,W]
    result = preprocess_images([str(FIXTURES / p) for p in spec["images"]], mode=spec["mode"],
                               target_size=spec["target_size"], model="vggt-omega")
    ours = result.images.numpy()
    assert ours.dtype == np.float32 and ours.shape == official.shape
    max_err = float(np.abs(ours.astype(np.float64) - official / 255.0).max())
    print(f"{case}: max |ours - official| = {max_err * 255:.2e} / 255")
    assert max_err <= 0.5 / 255
    np.testing.assert_array_equal(np.rint(ours * np.float32(255)).astype(np.uint8), official)
    assert result.model_size == (official.shape[3], official.shape[2])
    assert result.model == "vggt-omega" and result.mode == spec["mode"]


@pytest.mark.parametrize(
    "size,balanced_512,max_512,balanced_256,max_256",
    [
        ((779, 520), (624, 416), (512, 336), (320, 208), (256, 176)),  # 3:2
        ((800, 600), (592, 448), (512, 384), (288, 224), (256, 192)),  # 4:3
        ((1920, 1080), (688, 384), (512, 288), (336, 192), (256, 144)),  # 16:9
        ((600, 600), (512, 512), (512, 512), (256, 256), (256, 256)),
        ((600, 800), (448, 592), (384, 512), (224, 288), (192, 256)),  # 3:4
        ((1000, 500), (720, 368), (512, 256), (368, 176), (256, 128)),  # 2:1
        ((500, 1000), (368, 720), (256, 512), (176, 368), (128, 256)),  # 1:2
        ((640, 490), (592, 448), (512, 384), (288, 224), (256, 192)),  # max_size tie 24.5 -> 24 patches
    ],
)
def test_sizes_table_of_the_spec(size, balanced_512, max_512, balanced_256, max_256) -> None:
    width, height = size
    assert omega_resized_size(width, height, "balanced", 512) == balanced_512
    assert omega_resized_size(width, height, "max_size", 512) == max_512
    assert omega_resized_size(width, height, "balanced", 256) == balanced_256
    assert omega_resized_size(width, height, "max_size", 256) == max_256


def test_aspect_pre_crop_window() -> None:
    assert omega_aspect_crop(1000, 300) == (200, 0, 600, 300)
    assert omega_aspect_crop(250, 701) == (0, 100, 250, 500)
    assert omega_aspect_crop(640, 480) == (0, 0, 640, 480)


@pytest.mark.parametrize(
    "mode,target,size,marker",
    [
        ("balanced", 512, (1000, 700), (300, 200)),  # resize only, different x and y scales after rounding
        ("max_size", 512, (600, 1000), (420, 700)),  # portrait
        ("balanced", 512, (1500, 500), (1000, 300)),  # too wide: 250 columns cut on each side first
        ("max_size", 512, (400, 1100), (100, 700)),  # too tall: 150 rows cut above
        ("balanced", 256, (777, 333), (600, 100)),  # odd size, wide crop, text-checkpoint resolution
        ("max_size", 256, (300, 220), (200, 150)),  # upscaled
    ],
)
def test_pixel_map_sends_marker_to_photo_position(tmp_path: Path, mode, target, size, marker) -> None:
    path = tmp_path / "marker.png"
    _marker_photo(path, size, marker)
    result = preprocess_images([str(path)], mode=mode, target_size=target, model="vggt-omega")
    assert result.original_sizes[0].tolist() == list(size)
    # Up to ~3 photo pixels per model pixel here; a crop-offset or half-pixel error would show as >= 0.5.
    _check_marker(result, 0, marker, tol=0.3)


def test_valid_box_maps_to_the_pre_crop_window(tmp_path: Path) -> None:
    path = tmp_path / "wide.png"
    Image.new("RGB", (1500, 500), (10, 20, 30)).save(path)
    result = preprocess_images([str(path)], model="vggt-omega")
    sx, sy, ox, oy = result.pixel_map[0]
    x0, y0, x1, y1 = result.valid_box[0]
    assert (x0, y0, x1, y1) == (0, 0, *result.model_size)
    # Kept window: columns 250..1250 of the photo, all rows.
    assert sx * x0 + ox == pytest.approx(250.0, abs=1e-9) and sx * x1 + ox == pytest.approx(1250.0, abs=1e-9)
    assert sy * y0 + oy == pytest.approx(0.0, abs=1e-9) and sy * y1 + oy == pytest.approx(500.0, abs=1e-9)


def test_pixel_map_with_batch_padding(tmp_path: Path) -> None:
    land, port, tall = tmp_path / "a.png", tmp_path / "b.png", tmp_path / "c.png"
    _marker_photo(land, (1200, 800), (900, 150))
    _marker_photo(port, (800, 1200), (200, 900))
    _marker_photo(tall, (400, 1300), (300, 1000))  # pre-cropped and padded
    result = preprocess_images([str(land), str(port), str(tall)], mode="balanced", model="vggt-omega")
    # 1200x800 -> 624x416, 800x1200 -> 416x624, (400x800 kept) -> 368x720: batch 624x720, white padding.
    assert result.model_size == (624, 720)
    assert result.valid_box[0].tolist() == [0, 152, 624, 568]
    assert result.valid_box[1].tolist() == [104, 48, 520, 672]
    assert result.valid_box[2].tolist() == [128, 0, 496, 720]
    assert (result.images_np[0][:, ~result.valid_mask[0]] == 1.0).all()
    assert result.notes and "padded" in result.notes[0]
    for i, marker in enumerate([(900, 150), (200, 900), (300, 1000)]):
        _check_marker(result, i, marker, tol=0.3)


def test_exif_orientation_stays_applied(tmp_path: Path) -> None:
    # Stored 1000x300 landscape (too wide) with orientation 6: upright it is a 300x1000 portrait (too tall),
    # cropped to rows 200..800. The red block at stored rows 0..60, columns 400..480 is upright at
    # columns 240..300, rows 400..480: centre (270, 440).
    stored = np.full((300, 1000, 3), 200, dtype=np.uint8)
    stored[0:60, 400:480] = (255, 0, 0)
    path = tmp_path / "phone.jpg"
    Image.fromarray(stored).save(path, quality=95, exif=_exif_with_orientation(6))
    result = preprocess_images([str(path)], mode="max_size", model="vggt-omega")
    assert result.rotated.tolist() == [True]
    assert result.original_sizes[0].tolist() == [300, 1000]
    assert result.model_size == (256, 512)  # upright 300x600 after the pre-crop
    x_model, y_model = _red_centroid(result.images_np[0])
    sx, sy, ox, oy = result.pixel_map[0]
    assert abs(sx * x_model + ox - 270) < 2.0 and abs(sy * y_model + oy - 440) < 2.0


def test_defaults_per_model_and_mode_mixups(tmp_path: Path) -> None:
    path = tmp_path / "p.png"
    Image.new("RGB", (779, 520), (0, 0, 255)).save(path)
    assert preprocess_images([str(path)], model="vggt-omega").model_size == (624, 416)  # balanced, 512
    v1 = preprocess_images([str(path)])
    assert (v1.model, v1.mode, v1.target_size, v1.model_size[0]) == ("vggt", "crop", 518, 518)
    with pytest.raises(RequestError, match="vggt-omega mode"):
        preprocess_images([str(path)], mode="balanced")
    with pytest.raises(RequestError, match="'balanced' or 'max_size'"):
        preprocess_images([str(path)], mode="crop", model="vggt-omega")
    with pytest.raises(RequestError, match="multiple of 16"):
        preprocess_images([str(path)], target_size=518, model="vggt-omega")
    with pytest.raises(RequestError, match="model family"):
        preprocess_images([str(path)], model="vggt-2")
