"""Photos -> VGGT / VGGT-Omega model input, plus the mapping from model-input pixels back to the photo.

The resize/crop/pad arithmetic reproduces the official `load_and_preprocess_images` of each model
(VGGT: PIL bicubic, Python `round`, centre crop, white padding; VGGT-Omega: aspect pre-crop to [0.5, 2],
token-budget ("balanced") or longest-side ("max_size") sizes with numpy rounding, no crop or pad after
the resize; both: white batch padding) so the model sees the same numbers. On top of that
we apply EXIF orientation (phone photos come out upright), composite any transparency on white, convert
16-bit and exotic modes properly, and record where every model pixel comes from in the photo.

PIL + numpy only; torch is imported lazily by `PreprocessResult.images`.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Sequence

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import ImageLoadError, RequestError
from .geometry.cameras import valid_mask_from_boxes

if TYPE_CHECKING:  # pragma: no cover
    import torch

PATCH_SIZE = 14
DEFAULT_TARGET_SIZE = 518
MODES = ("crop", "pad")
# VGGT-Omega (VGGT_OMEGA_SPEC §2): patch 16, 512 px (256 for the text-aligned checkpoint).
OMEGA_PATCH_SIZE = 16
OMEGA_DEFAULT_TARGET_SIZE = 512
OMEGA_MODES = ("balanced", "max_size")
OMEGA_ASPECT_RANGE = (0.5, 2.0)  # height / width; photos outside are centre-cropped into it first
MODEL_FAMILIES = ("vggt", "vggt-omega")
_EXIF_ORIENTATION_TAG = 0x0112


@dataclass
class PreprocessResult:
    """A batch ready for the model and the geometry needed to map it back to the photos.

    images_np:      float32 [N,3,H,W] in [0, 1] (white = 1.0 on padding).
    paths:          the source paths, in batch order.
    original_sizes: int32 [N,2] (width, height) of the upright photo.
    pixel_map:      float64 [N,4] (sx, sy, ox, oy): x_photo = sx*x_model + ox, y_photo = sy*y_model + oy,
                    continuous pixel coordinates with (0,0) at the top-left corner of the top-left pixel.
    valid_box:      int32 [N,4] (x0, y0, x1, y1), half-open model pixels that show the photo.
    rotated:        bool [N], True where EXIF orientation changed the image.
    model_size:     (width, height) of the model input.
    mode, target_size: the settings used; model: the family they are for ("vggt" or "vggt-omega").
    """

    images_np: np.ndarray
    paths: list[str]
    original_sizes: np.ndarray
    pixel_map: np.ndarray
    valid_box: np.ndarray
    rotated: np.ndarray
    model_size: tuple[int, int]
    mode: str = "crop"
    target_size: int = DEFAULT_TARGET_SIZE
    notes: list[str] = field(default_factory=list)
    model: str = "vggt"

    @property
    def images(self) -> "torch.Tensor":
        """The batch as a torch float32 tensor [N,3,H,W] (shares memory with `images_np`)."""
        import torch  # lazy: the rest of this module must work without torch

        return torch.from_numpy(self.images_np)

    @property
    def colors(self) -> np.ndarray:
        """Model-input RGB as uint8 [N,H,W,3] (exact: every value is k/255)."""
        scaled = np.rint(self.images_np * np.float32(255.0))
        return np.ascontiguousarray(scaled.astype(np.uint8).transpose(0, 2, 3, 1))

    @property
    def valid_mask(self) -> np.ndarray:
        """bool [N,H,W]: True on model pixels that show the photo, False on padding."""
        width, height = self.model_size
        return valid_mask_from_boxes(np.asarray(self.valid_box, dtype=np.int64).reshape(len(self.paths), 4),
                                     int(height), int(width))


# ---------------------------------------------------------------------------------------------------------
# Loading one photo


def _fail(path: str, problem: str) -> ImageLoadError:
    return ImageLoadError(f"{path}: {problem}", file=path)


def _open_decoded(path: str) -> Image.Image:
    """Open and fully decode `path`, turning every failure into an ImageLoadError that names the file."""
    if os.path.isdir(path):
        raise _fail(path, "is a folder, not an image file")
    try:
        size = os.path.getsize(path)
    except FileNotFoundError:
        raise _fail(path, "the file does not exist") from None
    except OSError as exc:
        raise _fail(path, f"the file cannot be read ({exc.strerror or exc})") from None
    if size == 0:
        raise _fail(path, "the file is empty (0 bytes)")
    try:
        with warnings.catch_warnings():
            # Large photos (say 144 MP) are fine here; Pillow's bomb warning would reach the user raw.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(path)
    except UnidentifiedImageError:
        raise _fail(path, "not an image file (or a format Pillow cannot read)") from None
    except Image.DecompressionBombError as exc:
        raise _fail(path, f"the image is too large to load safely ({exc})") from None
    except PermissionError:
        raise _fail(path, "permission denied") from None
    except OSError as exc:
        raise _fail(path, f"the file cannot be opened ({exc})") from None
    except Exception as exc:  # noqa: BLE001 - plugins raise ValueError, NotImplementedError, ... on odd files
        raise _fail(path, f"not a readable image ({type(exc).__name__}: {exc or 'no detail'})") from None
    # Image.open is lazy: decode everything now so a truncated or corrupt file fails here, by name.
    try:
        img.load()
    except Image.DecompressionBombError as exc:
        img.close()
        raise _fail(path, f"the image is too large to load safely ({exc})") from None
    except Exception as exc:  # noqa: BLE001 - decoders report damage as OSError, struct.error, IndexError, ...
        img.close()
        text = str(exc) or type(exc).__name__
        if "truncat" in text.lower() or isinstance(exc, EOFError):
            raise _fail(path, f"the file is truncated ({text})") from None
        raise _fail(path, f"the file is corrupt or uses an unsupported variant of its format ({text})") from None
    width, height = img.size
    if min(width, height) < 1 or max(width, height) > MAX_ASPECT * min(width, height):
        img.close()
        raise _fail(path, f"the image is {width}x{height} pixels: an aspect ratio beyond 1:{MAX_ASPECT} cannot be "
                          "reconstructed (crop it first)")
    return img


# Photos wider or taller than this ratio are refused: resizing a 1x2000 strip to 518 px wide would allocate
# gigabytes, and no camera makes such a picture.
MAX_ASPECT = 20


def _exif_orientation(img: Image.Image) -> int:
    try:
        value = img.getexif().get(_EXIF_ORIENTATION_TAG, 1)
        return int(value)
    except Exception:  # a damaged EXIF block must not make the photo unreadable
        return 1


def _sixteen_bit_to_l(img: Image.Image) -> Image.Image:
    """16/32-bit integer grey (I;16*, I) -> 8-bit L by scaling 0..65535 onto 0..255 (PIL would clip)."""
    values = np.asarray(img).astype(np.float64)
    scaled = np.clip(np.rint(values / 257.0), 0, 255).astype(np.uint8)
    return Image.fromarray(scaled, mode="L")


def _float_to_l(img: Image.Image) -> Image.Image:
    """32-bit float grey -> 8-bit L. Values within [0, 1] are taken as normalised, anything else as 0..255."""
    values = np.nan_to_num(np.asarray(img).astype(np.float64), nan=0.0, posinf=255.0, neginf=0.0)
    if values.size and values.min() >= 0.0 and values.max() <= 1.0:
        values = values * 255.0
    return Image.fromarray(np.clip(np.rint(values), 0, 255).astype(np.uint8), mode="L")


def _composite_on_white(img: Image.Image) -> Image.Image:
    """Alpha-composite an RGBA image on opaque white, as the official loader does."""
    background = Image.new("RGBA", img.size, (255, 255, 255, 255))
    return Image.alpha_composite(background, img).convert("RGB")


def _to_rgb(img: Image.Image) -> Image.Image:
    mode = img.mode
    if mode == "RGBA":
        return _composite_on_white(img)
    # Other alpha modes, and a PNG tRNS colour key (P, L or RGB with "transparency"), go through RGBA too.
    if mode in ("LA", "La", "RGBa", "PA") or (mode in ("P", "L", "RGB") and "transparency" in img.info):
        return _composite_on_white(img.convert("RGBA"))
    if mode == "RGB":
        return img
    if mode.startswith("I;16") or mode == "I":
        return _sixteen_bit_to_l(img).convert("RGB")
    if mode == "F":
        return _float_to_l(img).convert("RGB")
    # L, 1, P, CMYK, YCbCr, LAB, HSV: Pillow's own conversions are right for these.
    return img.convert("RGB")


def _load_upright(path: str) -> tuple[Image.Image, bool]:
    """Decode `path`, apply EXIF orientation and convert to 8-bit RGB; also say whether EXIF rotated it."""
    img = original = _open_decoded(path)
    frames = int(getattr(original, "n_frames", 1) or 1)
    orientation = _exif_orientation(img)
    rotated = orientation in (2, 3, 4, 5, 6, 7, 8)
    if rotated:
        try:
            img = ImageOps.exif_transpose(img)
        except Exception as exc:
            raise _fail(path, f"cannot apply the EXIF orientation ({exc})") from None
    try:
        rgb = _to_rgb(img)
    except Exception as exc:  # noqa: BLE001 - odd modes raise ValueError, NotImplementedError, ...
        raise _fail(path, f"cannot convert the {img.mode} image to RGB ({exc})") from None
    if rgb is original:
        rgb = original.copy()  # detach from the file so the handle can be closed (multi-frame files keep it)
    original.close()
    rgb.info[FRAMES_INFO] = frames
    return rgb, rotated


# Key under which _load_upright notes how many frames (GIF) or pages (TIFF) the file had.
FRAMES_INFO = "vggt_frames"


def load_image(path: str | os.PathLike) -> Image.Image:
    """The photo as an upright 8-bit RGB PIL image (EXIF orientation applied, transparency on white).

    Raises ImageLoadError naming the file when it is missing, empty, not an image, truncated or corrupt.
    """
    img, _ = _load_upright(os.fspath(path))
    return img


# ---------------------------------------------------------------------------------------------------------
# Resize arithmetic (mirrors the official loader, including its float expression order)


def _round_to_patch(length: float) -> int:
    # Python's round (half to even), like the official code; at least one patch so PIL never gets a 0 size.
    return max(PATCH_SIZE, round(length / PATCH_SIZE) * PATCH_SIZE)


def resized_size(width: int, height: int, mode: str, target_size: int = DEFAULT_TARGET_SIZE) -> tuple[int, int]:
    """(width, height) the photo is resized to before cropping/padding."""
    if mode == "pad" and height > width:
        new_height = target_size
        return _round_to_patch(width * (new_height / height)), new_height
    new_width = target_size
    return new_width, _round_to_patch(height * (new_width / width))


def omega_aspect_crop(width: int, height: int) -> tuple[int, int, int, int]:
    """(left, top, width, height) of the centred window VGGT-Omega keeps so that height/width is in [0.5, 2]."""
    low, high = OMEGA_ASPECT_RANGE
    aspect = height / max(width, 1)
    if aspect < low:
        crop_width = min(width, max(1, int(round(height / low))))
        return max((width - crop_width) // 2, 0), 0, crop_width, height
    if aspect > high:
        crop_height = min(height, max(1, int(round(width * high))))
        return 0, max((height - crop_height) // 2, 0), width, crop_height
    return 0, 0, width, height


def omega_resized_size(width: int, height: int, mode: str, target_size: int = OMEGA_DEFAULT_TARGET_SIZE,
                       patch_size: int = OMEGA_PATCH_SIZE) -> tuple[int, int]:
    """(width, height) VGGT-Omega resizes a photo of (already pre-cropped) size width x height to.

    "balanced": about (target/patch)^2 patches at the photo's aspect; "max_size": the longer side is
    `target_size`. numpy rounding (half to even), at least one patch, as the official loader.
    """
    aspect = height / max(width, 1)
    if mode == "balanced":
        tokens = (target_size // patch_size) ** 2
        w_patches = np.sqrt(tokens / aspect)
        h_patches = tokens / w_patches  # from the unrounded width, as the official code
        return patch_size * max(1, int(np.round(w_patches))), patch_size * max(1, int(np.round(h_patches)))

    def to_patches(value: float) -> int:
        return max(patch_size, int(np.round(float(value) / patch_size)) * patch_size)

    if aspect >= 1.0:
        return to_patches(target_size / aspect), target_size
    return target_size, to_patches(target_size * aspect)


def _check_settings(mode: str, target_size: int, model: str = "vggt") -> None:
    modes, patch = (OMEGA_MODES, OMEGA_PATCH_SIZE) if model == "vggt-omega" else (MODES, PATCH_SIZE)
    if model not in MODEL_FAMILIES:
        raise RequestError(f"unknown model family {model!r}: use {' or '.join(repr(m) for m in MODEL_FAMILIES)}")
    if mode not in modes:
        other = "vggt-omega" if mode in OMEGA_MODES else "vggt" if mode in MODES else None
        hint = f" (that is a {other} mode)" if other else ""
        raise RequestError(f"unknown preprocessing mode {mode!r} for {model}{hint}: use "
                           + " or ".join(repr(m) for m in modes))
    if (isinstance(target_size, bool) or not isinstance(target_size, (int, np.integer)) or target_size < patch
            or target_size % patch):
        raise RequestError(f"target size {target_size!r} must be a positive multiple of {patch} for {model}")


@dataclass
class _Prepared:
    pixels: np.ndarray  # uint8 [h, w, 3] after resize and crop/pad
    size: tuple[int, int]  # upright photo (width, height)
    scale: tuple[float, float]  # photo pixels per resized pixel (sx, sy)
    crop_top: int  # resized rows dropped above the kept window
    pad: tuple[int, int]  # (left, top) white padding added in pad mode
    shown: tuple[int, int]  # (width, height) of the photo content inside `pixels`
    rotated: bool
    frames: int = 1  # frames (GIF) or pages (TIFF) in the file; only the first is used
    photo_offset: tuple[int, int] = (0, 0)  # (left, top) photo pixels cut off before the resize (Omega pre-crop)


def _prepare_one(path: str, mode: str, target_size: int) -> _Prepared:
    img, rotated = _load_upright(path)
    return _prepare_loaded(img, rotated, mode, target_size)


def _prepare_loaded(img: Image.Image, rotated: bool, mode: str, target_size: int) -> _Prepared:
    """Resize and crop/pad an upright RGB image (closed here) to the model input."""
    frames = int(img.info.get(FRAMES_INFO, 1))
    width, height = img.size
    new_width, new_height = resized_size(width, height, mode, target_size)
    pixels = np.asarray(img.resize((new_width, new_height), Image.Resampling.BICUBIC), dtype=np.uint8)
    img.close()

    crop_top = 0
    pad_left = pad_top = 0
    shown = (pixels.shape[1], min(pixels.shape[0], target_size) if mode == "crop" else pixels.shape[0])
    if mode == "crop" and new_height > target_size:
        crop_top = (new_height - target_size) // 2
        pixels = pixels[crop_top : crop_top + target_size]
    elif mode == "pad":
        pad_top = (target_size - pixels.shape[0]) // 2
        pad_left = (target_size - pixels.shape[1]) // 2
        pixels = _pad_white(pixels, target_size, target_size, pad_left, pad_top)
    return _Prepared(
        pixels=pixels,
        size=(width, height),
        scale=(width / new_width, height / new_height),
        crop_top=crop_top,
        pad=(pad_left, pad_top),
        shown=shown,
        rotated=rotated,
        frames=frames,
    )


def _prepare_one_omega(path: str, mode: str, target_size: int) -> _Prepared:
    img, rotated = _load_upright(path)
    return _prepare_loaded_omega(img, rotated, mode, target_size)


def _prepare_loaded_omega(img: Image.Image, rotated: bool, mode: str, target_size: int) -> _Prepared:
    """The VGGT-Omega loader on an upright RGB image (closed here): aspect crop, then resize to patches."""
    frames = int(img.info.get(FRAMES_INFO, 1))
    width, height = img.size
    left, top, crop_w, crop_h = omega_aspect_crop(width, height)
    if (crop_w, crop_h) != (width, height):
        cropped = img.crop((left, top, left + crop_w, top + crop_h))
        img.close()
        img = cropped
    new_width, new_height = omega_resized_size(crop_w, crop_h, mode, target_size)
    pixels = np.asarray(img.resize((new_width, new_height), Image.Resampling.BICUBIC), dtype=np.uint8)
    img.close()
    return _Prepared(
        pixels=pixels,
        size=(width, height),
        scale=(crop_w / new_width, crop_h / new_height),
        crop_top=0,
        pad=(0, 0),
        shown=(new_width, new_height),
        rotated=rotated,
        frames=frames,
        photo_offset=(left, top),
    )


def _pad_white(pixels: np.ndarray, height: int, width: int, left: int, top: int) -> np.ndarray:
    out = np.full((height, width, 3), 255, dtype=np.uint8)
    out[top : top + pixels.shape[0], left : left + pixels.shape[1]] = pixels
    return out


def _placement(item: _Prepared, batch_left: int, batch_top: int) -> tuple[tuple, tuple]:
    """(pixel_map row, valid_box row) of a prepared image placed at (batch_left, batch_top) in the batch."""
    # Resized-image coordinate of a model pixel: x_r = x_m - left_padding, y_r = y_m - top_padding + crop.
    sx, sy = item.scale
    left = item.pad[0] + batch_left
    top = item.pad[1] + batch_top
    shown_w, shown_h = item.shown
    # Then the Omega pre-crop: photo = offset + resized-image coordinate * scale.
    off_x, off_y = item.photo_offset
    return ((sx, sy, off_x - sx * left + 0.0, off_y + sy * (item.crop_top - top) + 0.0),  # +0.0: no -0.0
            (left, top, left + shown_w, top + shown_h))


@dataclass
class PreparedFrame:
    """One video frame at the model input size: uint8 pixels [h,w,3] and where they come from."""

    pixels: np.ndarray
    original_size: tuple[int, int]  # (width, height) of the upright frame
    pixel_map: tuple[float, float, float, float]
    valid_box: tuple[int, int, int, int]


def _settings(mode: str | None, target_size: int | None, model: str) -> tuple[str, int]:
    """The loader's mode and size for `model`, each None taking the family's default, checked."""
    omega = model == "vggt-omega"
    if mode is None:
        mode = OMEGA_MODES[0] if omega else MODES[0]
    if target_size is None:
        target_size = OMEGA_DEFAULT_TARGET_SIZE if omega else DEFAULT_TARGET_SIZE
    _check_settings(mode, target_size, model)
    return mode, int(target_size)


def preprocess_frame(img: Image.Image, mode: str | None = None, target_size: int | None = None,
                     model: str = "vggt") -> PreparedFrame:
    """An upright RGB frame (e.g. decoded video; closed here) resized/cropped/padded exactly as a photo is
    for `model`'s loader, right away, so a shot never holds its frames at full resolution. Frames of one shot
    share one size, so no batch padding is needed between them. `mode`, `target_size` None: the family's."""
    mode, target_size = _settings(mode, target_size, model)
    rgb = img.convert("RGB") if img.mode != "RGB" else img
    prepare = _prepare_loaded_omega if model == "vggt-omega" else _prepare_loaded
    item = prepare(rgb, False, mode, target_size)
    pixel_map, valid_box = _placement(item, 0, 0)
    return PreparedFrame(item.pixels, item.size, pixel_map, valid_box)


def preprocess_images(
    paths: Sequence[str | os.PathLike],
    mode: str | None = None,
    target_size: int | None = None,
    progress: Callable[[int, int], None] | None = None,
    model: str = "vggt",
) -> PreprocessResult:
    """Load, orient, resize and crop/pad `paths` into one batch, as the official loader of `model` does.

    model "vggt" (default mode "crop", 518): mode "crop": width -> target_size, height scaled and rounded
    to a multiple of 14, centre-cropped to target_size when taller. mode "pad": longer side ->
    target_size, padded white to a square.
    model "vggt-omega" (default mode "balanced", 512; 256 for the text checkpoint): photos with
    height/width outside [0.5, 2] are first centre-cropped into it; "balanced" keeps about
    (target_size/16)^2 patches at the photo's aspect, "max_size" makes the longer side target_size.
    Either way, images of different shapes are then padded white (centred, floor/ceil) to the largest
    height and width. `progress(done, total)` is called after each image (it may raise to cancel).
    """
    omega = model == "vggt-omega"
    mode, target_size = _settings(mode, target_size, model)
    path_list = [os.fspath(p) for p in paths]
    if not path_list:
        raise ImageLoadError("no images were given to preprocess")

    prepared: list[_Prepared] = []
    for index, path in enumerate(path_list):
        prepared.append(_prepare_one_omega(path, mode, target_size) if omega else _prepare_one(path, mode, target_size))
        if progress is not None:
            progress(index + 1, len(path_list))

    batch_height = max(p.pixels.shape[0] for p in prepared)
    batch_width = max(p.pixels.shape[1] for p in prepared)
    n = len(prepared)
    batch = np.empty((n, batch_height, batch_width, 3), dtype=np.uint8)
    pixel_map = np.zeros((n, 4), dtype=np.float64)
    valid_box = np.zeros((n, 4), dtype=np.int32)
    notes: list[str] = []
    if len({p.pixels.shape for p in prepared}) > 1:
        notes.append(f"images had different shapes; padded white to {batch_width}x{batch_height}")
    for path, item in zip(path_list, prepared):
        if item.frames > 1:
            notes.append(f"{path}: has {item.frames} frames or pages; only the first is used")

    for i, item in enumerate(prepared):
        h, w = item.pixels.shape[:2]
        # Batch padding centres each image on the largest height/width (floor on the top/left).
        batch_left = (batch_width - w) // 2
        batch_top = (batch_height - h) // 2
        batch[i] = _pad_white(item.pixels, batch_height, batch_width, batch_left, batch_top)

        pixel_map[i], valid_box[i] = _placement(item, batch_left, batch_top)
        item.pixels = np.empty((0, 0, 3), dtype=np.uint8)  # free as we go

    # Same arithmetic as ToTensor: uint8 -> float32, divided by 255 in float32.
    images_np = batch.transpose(0, 3, 1, 2).astype(np.float32, order="C")
    del batch
    images_np /= np.float32(255.0)
    return PreprocessResult(
        images_np=images_np,
        paths=path_list,
        original_sizes=np.array([p.size for p in prepared], dtype=np.int32).reshape(n, 2),
        pixel_map=pixel_map,
        valid_box=valid_box,
        rotated=np.array([p.rotated for p in prepared], dtype=bool),
        model_size=(batch_width, batch_height),
        mode=mode,
        target_size=target_size,
        notes=notes,
        model=model,
    )
