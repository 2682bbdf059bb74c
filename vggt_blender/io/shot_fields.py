"""Optional keys a reconstruction file has when it came from a shot (video or image sequence); numpy only.

They travel in `Reconstruction.extra` (schema v1 keeps unknown keys), so photo sets and older files load as
before. `check_shot_fields` gives a file with malformed shot keys one clear line.

  frame_numbers       int64 [N]   source frame of each view (0-based, the source's own numbering)
  fps                 float64 []  frames per second of the source
  fps_fraction        int64 [2]   the exact rate as numerator, denominator (24000/1001 for 23.976)
  source_video        str []      the video file, or the image sequence's folder or pattern
  source_kind         str []      "video" or "sequence"
  source_size         int32 [2]   displayed width, height of the source frames (rotation applied)
  source_frame_count  int64 []    frames in the whole source
  source_first_number int64 []    image sequences: the number in the first file's name (0 for videos)
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import ReconstructionFileError

SHOT_FIELDS: dict[str, tuple[str, tuple]] = {
    "frame_numbers": ("int64", ("N",)),
    "fps": ("float64", ()),
    "fps_fraction": ("int64", (2,)),
    "source_video": ("U", ()),
    "source_kind": ("U", ()),
    "source_size": ("int32", (2,)),
    "source_frame_count": ("int64", ()),
    "source_first_number": ("int64", ()),
}

# Shots of this many views and more are written compressed: colours and smooth depth shrink, and the writing
# time stays small next to the inference of that many frames.
COMPRESS_FROM_FRAMES = 100


def is_shot(extra: dict[str, Any]) -> bool:
    """True for a reconstruction of a video or an image sequence (it carries frame numbers)."""
    return "frame_numbers" in extra


def long_shot(extra: dict[str, Any], count: int) -> bool:
    """A shot long enough to be written compressed."""
    return is_shot(extra) and count >= COMPRESS_FROM_FRAMES


@dataclass
class ShotFields:
    frame_numbers: np.ndarray
    fps: float
    fps_fraction: tuple[int, int]
    source_video: str
    source_kind: str
    source_size: tuple[int, int]
    source_frame_count: int
    source_first_number: int = 0


def shot_view_names(source_name: str, frame_numbers: Any) -> list[str]:
    """Each view's name: the source's file name without its extension and frame pattern, and the frame number
    (`plate.####.exr`, frame 12 -> `plate_00012`). `source_name` is a base name, without folders."""
    stem = source_name.rsplit(".", 1)[0] if "." in source_name else source_name
    stem = re.sub(r"%0?\d*d|#+", "", stem).rstrip("._- ") or "shot"
    return [f"{stem}_{int(n):05d}" for n in frame_numbers]


def shot_extra(frame_numbers: Any, fps_numerator: int, fps_denominator: int, source_video: str,
               source_kind: str, source_size: tuple[int, int], source_frame_count: int,
               source_first_number: int = 0) -> dict[str, np.ndarray]:
    """The arrays to put in `Reconstruction.extra` for a shot."""
    return {
        "frame_numbers": np.asarray(frame_numbers, dtype=np.int64).reshape(-1),
        "fps": np.array(fps_numerator / fps_denominator, dtype=np.float64),
        "fps_fraction": np.array([fps_numerator, fps_denominator], dtype=np.int64),
        "source_video": np.array(str(source_video)),
        "source_kind": np.array(str(source_kind)),
        "source_size": np.asarray(source_size, dtype=np.int32).reshape(2),
        "source_frame_count": np.array(int(source_frame_count), dtype=np.int64),
        "source_first_number": np.array(int(source_first_number), dtype=np.int64),
    }


def check_shot_fields(extra: dict[str, np.ndarray], count: int, file: str) -> None:
    """Raise ReconstructionFileError when a present shot key has the wrong dtype or shape."""
    for name, (dtype, template) in SHOT_FIELDS.items():
        if name not in extra:
            continue
        arr = np.asarray(extra[name])
        ok = arr.dtype.kind == "U" if dtype == "U" else np.can_cast(arr.dtype, np.dtype(dtype), "same_kind")
        shape = tuple(count if t == "N" else t for t in template)
        if not ok or arr.shape != shape:
            raise ReconstructionFileError(f"{file}: '{name}' has {arr.dtype} {list(arr.shape)}, expected "
                                          f"{'a string' if dtype == 'U' else dtype} {list(shape)}", file=file)
    if "frame_numbers" in extra and "fps" not in extra:
        raise ReconstructionFileError(f"{file}: has 'frame_numbers' but no 'fps'", file=file)


def read_shot_fields(rec: Any) -> ShotFields | None:
    """The shot keys of a Reconstruction (None for a photo set)."""
    extra = getattr(rec, "extra", None) or {}
    if "frame_numbers" not in extra:
        return None
    fps = float(extra["fps"])
    if "fps_fraction" in extra:
        num, den = (int(v) for v in np.asarray(extra["fps_fraction"]).reshape(2))
    else:
        from fractions import Fraction

        frac = Fraction(fps).limit_denominator(1001)
        num, den = frac.numerator, frac.denominator
    size = tuple(int(v) for v in np.asarray(extra.get("source_size", rec.original_sizes[0])).reshape(2))
    def scalar(key: str, default: Any) -> Any:
        return np.asarray(extra[key]).item() if key in extra else default
    return ShotFields(
        frame_numbers=np.asarray(extra["frame_numbers"], dtype=np.int64),
        fps=fps, fps_fraction=(num, den),
        source_video=str(scalar("source_video", "")),
        source_kind=str(scalar("source_kind", "video")),
        source_size=size,
        source_frame_count=int(scalar("source_frame_count", int(np.max(extra["frame_numbers"])) + 1)),
        source_first_number=int(scalar("source_first_number", 0)),
    )


def is_video_shot(rec: Any) -> bool:
    """A shot whose views are frames of one video file (not files of their own): refinement decodes them."""
    shot = read_shot_fields(rec)
    return shot is not None and shot.source_kind == "video"
