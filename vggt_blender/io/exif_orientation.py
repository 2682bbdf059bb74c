"""EXIF orientation of a photo, read with the standard library only (Blender's Python has no Pillow).

Looks at the first bytes of JPEG (APP1 "Exif"), TIFF (IFD0), PNG (eXIf chunk) and WebP (EXIF chunk) files for
tag 0x0112. Orientations 5-8 mean the stored pixels are turned a quarter: the upright photo's width and height
are swapped. Anything unreadable counts as 1 (as stored): this only decides what a panel shows.
"""

from __future__ import annotations

import os
import struct

_ORIENTATION_TAG = 0x0112
_READ_LIMIT = 1 << 20  # EXIF sits in the first 64 KB of a JPEG; a TIFF's IFD0 is usually near the start


def _orientation_from_tiff(data: bytes) -> int:
    """Orientation tag of IFD0 in a TIFF structure (the body of an EXIF block), 1 when absent."""
    if len(data) < 8 or data[:2] not in (b"II", b"MM"):
        return 1
    endian = "<" if data[:2] == b"II" else ">"
    if struct.unpack(endian + "H", data[2:4])[0] != 42:
        return 1
    offset = struct.unpack(endian + "I", data[4:8])[0]
    if offset + 2 > len(data):
        return 1
    count = struct.unpack(endian + "H", data[offset:offset + 2])[0]
    for i in range(count):
        entry = offset + 2 + 12 * i
        if entry + 12 > len(data):
            break
        tag, kind, n = struct.unpack(endian + "HHI", data[entry:entry + 8])
        if tag == _ORIENTATION_TAG and kind == 3 and n >= 1:  # SHORT, stored in the entry itself
            value = struct.unpack(endian + "H", data[entry + 8:entry + 10])[0]
            return value if 1 <= value <= 8 else 1
    return 1


def _jpeg_exif(data: bytes) -> bytes:
    pos = 2
    while pos + 4 <= len(data):
        if data[pos] != 0xFF:
            return b""
        marker = data[pos + 1]
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:  # no length field
            pos += 2
            continue
        if marker in (0xDA, 0xD9):  # start of scan / end: metadata is over
            return b""
        length = struct.unpack(">H", data[pos + 2:pos + 4])[0]
        body = data[pos + 4:pos + 2 + length]
        if marker == 0xE1 and body.startswith(b"Exif\x00\x00"):
            return body[6:]
        pos += 2 + length
    return b""


def _png_exif(data: bytes) -> bytes:
    pos = 8
    while pos + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        if kind == b"eXIf":
            return data[pos + 8:pos + 8 + length]
        if kind in (b"IDAT", b"IEND"):
            return b""
        pos += 12 + length
    return b""


def _webp_exif(data: bytes) -> bytes:
    pos = 12
    while pos + 8 <= len(data):
        kind, length = struct.unpack("<4sI", data[pos:pos + 8])
        if kind == b"EXIF":
            body = data[pos + 8:pos + 8 + length]
            return body[6:] if body.startswith(b"Exif\x00\x00") else body
        pos += 8 + length + (length & 1)
    return b""


def exif_orientation(path: str | os.PathLike) -> int:
    """The EXIF orientation (1-8) of the photo at `path`; 1 when it has none or cannot be read."""
    try:
        with open(path, "rb") as f:
            data = f.read(_READ_LIMIT)
    except OSError:
        return 1
    if data[:2] == b"\xff\xd8":
        block = _jpeg_exif(data)
    elif data[:4] in (b"II*\x00", b"MM\x00*"):
        block = data
    elif data[:8] == b"\x89PNG\r\n\x1a\n":
        block = _png_exif(data)
    elif data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        block = _webp_exif(data)
    else:
        return 1
    try:
        return _orientation_from_tiff(block)
    except struct.error:
        return 1


def upright_size(width: int, height: int, orientation: int) -> tuple[int, int]:
    """Size of the photo as shown upright: orientations 5-8 swap width and height."""
    return (height, width) if orientation in (5, 6, 7, 8) else (width, height)
