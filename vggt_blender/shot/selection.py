"""Which frames of a shot to reconstruct, and the shot's frame rate as Blender wants it (stdlib only).

Frame numbers are 0-based, in the source's own numbering: for a video the index of the frame in
presentation order (what the timestamps say, so variable frame rate and B-frames do not shift it); for an
image sequence the file number minus the first file's number (gaps stay gaps).
"""

from __future__ import annotations

import glob
import os
import re
from dataclasses import dataclass
from fractions import Fraction
from typing import Sequence

from ..errors import ImageLoadError, RequestError
from ..options import FRAME_SELECTION_FIELDS

# File endings taken as videos (anything PyAV opens would do; these decide "video or photos?" cheaply).
VIDEO_EXTENSIONS = (".mp4", ".mov", ".m4v", ".mkv", ".avi", ".webm", ".mxf", ".mts", ".m2ts", ".ts", ".mpg",
                    ".mpeg", ".wmv", ".flv", ".y4m", ".gif")
# Image sequences: Pillow reads the first four, PyAV's FFmpeg reads EXR.
SEQUENCE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".exr")


class ShotError(ImageLoadError):
    """A video or image sequence that cannot be read (one line naming the file)."""

    code = "bad_video"


def shot_failure(path: str, problem: str) -> ShotError:
    return ShotError(f"{path}: {problem}", file=path)


@dataclass(frozen=True)
class FrameSelection:
    """`every`: keep every N-th frame counted from `start`; `end` inclusive (None = the last frame);
    `max_frames`: at most M frames, spread evenly over the strided selection (first and last kept)."""

    every: int = 1
    start: int = 0
    end: int | None = None
    max_frames: int | None = None

    def __post_init__(self) -> None:
        if int(self.every) < 1:
            raise RequestError(f"--every must be at least 1, got {self.every}")
        if int(self.start) < 0:
            raise RequestError(f"--start must be 0 or more (frame numbers are 0-based), got {self.start}")
        if self.end is not None and int(self.end) < int(self.start):
            raise RequestError(f"--end ({self.end}) is before --start ({self.start})")
        if self.max_frames is not None and int(self.max_frames) < 1:
            raise RequestError(f"--max-frames must be at least 1, got {self.max_frames}")

    @classmethod
    def from_request(cls, data: dict) -> "FrameSelection":
        """From a CLI/worker request's `every`, `start`, `end`, `max_frames` (missing or None = default)."""
        def get(key: str, default):
            value = data.get(key)
            return default if value is None else int(value)
        return cls(every=get("every", 1), start=get("start", 0), end=get("end", None),
                   max_frames=get("max_frames", None))

    def to_request(self) -> dict:
        return {"every": self.every, "start": self.start, "end": self.end, "max_frames": self.max_frames}

    def describe(self) -> str:
        end = "last" if self.end is None else str(self.end)
        text = f"every {self.every} from {self.start} to {end}"
        return text + (f", at most {self.max_frames}" if self.max_frames else "")


def select_frame_numbers(available: Sequence[int], selection: FrameSelection, source: str = "") -> list[int]:
    """The frame numbers to decode, ascending, from the numbers the source has (`available`, ascending)."""
    wanted_end = selection.end
    picked = [n for n in available if n >= selection.start and (wanted_end is None or n <= wanted_end)
              and (n - selection.start) % selection.every == 0]
    if not picked:
        last = available[-1] if available else None
        where = f"{source}: " if source else ""
        raise RequestError(f"{where}no frames selected (the shot has frames 0..{last}; asked for "
                           f"{selection.describe()})", file=source or None)
    limit = selection.max_frames
    if limit is not None and len(picked) > limit:
        if limit == 1:
            return [picked[0]]
        # Evenly spread, first and last kept: the whole range stays covered.
        step = (len(picked) - 1) / (limit - 1)
        picked = [picked[round(i * step)] for i in range(limit)]
    return picked


def fps_fraction(value: float | Fraction | str) -> Fraction:
    """An exact frame rate: NTSC rates (23.976, 29.97, 59.94...) become n*1000/1001, others limited to
    denominators up to 1001."""
    if isinstance(value, Fraction):
        return value
    rate = Fraction(str(value)) if isinstance(value, str) else Fraction(float(value))
    for base in (24, 30, 48, 60, 120, 240):
        ntsc = Fraction(base * 1000, 1001)
        if abs(float(rate) - float(ntsc)) < 5e-4:
            return ntsc
    return rate.limit_denominator(1001)


def blender_fps(rate: float | Fraction) -> tuple[int, float]:
    """(render.fps, render.fps_base) with fps / fps_base == rate: 24000/1001 -> (24, 1.001)."""
    rate = fps_fraction(rate)
    if rate <= 0:
        raise ValueError(f"frame rate must be positive, got {rate}")
    fps = max(1, round(float(rate)))
    return min(fps, 32767), float(Fraction(fps) / rate) if fps <= 32767 else float(Fraction(32767) / rate)


def is_video_path(path: str | os.PathLike) -> bool:
    return os.path.splitext(os.fspath(path))[1].lower() in VIDEO_EXTENSIONS


def is_sequence_pattern(path: str | os.PathLike) -> bool:
    """`shot.%04d.png` or `shot.####.png`: a numbered image sequence named by a pattern."""
    text = os.path.basename(os.fspath(path))
    return ("#" in text or "%" in text) and os.path.splitext(text)[1].lower() in SEQUENCE_EXTENSIONS


def shot_input_kind(inputs: Sequence[str | os.PathLike], options: dict) -> str | None:
    """"video", "sequence", or None for photos: what a request's inputs are, by the one rule the engine and
    the remote client share. A folder is a photo set unless a shot is asked for (`sequence`, or any frame
    option in `options`); frame options with photos are a RequestError."""
    asked = bool(options.get("sequence")) or any(options.get(k) is not None for k in FRAME_SELECTION_FIELDS)
    if len(inputs) == 1:
        path = os.fspath(inputs[0])
        if is_video_path(path):
            return "video"
        if is_sequence_pattern(path) or (asked and os.path.isdir(path)):
            return "sequence"
    if asked:
        raise RequestError("--every/--start/--end/--max-frames/--sequence need one video file or one image "
                           "sequence (a folder or a pattern such as shot.%04d.png)")
    return None


def is_shot_input(inputs: Sequence[str | os.PathLike]) -> bool:
    """True when the inputs name one shot (a video file or a sequence pattern), not photos."""
    return len(inputs) == 1 and (is_video_path(inputs[0]) or is_sequence_pattern(inputs[0]))


def sequence_pattern_for(path: str | os.PathLike) -> str:
    """`/plates/sh010.1001.exr` -> `/plates/sh010.####.exr` (the file's last number as a pattern); a path
    that is a video, a folder or already a pattern is returned as it is."""
    text = os.fspath(path)
    folder, name = os.path.split(text)
    if is_video_path(text) or is_sequence_pattern(text) or not name:
        return text
    stem, ext = os.path.splitext(name)
    match = re.search(r"(\d+)(\D*)$", stem)
    if match is None or ext.lower() not in SEQUENCE_EXTENSIONS:
        return text
    return os.path.join(folder, stem[:match.start(1)] + "#" * len(match.group(1)) + match.group(2) + ext)


# ---- the files of an image sequence (stdlib: a remote client picks the frames it uploads with the same rule)

_TRAILING_NUMBER = re.compile(r"^(.*?)(\d+)$")


def _pattern_regex(name: str) -> tuple[re.Pattern, str]:
    """`shot.%04d.png` / `shot.####.png` -> a regex capturing the number, and a glob for candidates."""
    printf = re.search(r"%0?(\d*)d", name)
    if printf:
        head, tail = name[:printf.start()], name[printf.end():]
        width = int(printf.group(1) or 0)
    else:
        hashes = re.search(r"#+", name)
        if not hashes:
            raise ValueError(name)
        head, tail = name[:hashes.start()], name[hashes.end():]
        width = len(hashes.group(0)) if len(hashes.group(0)) > 1 else 0
    digits = r"(\d{%d,})" % width if width else r"(\d+)"
    return re.compile("^" + re.escape(head) + digits + re.escape(tail) + "$"), glob.escape(head) + "*" + \
        glob.escape(tail)


def _numbered_files(folder: str, regex: re.Pattern | None, pattern: str) -> list[tuple[int, str]]:
    found: list[tuple[int, str]] = []
    for candidate in glob.glob(os.path.join(glob.escape(folder), pattern)):
        name = os.path.basename(candidate)
        if regex is not None:
            match = regex.match(name)
            if match:
                found.append((int(match.group(1)), candidate))
            continue
        stem, ext = os.path.splitext(name)
        match = _TRAILING_NUMBER.match(stem)
        if ext.lower() in SEQUENCE_EXTENSIONS and match:
            found.append((int(match.group(2)), candidate))
    return sorted(found)


def sequence_files(path: str | os.PathLike) -> list[tuple[int, str]]:
    """(number in the file name, file) of every frame of an image sequence, ascending: a folder of numbered
    files (one name prefix) or a `%04d`/`####` pattern. ShotError names the problem."""
    path = os.fspath(path)
    if os.path.isdir(path):
        files = _numbered_files(path, None, "*")
        prefixes = {(_TRAILING_NUMBER.match(os.path.splitext(os.path.basename(f))[0]).group(1),
                     os.path.splitext(f)[1].lower()) for _, f in files}
        if len(prefixes) > 1:
            names = ", ".join(sorted(p + "#" + e for p, e in prefixes)[:4])
            raise shot_failure(path, f"holds more than one numbered sequence ({names}): name one with a pattern "
                               "such as shot.%04d.png")
    elif is_sequence_pattern(path):
        folder = os.path.dirname(path) or "."
        regex, pattern = _pattern_regex(os.path.basename(path))
        files = _numbered_files(folder, regex, pattern)
    else:
        raise shot_failure(path, "is not an image sequence (give a folder of numbered images or a pattern such "
                           "as shot.%04d.png or shot.####.png)")
    if not files:
        raise shot_failure(path, "no numbered image files found (supported: " + ", ".join(SEQUENCE_EXTENSIONS)
                           + ")")
    numbers = [n for n, _ in files]
    if len(set(numbers)) != len(numbers):
        raise shot_failure(path, "two files carry the same frame number")
    return files
