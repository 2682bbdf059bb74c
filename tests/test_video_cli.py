"""`python -m vggt_blender reconstruct SHOT.mp4`: a real subprocess, a PyAV-written H.264 shot, the tiny model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.helpers import TINY_CONFIG, write_tiny_checkpoint
from tests.test_cli import run_cli
from tests.test_worker import run_worker
from tests.video_helpers import read_number, write_video
from vggt_blender.io.reconstruction import load_reconstruction  # noqa: E402
from vggt_blender.io.shot_fields import read_shot_fields  # noqa: E402

pytest.importorskip("av")


@pytest.fixture(scope="module")
def shot(tmp_path_factory) -> dict:
    tmp = tmp_path_factory.mktemp("shotcli")
    return {"tmp": tmp, "video": write_video(tmp / "shot.mp4"), "checkpoint": write_tiny_checkpoint(tmp)}


def _run(shot, out: Path, *extra: str):
    return run_cli(["reconstruct", str(shot["video"]), "-o", str(out), "--weights", str(shot["checkpoint"]),
                    "--config", str(TINY_CONFIG), "--device", "cpu", "-q", *extra], shot["tmp"])


def test_video_frames_numbers_and_rate_in_the_file(shot):
    out = shot["tmp"] / "every.npz"
    result = _run(shot, out, "--every", "7", "--start", "3", "--end", "40")
    assert result.returncode == 0, result.stderr
    rec = load_reconstruction(out)
    fields = read_shot_fields(rec)
    assert fields.frame_numbers.tolist() == [3, 10, 17, 24, 31, 38]
    assert rec.extra["frame_numbers"].dtype == np.int64 and rec.extra["fps"].dtype == np.float64
    assert fields.fps_fraction == (24000, 1001) and fields.fps == pytest.approx(24000 / 1001, rel=1e-15)
    assert fields.source_video == str(shot["video"]) and fields.source_kind == "video"
    assert fields.source_size == (160, 120) and fields.source_frame_count == 48
    # The colours are the decoded frames themselves: each view shows its own frame number.
    assert [read_number(c) for c in rec.colors] == fields.frame_numbers.tolist()
    assert rec.original_sizes.tolist() == [[160, 120]] * 6
    assert tuple(rec.model_size) == (518, 392)
    assert rec.image_names[0] == "shot_00003"
    prov = rec.provenance_dict["shot"]
    assert prov["chunks"] == [[0, 6, 0]] and prov["alignment"] == []


def test_chunked_shot_is_aligned_and_reports_residuals(shot):
    out = shot["tmp"] / "chunks.npz"
    result = _run(shot, out, "--max-frames", "7", "--chunk-size", "4", "--overlap", "2")
    assert result.returncode == 0, result.stderr
    rec = load_reconstruction(out)
    assert read_shot_fields(rec).frame_numbers.tolist() == [0, 8, 16, 24, 31, 39, 47]
    assert [read_number(c) for c in rec.colors] == [0, 8, 16, 24, 31, 39, 47]
    prov = rec.provenance_dict["shot"]
    assert prov["chunks"] == [[0, 4, 0], [2, 6, 2], [3, 7, 3]]
    assert prov["chunking"]["sized_by"] == "requested"
    assert [a["chunk"] for a in prov["alignment"]] == [1, 2]
    for a in prov["alignment"]:
        assert a["shared_views"] in (2, 3) and a["scale"] > 0 and np.isfinite(a["point_rms"])
    # The stored world points are the ONE derivation from the (aligned) depth and cameras.
    from vggt_blender.geometry.cameras import depth_to_world_points

    again = depth_to_world_points(rec.depth, rec.extrinsics, rec.intrinsics_model, dtype=np.float32)
    scale = np.nanmedian(np.abs(rec.world_points))
    assert np.nanmax(np.abs(again - rec.world_points)) < 1e-3 * max(scale, 1.0)
    assert np.isfinite(rec.extrinsics).all()


def test_damaged_video_is_one_line(shot):
    bad = shot["tmp"] / "cut.mp4"
    data = Path(shot["video"]).read_bytes()
    bad.write_bytes(data[: len(data) // 2])
    out = shot["tmp"] / "bad.npz"
    result = run_cli(["reconstruct", str(bad), "-o", str(out), "--weights", str(shot["checkpoint"]),
                      "--config", str(TINY_CONFIG), "--device", "cpu", "-q"], shot["tmp"])
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {bad}: ") and "damaged" in lines[0], result.stderr
    assert not out.exists()


def test_frame_options_need_a_shot(shot, tmp_path):
    (tmp_path / "p").mkdir()
    result = run_cli(["reconstruct", str(shot["video"]), str(shot["video"]), "-o", str(tmp_path / "x.npz"),
                      "--weights", str(shot["checkpoint"]), "--config", str(TINY_CONFIG), "--every", "2"], tmp_path)
    assert result.returncode == 1 and "need one video file or one image sequence" in result.stderr


def test_long_shot_path_spools_and_streams_the_file(shot, monkeypatch):
    """The long-shot path (xyz maps in temporary files, compressed streamed file), forced on 3 frames."""
    from vggt_blender.engine import inference
    from vggt_blender.engine import shot as shot_engine

    from vggt_blender.io import shot_fields
    from vggt_blender.io.spool import _mapping

    monkeypatch.setattr(shot_engine, "SPOOL_FROM_FRAMES", 1)
    monkeypatch.setattr(shot_fields, "COMPRESS_FROM_FRAMES", 1)
    out = shot["tmp"] / "spooled.npz"
    rec = inference.reconstruct_to_file([str(shot["video"])], out, weights=str(shot["checkpoint"]),
                                        config=str(TINY_CONFIG), device="cpu", max_frames=3)
    assert _mapping(rec.point_map) is not None  # a map of the spool file, not a copy
    loaded = load_reconstruction(out)
    assert read_shot_fields(loaded).frame_numbers.tolist() == [0, 24, 47]
    assert np.array_equal(loaded.world_points, np.asarray(rec.world_points))
    assert np.array_equal(loaded.point_map, np.asarray(rec.point_map))
    import zipfile

    with zipfile.ZipFile(out) as zf:
        assert {i.compress_type for i in zf.infolist()} == {zipfile.ZIP_DEFLATED}
    from vggt_blender.geometry.cameras import depth_to_world_points

    again = depth_to_world_points(loaded.depth, loaded.extrinsics, loaded.intrinsics_model, dtype=np.float32)
    assert np.allclose(again, loaded.world_points, rtol=1e-5, atol=1e-5)


def test_worker_request_with_a_video_and_shot_fields(shot):
    """The panel's path: a worker request (`python -m vggt_blender.jobs.worker`) whose `images` is the video,
    with the frame selection and chunking fields the protocol checks; the result file is a shot file."""
    out = shot["tmp"] / "worker_shot.npz"
    request = {"images": [str(shot["video"])], "output": str(out), "weights": str(shot["checkpoint"]),
               "device": "cpu", "precision": "auto", "mode": "crop", "config": str(TINY_CONFIG),
               "download": False, "every": 5, "start": 4, "end": 30, "chunk_size": 4, "overlap": 2}
    code, lines, stderr = run_worker(json.dumps(request) + "\n", shot["tmp"])
    assert code == 0, (lines, stderr[-2000:])
    result = lines[-1]
    assert result["type"] == "result" and result["path"] == str(out), lines[-3:]
    assert result["summary"]["images"] == 6
    rec = load_reconstruction(out)
    fields = read_shot_fields(rec)
    assert fields.frame_numbers.tolist() == [4, 9, 14, 19, 24, 29]
    assert [read_number(c) for c in rec.colors] == [4, 9, 14, 19, 24, 29]  # the numbered frames themselves
    prov = rec.provenance_dict["shot"]
    assert prov["chunks"] == [[0, 4, 0], [2, 6, 2]] and [a["chunk"] for a in prov["alignment"]] == [1]
    assert prov["selection"]["every"] == 5 and prov["selection"]["start"] == 4
    # A bad shot field is one protocol error naming it, before anything runs.
    code, lines, _ = run_worker(json.dumps(dict(request, every=0, output=str(shot["tmp"] / "no.npz"))) + "\n",
                                shot["tmp"])
    assert code != 0 and lines[-1]["type"] == "error" and "every" in lines[-1]["message"], lines
    assert not (shot["tmp"] / "no.npz").exists()


def test_a_vggt_omega_shot_runs_in_chunks_without_a_point_map(shot, tmp_path):
    """The chunk alignment works from depth and cameras, so VGGT-Omega (no point head) runs shots too, each
    frame through Omega's own loader."""
    from PIL import Image

    from tests.helpers import TINY_OMEGA_CONFIG, write_tiny_omega_checkpoint
    from tests.video_helpers import frame_pattern
    from vggt_blender.preprocess import preprocess_images

    checkpoint = write_tiny_omega_checkpoint(tmp_path)
    out = tmp_path / "omega.npz"
    result = run_cli(["reconstruct", str(shot["video"]), "-o", str(out), "--weights", str(checkpoint),
                      "--config", str(TINY_OMEGA_CONFIG), "--device", "cpu", "-q", "--max-frames", "7",
                      "--chunk-size", "4", "--overlap", "2"], shot["tmp"])
    assert result.returncode == 0, result.stderr
    rec = load_reconstruction(out)
    assert rec.provenance_dict["model_family"] == "vggt-omega"
    assert rec.point_map is None and rec.point_map_conf is None
    assert read_shot_fields(rec).frame_numbers.tolist() == [0, 8, 16, 24, 31, 39, 47]
    assert [a["chunk"] for a in rec.provenance_dict["shot"]["alignment"]] == [1, 2]
    assert np.isfinite(rec.extrinsics).all() and np.isfinite(rec.world_points[rec.valid_mask]).all()
    # Each frame went through Omega's loader exactly as the same picture given as a photo does.
    photo = tmp_path / "frame.png"
    Image.fromarray(frame_pattern(0)).save(photo)
    prep = preprocess_images([str(photo)], model="vggt-omega")
    assert tuple(rec.model_size) == (prep.images.shape[-1], prep.images.shape[-2])
    np.testing.assert_allclose(rec.pixel_map[0], prep.pixel_map[0], atol=1e-9)
    np.testing.assert_array_equal(rec.valid_box[0], prep.valid_box[0])
