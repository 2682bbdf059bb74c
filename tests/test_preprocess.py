"""Preprocessing: parity with the official loader, the pixel map, EXIF, image modes and load errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vggt_blender.errors import ImageLoadError, RequestError
from vggt_blender.preprocess import load_image, preprocess_images, resized_size

FIXTURES = Path(__file__).parent / "fixtures"
PRE = FIXTURES / "preprocess"
CASES = json.loads((PRE / "cases.json").read_text())


# ---------------------------------------------------------------------------------------------------------
# Parity with the official loader (expected.npz = official output * 255 as uint8)


@pytest.mark.parametrize("case", sorted(CASES))
def test_matches_official_loader(case: str) -> None:
    spec = CASES[case]
    expected = np.load(PRE / "expected.npz")[case].astype(np.float64) / 255.0
    result = preprocess_images([str(PRE / "images" / name) for name in spec["images"]], mode=spec["mode"])
    assert result.images_np.dtype == np.float32
    assert result.images_np.shape == expected.shape
    max_err = float(np.abs(result.images_np.astype(np.float64) - expected).max())
    print(f"{case}: max |ours - official| = {max_err * 255:.2e} / 255")
    assert max_err <= 0.5 / 255
    # In fact bit-identical: every value is the same k/255 (the residual above is float32 vs float64).
    official_uint8 = np.load(PRE / "expected.npz")[case]
    np.testing.assert_array_equal(np.rint(result.images_np * np.float32(255)).astype(np.uint8), official_uint8)
    assert result.model_size == (expected.shape[3], expected.shape[2])


def test_shapes_and_metadata_crop_mixed() -> None:
    spec = CASES["crop_mixed"]
    result = preprocess_images([str(PRE / "images" / n) for n in spec["images"]], mode="crop")
    n = len(spec["images"])
    assert result.paths == [str(PRE / "images" / name) for name in spec["images"]]
    assert result.original_sizes.dtype == np.int32 and result.original_sizes.shape == (n, 2)
    assert result.original_sizes[1].tolist() == [480, 640]  # portrait: (width, height)
    assert result.pixel_map.dtype == np.float64 and result.pixel_map.shape == (n, 4)
    assert result.valid_box.dtype == np.int32 and result.valid_box.shape == (n, 4)
    assert result.rotated.dtype == bool and not result.rotated.any()
    # 640x480 -> 518x392, centred in the 518x518 batch: 63 white rows above, 63 below.
    assert result.valid_box[0].tolist() == [0, 63, 518, 455]
    # Portrait 480x640 -> 518x686, centre crop starts at row 84.
    assert result.valid_box[1].tolist() == [0, 0, 518, 518]
    np.testing.assert_allclose(result.pixel_map[1], [480 / 518, 640 / 686, 0.0, 84 * 640 / 686])
    mask = result.valid_mask
    assert mask.shape == (n, 518, 518) and mask[0].sum() == 518 * 392
    assert (result.images_np[0][:, ~mask[0]] == 1.0).all()  # batch padding is white
    colors = result.colors
    assert colors.dtype == np.uint8 and colors.shape == (n, 518, 518, 3)
    np.testing.assert_array_equal(colors.transpose(0, 3, 1, 2) / np.float32(255), result.images_np)


def test_images_property_is_torch_tensor() -> None:
    torch = pytest.importorskip("torch")
    result = preprocess_images([str(PRE / "images" / "square_518.png")])
    tensor = result.images
    assert isinstance(tensor, torch.Tensor) and tensor.dtype == torch.float32
    assert tuple(tensor.shape) == (1, 3, 518, 518)


# ---------------------------------------------------------------------------------------------------------
# Pixel map: a marker at a known photo position must appear where the map says


def _marker_photo(path: Path, size: tuple[int, int], marker: tuple[int, int], half: int = 12) -> None:
    """Mid-grey photo with a pure red square centred on the photo pixel corner `marker` (continuous)."""
    arr = np.full((size[1], size[0], 3), 128, dtype=np.uint8)
    mx, my = marker
    arr[my - half : my + half, mx - half : mx + half] = (255, 0, 0)
    Image.fromarray(arr).save(path)


def _red_centroid(image_chw: np.ndarray) -> tuple[float, float]:
    """Continuous (x, y) centre of the red marker in one model image [3, H, W]."""
    # Weight every pixel by its redness (R - G: 0 on grey and white, 1 on pure red). Resampling blurs the
    # square symmetrically, so the weighted centroid is sub-pixel accurate; +0.5 = pixel centres.
    weight = np.clip(image_chw[0].astype(np.float64) - image_chw[1], 0.0, None)
    assert weight.sum() > 1.0, "marker not found"
    ys, xs = np.indices(weight.shape)
    return float((weight * xs).sum() / weight.sum() + 0.5), float((weight * ys).sum() / weight.sum() + 0.5)


def _check_marker(result, index: int, marker: tuple[int, int], tol: float) -> None:
    sx, sy, ox, oy = result.pixel_map[index]
    x_model, y_model = _red_centroid(result.images_np[index])
    assert abs(sx * x_model + ox - marker[0]) <= tol
    assert abs(sy * y_model + oy - marker[1]) <= tol
    # The marker is inside the valid box.
    x0, y0, x1, y1 = result.valid_box[index]
    assert x0 <= x_model <= x1 and y0 <= y_model <= y1


@pytest.mark.parametrize(
    "mode,size,marker",
    [
        ("crop", (1000, 700), (300, 200)),  # landscape: resize only (non-uniform after rounding)
        ("crop", (600, 1000), (420, 700)),  # portrait: centre crop
        ("pad", (600, 1000), (150, 300)),  # portrait: white columns left and right
        ("pad", (1000, 600), (700, 450)),  # landscape: white rows above and below
        ("pad", (777, 333), (600, 100)),  # odd sizes
    ],
)
def test_pixel_map_sends_marker_to_photo_position(tmp_path: Path, mode: str, size, marker) -> None:
    path = tmp_path / "marker.png"
    _marker_photo(path, size, marker)
    result = preprocess_images([str(path)], mode=mode)
    # One model pixel is ~1-2 photo pixels here; a half-pixel convention error would show as ~0.5-1.
    _check_marker(result, 0, marker, tol=0.25)


def test_pixel_map_with_batch_padding(tmp_path: Path) -> None:
    """Crop mode with a landscape and a portrait: the landscape one is padded into the 518x518 batch."""
    land, port = tmp_path / "a_land.png", tmp_path / "b_port.png"
    _marker_photo(land, (1200, 800), (900, 150))
    _marker_photo(port, (800, 1200), (200, 900))
    result = preprocess_images([str(land), str(port)], mode="crop")
    assert result.model_size == (518, 518)
    # 1200x800 -> 518x350 (round(345.33/14)*14), padded by 84 rows above.
    assert resized_size(1200, 800, "crop") == (518, 350)
    assert result.valid_box[0].tolist() == [0, 84, 518, 434]
    _check_marker(result, 0, (900, 150), tol=0.25)
    _check_marker(result, 1, (200, 900), tol=0.25)


def test_pixel_map_of_model_corners_hits_photo_corners_in_pad_mode(tmp_path: Path) -> None:
    path = tmp_path / "p.png"
    Image.new("RGB", (640, 480), (10, 20, 30)).save(path)
    result = preprocess_images([str(path)], mode="pad")
    sx, sy, ox, oy = result.pixel_map[0]
    x0, y0, x1, y1 = result.valid_box[0]
    # The valid box edges are exactly the photo edges.
    assert sx * x0 + ox == pytest.approx(0.0, abs=1e-9)
    assert sy * y0 + oy == pytest.approx(0.0, abs=1e-9)
    assert sx * x1 + ox == pytest.approx(640.0, abs=1e-9)
    assert sy * y1 + oy == pytest.approx(480.0, abs=1e-9)


def test_pad_mode_other_target_size(tmp_path: Path) -> None:
    path = tmp_path / "p.png"
    Image.new("RGB", (300, 500), (0, 0, 255)).save(path)
    result = preprocess_images([str(path)], mode="pad", target_size=280)
    assert result.images_np.shape == (1, 3, 280, 280)
    assert resized_size(300, 500, "pad", 280) == (168, 280)
    assert result.valid_box[0].tolist() == [56, 0, 224, 280]
    assert (result.images_np[0, :, :, :56] == 1.0).all()


def test_bad_mode_and_target_size(tmp_path: Path) -> None:
    path = str(PRE / "images" / "square_518.png")
    with pytest.raises(RequestError):
        preprocess_images([path], mode="stretch")
    with pytest.raises(RequestError):
        preprocess_images([path], mode="pad", target_size=500)
    with pytest.raises(ImageLoadError):
        preprocess_images([])


# ---------------------------------------------------------------------------------------------------------
# EXIF orientation and image modes


def _exif_with_orientation(value: int) -> Image.Exif:
    exif = Image.Exif()
    exif[0x0112] = value
    return exif


def test_exif_rotated_jpeg_comes_out_upright(tmp_path: Path) -> None:
    # Stored landscape 400x300 with a red block in its top-left; orientation 6 = rotate 90 deg clockwise
    # to display, so upright it is a 300x400 portrait with the block in the top-RIGHT corner.
    stored = np.full((300, 400, 3), 200, dtype=np.uint8)
    stored[0:60, 0:80] = (255, 0, 0)
    path = tmp_path / "phone.jpg"
    Image.fromarray(stored).save(path, quality=95, exif=_exif_with_orientation(6))

    upright = load_image(path)
    assert upright.size == (300, 400)
    arr = np.asarray(upright)
    assert arr[20, 280, 0] > 200 and arr[20, 280, 1] < 60  # top-right is red
    assert arr[20, 20, 0] < 230 and arr[20, 20, 1] > 150  # top-left is grey

    result = preprocess_images([str(path)], mode="pad")
    assert result.rotated.tolist() == [True]
    assert result.original_sizes[0].tolist() == [300, 400]
    # Marker check through the pixel map: red block centre in upright coordinates is (270, 40):
    # stored rows 0..60 become upright columns 240..300, stored columns 0..80 become rows 0..80.
    x_model, y_model = _red_centroid(result.images_np[0])
    sx, sy, ox, oy = result.pixel_map[0]
    assert abs(sx * x_model + ox - 270) < 2.0 and abs(sy * y_model + oy - 40) < 2.0


@pytest.mark.parametrize(
    "orientation,upright_size,block_centre",
    [
        (3, (400, 300), (360, 270)),  # 180 degrees: block in the bottom-right
        (8, (300, 400), (30, 360)),  # 90 degrees counter-clockwise: bottom-left
        (2, (400, 300), (360, 30)),  # mirrored left-right: top-right
    ],
)
def test_other_exif_orientations(tmp_path: Path, orientation: int, upright_size, block_centre) -> None:
    stored = np.full((300, 400, 3), 200, dtype=np.uint8)
    stored[0:60, 0:80] = (255, 0, 0)  # block centre (40, 30) in the stored image
    path = tmp_path / "phone.jpg"
    Image.fromarray(stored).save(path, quality=95, exif=_exif_with_orientation(orientation))
    result = preprocess_images([str(path)], mode="pad")
    assert result.rotated.tolist() == [True]
    assert result.original_sizes[0].tolist() == list(upright_size)
    x_model, y_model = _red_centroid(result.images_np[0])
    sx, sy, ox, oy = result.pixel_map[0]
    assert abs(sx * x_model + ox - block_centre[0]) < 2.0 and abs(sy * y_model + oy - block_centre[1]) < 2.0


def test_exif_orientation_1_is_not_rotated(tmp_path: Path) -> None:
    path = tmp_path / "plain.jpg"
    Image.new("RGB", (64, 32), (1, 2, 3)).save(path, exif=_exif_with_orientation(1))
    result = preprocess_images([str(path)])
    assert result.rotated.tolist() == [False]
    assert result.original_sizes[0].tolist() == [64, 32]


def test_sixteen_bit_png_is_scaled_not_clipped(tmp_path: Path) -> None:
    values = np.array([[0, 257, 32896, 65535]], dtype=np.uint16).repeat(4, axis=0)
    path = tmp_path / "deep.png"
    Image.fromarray(values).save(path)
    with Image.open(path) as stored:
        assert stored.mode.startswith("I")
    img = load_image(path)
    assert img.mode == "RGB"
    np.testing.assert_array_equal(np.asarray(img)[0, :, 0], [0, 1, 128, 255])
    np.testing.assert_array_equal(np.asarray(img)[0, :, 0], np.asarray(img)[0, :, 2])


def test_cmyk_jpeg_converts_to_rgb(tmp_path: Path) -> None:
    cmyk = np.zeros((32, 64, 4), dtype=np.uint8)
    cmyk[:, :32] = (255, 0, 0, 0)  # cyan
    cmyk[:, 32:] = (0, 0, 0, 0)  # white
    path = tmp_path / "print.jpg"
    Image.fromarray(cmyk, mode="CMYK").save(path, quality=100)
    with Image.open(path) as stored:
        assert stored.mode == "CMYK"
    arr = np.asarray(load_image(path)).astype(int)
    assert np.abs(arr[16, 8] - [0, 255, 255]).max() <= 6
    assert np.abs(arr[16, 56] - [255, 255, 255]).max() <= 6


def test_la_png_composited_on_white(tmp_path: Path) -> None:
    la = np.zeros((8, 8, 2), dtype=np.uint8)
    la[..., 0] = 0  # black
    la[:, :4, 1] = 255  # opaque left half
    la[:, 4:, 1] = 0  # transparent right half
    path = tmp_path / "la.png"
    Image.fromarray(la, mode="LA").save(path)
    arr = np.asarray(load_image(path))
    assert (arr[:, :4] == 0).all() and (arr[:, 4:] == 255).all()


def test_palette_png_with_and_without_transparency(tmp_path: Path) -> None:
    pal = Image.new("P", (8, 8), 0)
    pal.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    pal.paste(1, (4, 0, 8, 8))
    plain, clear = tmp_path / "plain.png", tmp_path / "clear.png"
    pal.save(plain)
    pal.save(clear, transparency=1)  # index 1 (blue) becomes transparent
    a = np.asarray(load_image(plain))
    assert a[0, 0].tolist() == [255, 0, 0] and a[0, 7].tolist() == [0, 0, 255]
    b = np.asarray(load_image(clear))
    assert b[0, 0].tolist() == [255, 0, 0] and b[0, 7].tolist() == [255, 255, 255]


def test_rgba_composited_on_white_and_grey_to_rgb() -> None:
    rgba = load_image(PRE / "images" / "rgba_1000x750.png")
    grey = load_image(PRE / "images" / "gray_300x200.png")
    assert rgba.mode == grey.mode == "RGB"
    g = np.asarray(grey)
    assert (g[..., 0] == g[..., 1]).all() and (g[..., 1] == g[..., 2]).all()


@pytest.mark.parametrize("mode,key", [("L", 7), ("RGB", (1, 2, 3))])
def test_png_colour_key_transparency_becomes_white(tmp_path: Path, mode: str, key) -> None:
    arr = np.zeros((4, 4) if mode == "L" else (4, 4, 3), dtype=np.uint8)
    arr[:, 2:] = key
    path = tmp_path / "keyed.png"
    Image.fromarray(arr).save(path, transparency=key)
    out = np.asarray(load_image(path))
    assert (out[:, :2] == 0).all() and (out[:, 2:] == 255).all()


# ---------------------------------------------------------------------------------------------------------
# Unreadable files name the file and the problem


def _expect_error(path: Path, words: str) -> None:
    with pytest.raises(ImageLoadError) as info:
        load_image(path)
    message = str(info.value)
    assert str(path) in message and words in message, message
    assert info.value.file == str(path) and info.value.code == "bad_image"


def test_missing_file(tmp_path: Path) -> None:
    _expect_error(tmp_path / "nowhere.jpg", "does not exist")


def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.jpg"
    path.write_bytes(b"")
    _expect_error(path, "empty")


def test_not_an_image(tmp_path: Path) -> None:
    path = tmp_path / "notes.jpg"
    path.write_text("these are my holiday notes, not a photo\n")
    _expect_error(path, "not an image")


def test_folder_is_not_an_image(tmp_path: Path) -> None:
    _expect_error(tmp_path, "folder")


@pytest.mark.parametrize("suffix,fmt", [(".jpg", "JPEG"), (".png", "PNG")])
def test_truncated_file(tmp_path: Path, suffix: str, fmt: str) -> None:
    rng = np.random.default_rng(1)
    full = tmp_path / f"full{suffix}"
    Image.fromarray(rng.integers(0, 255, (200, 300, 3), dtype=np.uint8)).save(full, format=fmt)
    data = full.read_bytes()
    cut = tmp_path / f"cut{suffix}"
    cut.write_bytes(data[: len(data) // 2])
    _expect_error(cut, "truncated")


def test_corrupt_png(tmp_path: Path) -> None:
    full = tmp_path / "full.png"
    Image.new("RGB", (64, 64), (5, 6, 7)).save(full)
    data = bytearray(full.read_bytes())
    data[40:60] = b"\xff" * 20  # smash the compressed data (and its checksum)
    bad = tmp_path / "bad.png"
    bad.write_bytes(bytes(data))
    with pytest.raises(ImageLoadError) as info:
        load_image(bad)
    assert str(bad) in str(info.value)


def test_preprocess_names_the_bad_file_in_a_batch(tmp_path: Path) -> None:
    bad = tmp_path / "b.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    with pytest.raises(ImageLoadError) as info:
        preprocess_images([str(PRE / "images" / "square_518.png"), str(bad)])
    assert str(bad) in str(info.value)



def _write_png_text_bomb(path: Path) -> None:
    from PIL import PngImagePlugin

    info = PngImagePlugin.PngInfo()
    info.add_text("comment", "a" * 3_000_000, zip=True)  # inflates past Pillow's text-chunk limit
    Image.new("RGB", (4, 4)).save(path, pnginfo=info)


def _write_dds_unknown_format(path: Path) -> None:
    import struct

    header = (b"DDS " + struct.pack("<7I", 124, 0x1007, 4, 4, 0, 0, 0) + b"\0" * 44
              + struct.pack("<2I", 32, 0x4) + b"ZZZZ" + b"\0" * 20 + struct.pack("<5I", 0x1000, 0, 0, 0, 0))
    path.write_bytes(header + b"\0" * 64)


@pytest.mark.parametrize("name, writer, problem", [
    ("bomb.png", _write_png_text_bomb, "Decompressed data too large"),
    ("odd.dds", _write_dds_unknown_format, "Unimplemented pixel format"),
])
def test_decoder_failures_of_any_type_name_the_file(tmp_path: Path, name: str, writer, problem: str) -> None:
    # Pillow raises ValueError / NotImplementedError for these, which used to escape as tracebacks.
    path = tmp_path / name
    writer(path)
    with pytest.raises(ImageLoadError) as info:
        preprocess_images([path])
    assert str(info.value).startswith(f"{path}: ") and problem in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize("size", [(1, 2000), (20000, 1), (3, 700)])
def test_absurd_aspect_ratios_are_refused_before_resizing(tmp_path: Path, size) -> None:
    import tracemalloc

    path = tmp_path / "strip.png"
    Image.new("RGB", size, (200, 10, 10)).save(path)
    tracemalloc.start()
    with pytest.raises(ImageLoadError, match=f"strip.png: the image is {size[0]}x{size[1]} pixels: an aspect ratio "
                                             "beyond 1:20"):
        preprocess_images([path])
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 50_000_000  # a 1x2000 strip once took 5.5 GB


def test_wide_but_plausible_panorama_still_loads(tmp_path: Path) -> None:
    path = tmp_path / "pano.png"
    Image.new("RGB", (1900, 100), (10, 200, 10)).save(path)  # 19:1
    assert preprocess_images([path], mode="pad").images.shape[-1] == 518


def test_multi_frame_files_say_only_the_first_frame_is_used(tmp_path: Path) -> None:
    gif = tmp_path / "anim.gif"
    frames = [Image.new("RGB", (60, 40), c) for c in ((255, 0, 0), (0, 255, 0), (0, 0, 255))]
    frames[0].save(gif, save_all=True, append_images=frames[1:], duration=100)
    result = preprocess_images([gif])
    assert any(note == f"{gif}: has 3 frames or pages; only the first is used" for note in result.notes)
    red = result.colors[0, 10, 10]
    assert red[0] > 200 and red[1] < 50  # the first frame


def test_large_photo_gives_no_raw_pillow_warning(tmp_path: Path, recwarn) -> None:
    path = tmp_path / "big.png"
    with Image.new("L", (10_000, 9_000)) as img:  # 90 MP: past Pillow's warning threshold
        img.save(path, compress_level=1)
    preprocess_images([path])
    assert not [w for w in recwarn if issubclass(w.category, Image.DecompressionBombWarning)]
