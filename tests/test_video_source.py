"""Shots in: probing and exact frame decoding of videos (PyAV-written H.264 with B-frames) and sequences."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.video_helpers import frame_pattern, read_number, write_video
from vggt_blender.errors import RequestError, VGGTError  # noqa: E402
from vggt_blender.shot.selection import FrameSelection, blender_fps, fps_fraction, select_frame_numbers  # noqa: E402
from vggt_blender.shot.source import ShotError, iter_frames, probe_shot, select_frames  # noqa: E402

av = pytest.importorskip("av")


@pytest.fixture(scope="module")
def clip48(tmp_path_factory) -> Path:
    return write_video(tmp_path_factory.mktemp("video") / "shot.mp4")


def _numbers(info, wanted):
    return [(n, read_number(np.asarray(img))) for n, img in iter_frames(info, wanted)]


def test_probe_counts_frames_and_keeps_the_exact_rate(clip48):
    info = probe_shot(clip48)
    assert info.kind == "video" and info.frame_count == 48 and info.frame_numbers == list(range(48))
    assert info.fps == Fraction(24000, 1001)
    assert (info.width, info.height, info.rotation) == (160, 120, 0)
    assert info.duration == pytest.approx(48 * 1001 / 24000, abs=1e-6)
    assert not info.variable_frame_rate
    with av.open(str(clip48)) as c:  # the file really has B-frames (pts out of decode order)
        pts = [p.pts for p in c.demux(video=0) if p.size]
    assert pts != sorted(pts)


def test_every_frame_decoded_sequentially_is_its_own_number(clip48):
    info = probe_shot(clip48)
    got = _numbers(info, info.frame_numbers)
    assert got == [(n, n) for n in range(48)]


@pytest.mark.parametrize("selection, expected", [
    (FrameSelection(every=5), list(range(0, 48, 5))),
    (FrameSelection(every=4, start=7, end=31), [7, 11, 15, 19, 23, 27, 31]),  # --end inclusive
    (FrameSelection(start=13, end=13), [13]),  # mid-GOP: seek to keyframe 12, decode forward
    (FrameSelection(start=25, max_frames=4), [25, 32, 40, 47]),  # spread, first and last kept
    (FrameSelection(every=3, start=46), [46]),
])
def test_selection_decodes_exactly_the_numbered_frames(clip48, selection, expected):
    info = probe_shot(clip48)
    wanted = select_frames(info, selection)
    assert wanted == expected
    assert _numbers(info, wanted) == [(n, n) for n in expected]


def test_selection_outside_the_shot_is_one_clear_line(clip48):
    info = probe_shot(clip48)
    with pytest.raises(RequestError, match=r"shot\.mp4: no frames selected \(the shot has frames 0\.\.47"):
        select_frames(info, FrameSelection(start=60))
    with pytest.raises(RequestError, match="--every must be at least 1"):
        FrameSelection(every=0)
    with pytest.raises(RequestError, match=r"--end \(3\) is before --start \(5\)"):
        FrameSelection(start=5, end=3)


@pytest.mark.parametrize("rate, fps, base", [(Fraction(24000, 1001), 24, 1.001), (Fraction(30000, 1001), 30, 1.001),
                                             (Fraction(25), 25, 1.0), (Fraction(60000, 1001), 60, 1.001)])
def test_rates_stay_exact_and_map_to_blender(tmp_path, rate, fps, base):
    info = probe_shot(write_video(tmp_path / "r.mp4", count=6, rate=rate))
    assert info.fps == rate
    got_fps, got_base = blender_fps(info.fps)
    assert (got_fps, got_base) == (fps, pytest.approx(base, abs=1e-12))
    assert got_fps / got_base == pytest.approx(float(rate), rel=1e-12)
    assert fps_fraction(29.97) == Fraction(30000, 1001) and fps_fraction(23.976) == Fraction(24000, 1001)


def test_variable_frame_rate_numbers_frames_by_timestamp(tmp_path):
    steps = [40, 40, 33, 50, 17, 60, 41, 40, 33, 33, 100, 40] * 2
    times = np.concatenate([[0], np.cumsum(steps)[:-1]])
    path = write_video(tmp_path / "vfr.mkv", count=len(times), rate=Fraction(25), pts_of=lambda i: times[i])
    info = probe_shot(path)
    assert info.variable_frame_rate and info.frame_count == len(times)
    assert float(info.fps) == pytest.approx(len(times) / ((times[-1] + np.median(steps)) / 1000), rel=1e-3)
    assert _numbers(info, [0, 3, 9, 10, 23]) == [(n, n) for n in (0, 3, 9, 10, 23)]


def test_rotated_phone_video_comes_out_upright(tmp_path):
    # A phone held upright records landscape pixels with "rotate 90 clockwise" in its display matrix
    # (-90 counter-clockwise in FFmpeg's convention).
    path = write_video(tmp_path / "phone.mp4", count=6, rotation_ccw=-90)
    with av.open(str(path)) as c:
        assert next(c.decode(video=0)).rotation == -90
    info = probe_shot(path)
    assert (info.width, info.height, info.rotation) == (120, 160, 90)
    for number, img in iter_frames(info, [0, 5]):
        assert img.size == (120, 160)
        # Clockwise by 90: the landscape frame's top row (the number blocks) is now the right column.
        upright_back = np.asarray(img.transpose(Image.Transpose.ROTATE_90))
        assert read_number(upright_back) == number
        assert np.asarray(img)[5, -5].mean() > 200 if number & 1 else np.asarray(img)[5, -5].mean() < 60


@pytest.mark.parametrize("codec, pix_fmt, suffix", [("libx264", "yuv444p", ".mp4"), ("ffv1", "yuv422p10le", ".mkv"),
                                                    ("ffv1", "gray16le", ".mkv"), ("png", "rgb48be", ".mov")])
def test_odd_pixel_formats_become_rgb24(tmp_path, codec, pix_fmt, suffix):
    path = write_video(tmp_path / f"odd{suffix}", count=5, codec=codec, pix_fmt=pix_fmt)
    info = probe_shot(path)
    assert info.pixel_format == pix_fmt
    for number, img in iter_frames(info, [0, 3, 4]):
        assert img.mode == "RGB" and img.size == (160, 120)
        assert read_number(np.asarray(img)) == number
        if not pix_fmt.startswith("gray"):  # the colour texture survives (red ramp left to right)
            arr = np.asarray(img).astype(int)
            assert arr[90, 150, 0] - arr[90, 10, 0] > 150


def test_truncated_video_is_one_line_naming_it(tmp_path, clip48):
    bad = tmp_path / "cut.mp4"
    data = clip48.read_bytes()
    bad.write_bytes(data[: len(data) // 3])
    with pytest.raises(ShotError) as err:
        info = probe_shot(bad)
        list(iter_frames(info, info.frame_numbers))
    text = str(err.value)
    assert text.startswith(f"{bad}: ") and "\n" not in text and "damaged" in text
    assert isinstance(err.value, VGGTError) and err.value.file == str(bad)


def test_not_a_video_is_one_line_naming_it(tmp_path):
    fake = tmp_path / "notes.mp4"
    fake.write_text("this is not a video\n" * 20)
    with pytest.raises(ShotError, match=rf"^{fake}: not a video file or a damaged one"):
        probe_shot(fake)
    empty = tmp_path / "empty.mov"
    empty.write_bytes(b"")
    with pytest.raises(ShotError, match=rf"^{empty}: the file is empty"):
        probe_shot(empty)
    with pytest.raises(ShotError, match="does not exist"):
        probe_shot(tmp_path / "missing.mp4")


def _write_sequence(folder: Path, numbers, ext=".png", prefix="plate."):
    folder.mkdir(parents=True, exist_ok=True)
    for i, n in enumerate(numbers):
        Image.fromarray(frame_pattern(i)).save(folder / f"{prefix}{n:04d}{ext}")
    return folder


def test_png_sequence_folder_and_patterns(tmp_path):
    folder = _write_sequence(tmp_path / "seq", range(1001, 1011))
    for given in (folder, folder / "plate.%04d.png", folder / "plate.####.png"):
        info = probe_shot(given, fps=Fraction(30000, 1001))
        assert info.kind == "sequence" and info.first_file_number == 1001
        assert info.frame_numbers == list(range(10)) and info.fps == Fraction(30000, 1001)
        assert (info.width, info.height) == (160, 120)
        assert _numbers(info, [2, 7]) == [(2, 2), (7, 7)]
    gappy = _write_sequence(tmp_path / "gap", [1, 2, 5])
    assert probe_shot(gappy).frame_numbers == [0, 1, 4]  # a missing file stays a missing frame number
    with pytest.raises(ShotError, match="no numbered image files"):
        probe_shot(tmp_path / "seq" / "other.%04d.png")


def test_exr_sequence_through_pyav(tmp_path):
    folder = tmp_path / "exr"
    folder.mkdir()
    for i in range(3):
        linear = (frame_pattern(i).astype(np.float32) / 255.0) ** 2.2  # roughly linear light
        gbr = np.ascontiguousarray(np.stack([linear[..., 1], linear[..., 2], linear[..., 0]], axis=-1))
        frame = av.VideoFrame.from_ndarray(gbr, format="gbrpf32le")
        with av.open(str(folder / f"sh_{i:03d}.exr"), mode="w", format="image2") as out:
            stream = out.add_stream("exr", rate=24)
            stream.width, stream.height, stream.pix_fmt = 160, 120, "gbrpf32le"
            for packet in stream.encode(frame):
                out.mux(packet)
            for packet in stream.encode(None):
                out.mux(packet)
    info = probe_shot(folder / "sh_###.exr")
    assert info.frame_numbers == [0, 1, 2] and (info.width, info.height) == (160, 120)
    assert _numbers(info, [0, 1, 2]) == [(0, 0), (1, 1), (2, 2)]


def test_select_frame_numbers_is_plain_arithmetic():
    assert select_frame_numbers(list(range(10)), FrameSelection(every=3, start=1)) == [1, 4, 7]
    assert select_frame_numbers([0, 1, 4, 5, 6], FrameSelection(every=2)) == [0, 4, 6]
    assert select_frame_numbers(list(range(100)), FrameSelection(max_frames=1)) == [0]


def test_worker_request_takes_the_shot_fields():
    from vggt_blender.jobs.worker import parse_request
    from vggt_blender.options import SHOT_REQUEST_FIELDS, ShotOptions

    assert SHOT_REQUEST_FIELDS == ("every", "start", "end", "max_frames", "chunk_size", "overlap", "fps",
                                   "sequence")
    request = parse_request({"images": ["/v/shot.mp4"], "output": "/tmp/x.npz", "every": 2, "end": 30})
    assert (request["every"], request["end"], request["start"], request["chunk_size"]) == (2, 30, None, None)
    with pytest.raises(RequestError, match="'every' must be a number or null"):
        parse_request({"images": ["/v/shot.mp4"], "output": "/tmp/x.npz", "every": "2"})
    assert ShotOptions(every=3).to_request() == {"every": 3}
    assert ShotOptions().to_request() == {}


def test_sequence_pattern_from_one_chosen_file():
    from vggt_blender.shot.selection import sequence_pattern_for

    assert sequence_pattern_for("/p/sh010.1001.exr") == "/p/sh010.####.exr"
    assert sequence_pattern_for("/p/plate_07.png") == "/p/plate_##.png"
    assert sequence_pattern_for("/p/shot.mp4") == "/p/shot.mp4"
