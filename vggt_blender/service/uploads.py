"""Receive a job upload (multipart/form-data) straight to files, checking the limits while the bytes arrive.

Parts: repeated `photos` (one file each: photos, or the chosen frames of an image sequence), or one `video`;
one `options` (JSON text). Every file is written under a safe, unique name inside the upload's own folder
(names.py), whatever name the client sent; the body is abandoned, and the folder removed, as soon as it passes
the size or photo-count limit.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, AsyncIterator

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header

from ..io.photo_paths import is_image_file
from ..shot.selection import SEQUENCE_EXTENSIONS, VIDEO_EXTENSIONS
from .job_options import MAX_OPTIONS_BYTES
from .names import UniqueNames, base_name


class ApiError(Exception):
    """An error answer: HTTP status, a code (the worker's codes where they apply) and one readable line."""

    def __init__(self, status: int, code: str, message: str, file: str | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.file = file
        self.headers = headers or {}

    def body(self) -> dict:
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.file is not None:
            error["file"] = self.file
        return {"error": error}


@dataclass
class Upload:
    folder: Path  # the upload's folder; photos are in folder/input
    photos: list[str] = field(default_factory=list)  # names as sent (base names), in upload order
    stored: list[str] = field(default_factory=list)  # the safe names they were saved under
    options: bytes | None = None
    video: str | None = None  # the name the video was sent under
    video_stored: str | None = None  # the safe name it was saved under (in folder/input)


class _Parts:
    """python-multipart callbacks that route each part to its file or buffer."""

    def __init__(self, upload: Upload, max_photos: int) -> None:
        self.upload = upload
        self.max_photos = max_photos
        self.names = UniqueNames()
        self.headers: dict[bytes, bytes] = {}
        self._field = b""
        self._value = b""
        self._file: IO[bytes] | None = None
        self._buffer: bytearray | None = None
        self.ended = False

    def callbacks(self) -> dict:
        return {"on_part_begin": self.part_begin, "on_header_field": self.header_field,
                "on_header_value": self.header_value, "on_header_end": self.header_end,
                "on_headers_finished": self.headers_finished, "on_part_data": self.part_data,
                "on_part_end": self.part_end, "on_end": self.end}

    def part_begin(self) -> None:
        self.headers = {}
        self._field = self._value = b""

    def header_field(self, data: bytes, start: int, end: int) -> None:
        self._field += data[start:end]

    def header_value(self, data: bytes, start: int, end: int) -> None:
        self._value += data[start:end]

    def header_end(self) -> None:
        self.headers[self._field.strip().lower()] = self._value.strip()
        self._field = self._value = b""

    def headers_finished(self) -> None:
        _, params = parse_options_header(self.headers.get(b"content-disposition", b""))
        name = params.get(b"name", b"").decode("utf-8", "replace")
        sent = base_name(params.get(b"filename", b"").decode("utf-8", "replace"))
        upload = self.upload
        if name == "photos":
            if upload.video is not None:
                raise ApiError(422, "bad_request", "send photos or one video, not both")
            if len(upload.photos) >= self.max_photos:
                raise ApiError(413, "too_many_photos", f"more than {self.max_photos} photos in one job (the "
                                                       "server's --max-photos)")
            label = sent or f"photo {len(upload.photos) + 1}"
            if not (is_image_file(sent) or sent.lower().endswith(SEQUENCE_EXTENSIONS)):  # EXR: sequence frames
                raise ApiError(400, "bad_image", f"{label}: not an image file name (JPEG, PNG, TIFF, WebP...)",
                               file=label)
            stored = self.names.take(sent)
            upload.photos.append(sent)
            upload.stored.append(stored)
            self._file = open(upload.folder / "input" / stored, "xb")  # new, unique: never an existing file
        elif name == "video":
            if upload.video is not None or upload.photos:
                raise ApiError(422, "bad_request", "send photos or one video, not both")
            label = sent or "video"
            if not sent.lower().endswith(VIDEO_EXTENSIONS):
                raise ApiError(400, "bad_video", f"{label}: not a video file name ("
                               + ", ".join(VIDEO_EXTENSIONS[:4]) + "...)", file=label)
            upload.video = sent
            upload.video_stored = self.names.take(sent, "video")
            self._buffer = None
            self._file = open(upload.folder / "input" / upload.video_stored, "xb")
        elif name == "options":
            if upload.options is not None:
                raise ApiError(422, "bad_request", "more than one options part")
            self._buffer = bytearray()
        else:
            raise ApiError(422, "bad_request", f"unknown part {name!r}: send 'photos' (repeated) or 'video', "
                                               "and 'options'")

    def part_data(self, data: bytes, start: int, end: int) -> None:
        if self._file is not None:
            self._file.write(data[start:end])
        elif self._buffer is not None:
            self._buffer += data[start:end]
            if len(self._buffer) > MAX_OPTIONS_BYTES:
                raise ApiError(413, "too_large", f"the options part is larger than {MAX_OPTIONS_BYTES} bytes")

    def part_end(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        if self._buffer is not None:
            self.upload.options = bytes(self._buffer)
            self._buffer = None

    def end(self) -> None:
        self.ended = True

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


async def receive(content_type: str | None, content_length: str | None, stream: AsyncIterator[bytes],
                  folder: Path, max_bytes: int, max_photos: int) -> Upload:
    """Read the body into `folder`; ApiError for a malformed body or past a limit (the caller removes the
    folder on any error)."""
    kind, params = parse_options_header(content_type or "")
    boundary = params.get(b"boundary")
    if kind != b"multipart/form-data" or not boundary:
        raise ApiError(422, "bad_request", "send the job as multipart/form-data (photos parts and an options part)")
    too_large = ApiError(413, "too_large", f"the upload is larger than {max_bytes / 2**20:g} MB (the server's "
                                           "--max-upload-mb)")
    if content_length is not None:
        try:
            declared = int(content_length)
        except ValueError:
            raise ApiError(422, "bad_request", "the Content-Length header is not a number") from None
        if declared > max_bytes:
            raise too_large  # refused before a byte of the body is read
    upload = Upload(folder)
    parts = _Parts(upload, max_photos)
    parser = MultipartParser(boundary, parts.callbacks())
    total = 0
    try:
        async for chunk in stream:
            total += len(chunk)
            if total > max_bytes:
                raise too_large
            try:
                parser.write(chunk)
            except MultipartParseError as exc:
                raise ApiError(422, "bad_request", f"malformed multipart body: {exc}") from None
        if not parts.ended:
            raise ApiError(422, "bad_request", "the multipart body ends before its closing boundary")
    finally:
        parts.close()
    if not upload.photos and upload.video is None:
        raise ApiError(422, "bad_request", "the upload holds no photos: send one 'photos' part per photo")
    return upload


def verify_photos(upload: Upload, sequence: bool = False) -> None:
    """Open every photo's header (and check PNG chunks) so that a broken file is refused at once, naming the
    file as it was sent; a fault only a full decode finds fails the job later, named the same way. A video,
    and EXR frames (Pillow has no reader), are left to the worker, which names them the same way."""
    for sent in upload.photos:
        if not sequence and not is_image_file(sent):
            raise ApiError(400, "bad_image", f"{sent}: not an image file name (JPEG, PNG, TIFF, WebP...)",
                           file=sent)
    if upload.video is not None and not (upload.folder / "input" / str(upload.video_stored)).stat().st_size:
        raise ApiError(400, "bad_video", f"{upload.video}: the file is empty (0 bytes)", file=upload.video)
    try:
        from PIL import Image, UnidentifiedImageError
    except ImportError:  # a server without Pillow leaves all checks to the worker
        return
    for sent, stored in zip(upload.photos, upload.stored):
        if not is_image_file(sent):
            continue
        path = upload.folder / "input" / stored
        try:
            with Image.open(path) as image:
                image.verify()
        except UnidentifiedImageError:
            raise ApiError(400, "bad_image", f"{sent}: not a readable image", file=sent) from None
        except Exception as exc:  # noqa: BLE001 - any decoder complaint is the photo's fault
            raise ApiError(400, "bad_image", f"{sent}: a damaged image ({exc})", file=sent) from None
