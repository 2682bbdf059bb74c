"""Turn the user's inputs (photo files and folders) into an ordered list of image paths.

Standard library only: Blender's own Python (which has no Pillow) calls this to validate a selection.
"""

from __future__ import annotations

import os
import re
from typing import Iterable

from ..errors import ImageLoadError

# Extensions Pillow decodes out of the box (compared lower-case). Deliberately no RAW, HEIC or EXR:
# Pillow cannot read them without plug-ins, so they are reported rather than failing later.
IMAGE_EXTENSIONS = frozenset(
    {
        ".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".apng", ".tif", ".tiff", ".bmp", ".dib",
        ".webp", ".gif", ".tga", ".ppm", ".pgm", ".pbm", ".pnm", ".qoi", ".jp2", ".j2k", ".avif",
    }
)  # fmt: skip

# Photo formats people will try that Pillow cannot read: give a specific hint instead of "not an image".
_UNSUPPORTED_PHOTO_HINTS = {
    ".heic": "HEIC/HEIF is not supported; export the photos as JPEG",
    ".heif": "HEIC/HEIF is not supported; export the photos as JPEG",
    ".exr": "OpenEXR is not supported; convert to PNG or JPEG",
    ".dng": "RAW files are not supported; export the photos as JPEG",
    ".cr2": "RAW files are not supported; export the photos as JPEG",
    ".cr3": "RAW files are not supported; export the photos as JPEG",
    ".nef": "RAW files are not supported; export the photos as JPEG",
    ".arw": "RAW files are not supported; export the photos as JPEG",
    ".raf": "RAW files are not supported; export the photos as JPEG",
    ".orf": "RAW files are not supported; export the photos as JPEG",
    ".rw2": "RAW files are not supported; export the photos as JPEG",
}

_DIGITS = re.compile(r"(\d+)")


def is_image_file(path: str) -> bool:
    """True if the name has an image extension Pillow reads (case-insensitive); the content is not checked."""
    return os.path.splitext(path)[1].lower() in IMAGE_EXTENSIONS


def natural_key(name: str) -> tuple:
    """Sort key that orders embedded numbers by value: frame_2 before frame_10, case-insensitively."""
    parts = []
    for chunk in _DIGITS.split(name):
        if not chunk:
            continue
        if chunk.isdigit():
            parts.append((0, int(chunk), ""))
        else:
            parts.append((1, 0, chunk.casefold()))
    # Ties (e.g. "a01" vs "a1", "A" vs "a") fall back to the raw name so the order is total and stable.
    return (tuple(parts), name)


def _skip_reason(name: str) -> str:
    ext = os.path.splitext(name)[1].lower()
    return _UNSUPPORTED_PHOTO_HINTS.get(ext, "not an image file")


def _folder_images(folder: str, warnings: list[str]) -> list[str]:
    try:
        names = os.listdir(folder)
    except OSError as exc:
        raise ImageLoadError(f"{folder}: cannot read the folder ({exc.strerror or exc})", file=folder) from None
    found = []
    for name in sorted(names, key=natural_key):
        if name.startswith("."):
            continue  # hidden files (.DS_Store, editor swap files) are never photos; no need to warn
        full = os.path.join(folder, name)
        if os.path.isdir(full):
            warnings.append(f"skipped {name}: a folder (folders are not searched recursively)")
        elif is_image_file(name):
            found.append(full)
        else:
            warnings.append(f"skipped {name}: {_skip_reason(name)}")
    return found


def collect_images(inputs: Iterable[str | os.PathLike]) -> tuple[list[str], list[str]]:
    """Expand files and folders into absolute, symlink-resolved image paths, plus warnings about what was skipped.

    Folders are read (not recursively) in natural order; inputs keep the order given. A named file that does
    not exist raises ImageLoadError; a named file without an image extension, or a folder named like a photo
    (`x.jpg/`), is skipped with a warning, like one found in a folder. The same photo named twice is kept once. No images at all raises ImageLoadError.
    """
    inputs = [os.fspath(item) for item in inputs]
    paths: list[str] = []
    warnings: list[str] = []
    seen: set[str] = set()

    for item in inputs:
        full = os.path.abspath(os.path.expanduser(item))
        if os.path.isdir(full) and is_image_file(full):
            # A folder named like a photo ("x.jpg") among chosen photos is a mistake, not a photo set: say so.
            warnings.append(f"skipped {os.path.basename(full)}: a folder, not a photo")
            continue
        if os.path.isdir(full):
            candidates = _folder_images(full, warnings)
        elif os.path.isfile(full):
            if not is_image_file(full):
                warnings.append(f"skipped {os.path.basename(full)}: {_skip_reason(full)}")
                continue
            candidates = [full]
        elif os.path.exists(full):
            raise ImageLoadError(f"{item}: not a regular file or folder", file=item)
        else:
            raise ImageLoadError(f"{item}: the file does not exist", file=item)
        for path in candidates:
            key = os.path.normcase(os.path.realpath(path))
            if key in seen:
                warnings.append(f"skipped {os.path.basename(path)}: listed more than once")
                continue
            seen.add(key)
            paths.append(os.path.realpath(path))  # the one normalisation: what the file stores as image_paths

    if not paths:
        where = ", ".join(inputs) if inputs else "the selection (nothing was given)"
        raise ImageLoadError(f"no images were found in {where}", file=inputs[0] if len(inputs) == 1 else None)
    return paths, warnings
