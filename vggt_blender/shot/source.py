"""Probe a shot (video file or numbered image sequence) and decode exactly the numbered frames (engine tier).

Videos go through PyAV (FFmpeg). A frame's number is its index in presentation order, taken from the
timestamps of every packet (a demux pass, no decoding), so B-frames, seeking and variable frame rate cannot
shift it: decoding seeks to the keyframe at or before the first wanted frame and decodes forward, matching
each decoded frame to its number by pts. Frames come out as upright 8-bit RGB PIL images (the display
matrix's rotation applied, any pixel format converted by FFmpeg's swscale to rgb24) one at a time, so the
caller can resize each to the model size before the next one is decoded.

Image sequences: PNG/JPEG/TIFF through Pillow (the same loader as photos), EXR through PyAV's EXR decoder
(linear float -> sRGB 8-bit; Pillow has no EXR reader).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Iterator, Sequence

import numpy as np
from PIL import Image

from ..errors import RequestError
from .selection import FrameSelection, ShotError, fps_fraction, is_sequence_pattern
from .selection import is_video_path, select_frame_numbers, sequence_files, shot_failure as _fail

DEFAULT_SEQUENCE_FPS = Fraction(24)


@dataclass
class ShotInfo:
    """What a shot is. `width`/`height` are as displayed (after rotation); `frame_numbers` every frame the
    source has (0-based, ascending); `fps` exact (Fraction); `rotation` the clockwise degrees applied to
    make frames upright (0, 90, 180, 270)."""

    path: str
    kind: str  # "video" or "sequence"
    frame_numbers: list[int]
    fps: Fraction
    width: int
    height: int
    rotation: int = 0
    duration: float = 0.0
    variable_frame_rate: bool = False
    pixel_format: str = ""
    codec: str = ""
    files: list[str] = field(default_factory=list)  # sequences: the file of each frame number, same order
    first_file_number: int = 0  # sequences: the number in the first file's name
    _pts: list[int] = field(default_factory=list, repr=False)  # videos: pts of each frame number

    @property
    def frame_count(self) -> int:
        return len(self.frame_numbers)

    def summary(self) -> dict:
        return {"path": self.path, "kind": self.kind, "frame_count": self.frame_count, "fps": float(self.fps),
                "fps_fraction": [self.fps.numerator, self.fps.denominator], "width": self.width,
                "height": self.height, "rotation": self.rotation, "duration": self.duration,
                "variable_frame_rate": self.variable_frame_rate, "pixel_format": self.pixel_format,
                "codec": self.codec, "first_file_number": self.first_file_number}


def _import_av(path: str):
    try:
        import av  # noqa: PLC0415 - the engine's optional video dependency
    except ImportError:
        raise _fail(path, "reading videos needs PyAV (pip install av==18.1.0) in the inference runtime") from None
    return av


# -------------------------------------------------------------------------------------------------- video


def _check_file(path: str) -> None:
    if os.path.isdir(path):
        raise _fail(path, "is a folder, not a video file")
    if not os.path.exists(path):
        raise _fail(path, "the file does not exist")
    if os.path.getsize(path) == 0:
        raise _fail(path, "the file is empty (0 bytes)")


def _av_problem(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:200]


def _open_video(path: str):
    av = _import_av(path)
    _check_file(path)
    try:
        container = av.open(path, mode="r")
    except (av.FFmpegError, OSError, ValueError, UnicodeDecodeError) as exc:
        raise _fail(path, f"not a video file or a damaged one ({_av_problem(exc)})") from None
    if not container.streams.video:
        container.close()
        raise _fail(path, "has no video stream")
    return av, container


def _rotation_clockwise(counter_clockwise: float | int | None) -> int:
    """PyAV reports the display matrix as counter-clockwise degrees; frames are made upright by turning
    them that much (a phone's "rotate=90" is -90 here, i.e. 90 degrees clockwise)."""
    if counter_clockwise is None:
        return 0
    return int(round(-float(counter_clockwise) / 90.0)) % 4 * 90


def _stream_rotation(av, container, stream) -> int | None:
    """The rotation from the stream's display matrix (None when the stream does not say)."""
    side = getattr(stream, "side_data", None)  # not every PyAV build exposes stream side data
    try:
        if side is not None and "DISPLAYMATRIX" in side:
            return _rotation_clockwise(side["DISPLAYMATRIX"])
    except Exception:  # noqa: BLE001 - a foreign side-data layout is not worth failing over
        pass
    value = stream.metadata.get("rotate") if stream.metadata else None  # old FFmpeg's clockwise tag
    if value is not None:
        try:
            return int(round(float(value) / 90.0)) % 4 * 90
        except ValueError:
            pass
    return None


def probe_video(path: str | os.PathLike) -> ShotInfo:
    """Frame count (every packet's timestamp), exact fps, displayed size, rotation, duration of a video."""
    path = os.fspath(path)
    av, container = _open_video(path)
    try:
        stream = container.streams.video[0]
        pts: list[int] = []
        keyless = 0
        try:
            for packet in container.demux(stream):
                if packet.size == 0:
                    continue  # the demuxer's final flush packet
                if packet.pts is None:
                    keyless += 1
                else:
                    pts.append(int(packet.pts))
        except (av.FFmpegError, OSError) as exc:
            raise _fail(path, f"the video is damaged ({_av_problem(exc)})") from None
        if keyless and not pts:
            pts = []  # no timestamps at all: numbered by decode order below
        if not pts and not keyless:
            raise _fail(path, "the video stream has no frames")
        pts = sorted(set(pts))
        # Decode the first frame: the real size, pixel format and rotation, and proof the stream decodes.
        container.seek(0)
        first = None
        try:
            for frame in container.decode(stream):
                first = frame
                break
        except (av.FFmpegError, OSError, ValueError) as exc:
            raise _fail(path, f"the video is damaged: its first frame does not decode ({_av_problem(exc)})"
                        ) from None
        if first is None:
            raise _fail(path, "the video is damaged: no frame decodes")
        rotation = _stream_rotation(av, container, stream)
        if rotation is None:
            rotation = _rotation_clockwise(getattr(first, "rotation", 0))
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        time_base = stream.time_base or Fraction(1, 90000)
        count = len(pts) if pts else keyless
        variable = False
        if len(pts) >= 3:
            steps = np.diff(np.asarray(pts, dtype=np.int64))
            variable = bool(steps.max() - steps.min() > max(1, 0.02 * np.median(steps)))
            span = (pts[-1] - pts[0] + np.median(steps)) * time_base
            duration = float(span)
            if not rate or variable:
                # Variable frame rate: the average over the shot (frames are numbered by pts, not by rate).
                rate = Fraction(count) / Fraction(span) if span else rate
        else:
            duration = float(stream.duration * time_base) if stream.duration else 0.0
        if not rate:
            raise _fail(path, "the video does not say its frame rate")
        fps = fps_fraction(Fraction(rate))
        if not duration:
            duration = float(count / fps)
        width, height = int(first.width), int(first.height)
        if rotation in (90, 270):
            width, height = height, width
        return ShotInfo(path=os.path.abspath(path), kind="video", frame_numbers=list(range(count)), fps=fps,
                        width=width, height=height, rotation=rotation, duration=duration,
                        variable_frame_rate=variable, pixel_format=str(first.format.name),
                        codec=str(stream.codec_context.name), _pts=pts)
    finally:
        container.close()


def _upright(image: Image.Image, rotation: int) -> Image.Image:
    # PIL's ROTATE_* turn counter-clockwise; `rotation` is clockwise.
    turn = {90: Image.Transpose.ROTATE_270, 180: Image.Transpose.ROTATE_180, 270: Image.Transpose.ROTATE_90}
    return image.transpose(turn[rotation]) if rotation in turn else image


def _decode_video(info: ShotInfo, numbers: Sequence[int]) -> Iterator[tuple[int, Image.Image]]:
    wanted = sorted(set(int(n) for n in numbers))
    if not wanted:
        return
    av, container = _open_video(info.path)
    path = info.path
    try:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        by_pts = {p: i for i, p in enumerate(info._pts)} if info._pts else None
        position = 0
        if by_pts is not None and wanted[0] > 0:
            # To the keyframe at or before the first wanted frame; the pts say where decoding really is.
            container.seek(info._pts[wanted[0]], backward=True, any_frame=False, stream=stream)
        todo = iter(wanted)
        target = next(todo)
        try:
            for frame in container.decode(stream):
                if by_pts is not None and frame.pts is not None:
                    number = by_pts.get(int(frame.pts))
                    if number is None:
                        continue  # a timestamp the demux pass did not list: not a numbered frame
                else:
                    number = position
                position += 1
                if number < target:
                    continue
                if number > target:  # the wanted frame never came out of the decoder
                    raise _fail(path, f"the video is damaged: frame {target} does not decode")
                image = _upright(frame.to_image(), info.rotation)  # swscale: any pixel format -> rgb24
                yield number, image
                target = next(todo, None)
                if target is None:
                    return
        except (av.FFmpegError, OSError, ValueError) as exc:
            raise _fail(path, f"the video is damaged near frame {target} ({_av_problem(exc)})") from None
        raise _fail(path, f"the video is damaged: it ends before frame {target} (probed "
                    f"{info.frame_count} frames)")
    finally:
        container.close()


# ------------------------------------------------------------------------------------------ image sequence

def probe_sequence(path: str | os.PathLike, fps: float | Fraction | None = None) -> ShotInfo:
    """A numbered image sequence: a folder of numbered files (one name prefix) or a `%04d`/`####` pattern."""
    path = os.fspath(path)
    files = sequence_files(path)
    numbers = [n for n, _ in files]
    first_number = numbers[0]
    first = _load_sequence_frame(files[0][1])
    rate = fps_fraction(fps) if fps else DEFAULT_SEQUENCE_FPS
    span = numbers[-1] - first_number + 1
    return ShotInfo(path=os.path.abspath(path), kind="sequence",
                    frame_numbers=[n - first_number for n in numbers], fps=rate, width=first.width,
                    height=first.height, duration=float(span / rate), pixel_format=first.mode,
                    codec=os.path.splitext(files[0][1])[1].lower().lstrip("."),
                    files=[os.path.abspath(f) for _, f in files], first_file_number=first_number)


def _srgb_from_linear(linear: np.ndarray) -> np.ndarray:
    x = np.clip(np.nan_to_num(linear, nan=0.0, posinf=1.0, neginf=0.0), 0.0, 1.0)
    encoded = np.where(x <= 0.0031308, 12.92 * x, 1.055 * np.power(x, 1.0 / 2.4) - 0.055)
    return np.rint(encoded * 255.0).astype(np.uint8)


def _load_exr(path: str) -> Image.Image:
    av = _import_av(path)
    _check_file(path)
    try:
        with av.open(path) as container:
            frame = next(container.decode(video=0))
            gbr = frame.to_ndarray(format="gbrpf32le")  # [H,W,3] as G, B, R floats, linear light
    except (av.FFmpegError, OSError, ValueError, StopIteration) as exc:
        raise _fail(path, f"not a readable EXR image ({_av_problem(exc)})") from None
    g, b, r = np.moveaxis(gbr, -1, 0)
    return Image.fromarray(_srgb_from_linear(np.stack([r, g, b], axis=-1)), mode="RGB")


def _load_sequence_frame(path: str) -> Image.Image:
    if path.lower().endswith(".exr"):
        return _load_exr(path)
    from ..preprocess import load_image  # the photos' loader: orientation, modes, readable errors

    return load_image(path)


def _decode_sequence(info: ShotInfo, numbers: Sequence[int]) -> Iterator[tuple[int, Image.Image]]:
    index = {n: f for n, f in zip(info.frame_numbers, info.files)}
    for number in sorted(set(int(n) for n in numbers)):
        if number not in index:
            raise _fail(info.path, f"has no frame {number}")
        yield number, _load_sequence_frame(index[number])


# ------------------------------------------------------------------------------------------------ public


def probe_shot(path: str | os.PathLike, fps: float | Fraction | None = None) -> ShotInfo:
    """Probe a video file, a sequence pattern or a folder holding one numbered sequence.
    `fps` is the rate of an image sequence (videos say their own; default 24)."""
    path = os.fspath(path)
    if is_sequence_pattern(path) or os.path.isdir(path):
        return probe_sequence(path, fps)
    if not os.path.exists(path) and not is_video_path(path):
        raise _fail(path, "the file does not exist")
    return probe_video(path)


def iter_frames(info: ShotInfo, numbers: Sequence[int]) -> Iterator[tuple[int, Image.Image]]:
    """(frame number, upright RGB image) for each of `numbers`, in ascending order, one at a time."""
    if info.kind == "sequence":
        return _decode_sequence(info, numbers)
    return _decode_video(info, numbers)


def shot_photos(rec) -> Iterator[np.ndarray] | None:
    """A video shot's views as decoded frames (uint8 RGB, upright), in view order: what refinement reads where
    the views are not files of their own. None for photo sets and image sequences (their views are files)."""
    from ..io.shot_fields import is_video_shot, read_shot_fields

    if not is_video_shot(rec):
        return None
    shot = read_shot_fields(rec)
    numbers = [int(n) for n in shot.frame_numbers]
    if any(b <= a for a, b in zip(numbers, numbers[1:])):
        raise _fail(shot.source_video, "the reconstruction's frame numbers are not in ascending order")
    info = probe_video(shot.source_video)
    return (np.asarray(image.convert("RGB")) for _number, image in iter_frames(info, numbers))


def select_frames(info: ShotInfo, selection: FrameSelection | None = None) -> list[int]:
    return select_frame_numbers(info.frame_numbers, selection or FrameSelection(), info.path)


__all__ = ["ShotError", "ShotInfo", "probe_shot", "probe_video", "probe_sequence", "iter_frames",
           "select_frames", "FrameSelection", "RequestError"]
