"""`python -m vggt_blender`: real subprocesses on real files with a tiny checkpoint."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

sys.path.insert(0, str(Path(__file__).parent))  # --import-mode=importlib: make the shared helpers importable
from test_inference import TINY_CONFIG, check_consistent, write_photos, write_tiny_checkpoint  # noqa: E402
from vggt_blender import cli  # noqa: E402
from vggt_blender.io.reconstruction import load_reconstruction

ROOT = Path(__file__).resolve().parent.parent


def run_cli(args: list[str], tmp: Path, timeout: float = 180) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT)
    env["XDG_CACHE_HOME"] = str(tmp / "cache")  # no checkpoint is found by accident
    env["OMP_NUM_THREADS"] = "1"
    env.pop("VGGT_WEIGHTS", None)
    return subprocess.run([sys.executable, "-m", "vggt_blender", *args], capture_output=True, text=True,
                          env=env, timeout=timeout, cwd=tmp)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> dict:
    tmp = tmp_path_factory.mktemp("cli")
    photos = write_photos(tmp / "photos")
    (tmp / "photos" / "notes.txt").write_text("not an image")
    checkpoint = write_tiny_checkpoint(tmp)
    out = tmp / "scene.npz"
    result = run_cli(["reconstruct", str(tmp / "photos"), "-o", str(out), "--weights", str(checkpoint),
                      "--config", str(TINY_CONFIG), "--device", "cpu"], tmp)
    return {"tmp": tmp, "photos": photos, "checkpoint": checkpoint, "out": out, "result": result}


def test_reconstruct_writes_a_consistent_file(tiny):
    result = tiny["result"]
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert "warning: skipped notes.txt: not an image file" in lines or any(
        line.startswith("warning: skipped notes.txt") for line in lines)
    for stage in ("preprocessing", "loading", "inference", "writing"):
        assert any(line.startswith(f"{stage}: done in") for line in lines), result.stderr
    assert lines[-1].startswith(f"wrote {tiny['out']}: 3 image(s) at 518x392, 609,168 points")
    rec = load_reconstruction(tiny["out"])
    photos = {p.stem: np.asarray(Image.open(p).convert("RGB")) for p in tiny["photos"]}
    check_consistent(rec, photos)
    prov = rec.provenance_dict
    assert prov["checkpoint"] == "model.pt" and len(prov["checkpoint_sha256"]) == 64
    assert prov["precision"] == "fp32" and prov["mode"] == "crop"
    assert set(prov["timings"]) == {"preprocessing", "loading", "inference"}


def test_info_prints_the_summary(tiny):
    result = run_cli(["info", str(tiny["out"])], tiny["tmp"])
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("3 images, model input 518x392")
    assert "view_0" in result.stdout and "precision: fp32" in result.stdout

    broken = tiny["tmp"] / "broken.npz"
    broken.write_bytes(b"not a zip")
    result = run_cli(["info", str(broken)], tiny["tmp"])
    assert result.returncode == 1
    assert result.stderr.startswith(f"error: {broken}: not a reconstruction file")
    assert "Traceback" not in result.stderr


def test_missing_checkpoint_explains_how_to_get_one(tmp_path):
    write_photos(tmp_path / "photos", count=1)
    out = tmp_path / "scene.npz"
    result = run_cli(["reconstruct", str(tmp_path / "photos"), "-o", str(out), "-q"], tmp_path)
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert result.stderr.startswith("error: no VGGT weights found")
    assert "python -m vggt_blender download" in result.stderr and "huggingface.co" in result.stderr
    assert not out.exists()


def test_bad_image_is_named(tiny, tmp_path):
    photos = write_photos(tmp_path / "photos", count=2)
    bad = tmp_path / "photos" / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 this is not really a jpeg")
    out = tmp_path / "scene.npz"
    result = run_cli(["reconstruct", *map(str, photos), str(bad), "-o", str(out), "-q",
                      "--weights", str(tiny["checkpoint"]), "--config", str(TINY_CONFIG)], tmp_path)
    assert result.returncode == 1
    assert result.stderr.startswith("error: ") and str(bad) in result.stderr
    assert "Traceback" not in result.stderr
    assert not out.exists() and not list(tmp_path.glob("*.npz"))


def test_bad_arguments(tmp_path):
    result = run_cli(["reconstruct", "x.jpg", "--precision", "fp8"], tmp_path)
    assert result.returncode == 2 and "invalid choice: 'fp8'" in result.stderr
    result = run_cli(["reconstruct", str(tmp_path), "-q"], tmp_path)
    assert result.returncode == 1 and result.stderr == "error: give an output file with -o scene.npz " \
                                                         "(and/or --blend scene.blend)\n"


def test_scene_flags_map_onto_scene_options():
    args = cli.build_parser().parse_args(
        ["reconstruct", "a.jpg", "--blend", "s.blend", "--no-cameras", "--no-planes", "--plane-step", "8",
         "--max-points", "5000", "--min-confidence", "2.5", "--scale", "3", "--camera-mode", "animated",
         "--point-source", "point_map"])
    options = cli.scene_options_from_args(args)
    assert (options.create_cameras, options.create_point_cloud, options.create_depth_planes) == (False, True, False)
    assert (options.plane_step, options.max_points, options.min_confidence, options.scale) == (8, 5000, 2.5, 3.0)
    assert (options.camera_mode, options.point_source) == ("animated", "point_map")
    defaults = cli.scene_options_from_args(cli.build_parser().parse_args(["reconstruct", "a.jpg"]))
    assert defaults == type(options)()


def test_ctrl_c_exits_130_without_output(tmp_path, monkeypatch, capsys):
    from vggt_blender.engine import inference

    def interrupted(*_args, **_kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(inference, "reconstruct_to_file", interrupted)
    code = cli.main(["reconstruct", str(tmp_path), "-o", str(tmp_path / "s.npz"), "-q"])
    assert code == 130
    assert capsys.readouterr().err.strip() == "interrupted"
    assert not (tmp_path / "s.npz").exists()


@pytest.mark.skipif(importlib.util.find_spec("bpy") is None, reason="bpy is not installed")
def test_blend_output(tiny, tmp_path):
    blend = tmp_path / "scene.blend"
    result = run_cli(["reconstruct", *map(str, tiny["photos"]), "--blend", str(blend), "-q",
                      "--weights", str(tiny["checkpoint"]), "--config", str(TINY_CONFIG), "--no-planes",
                      "--max-points", "2000"], tmp_path, timeout=300)
    assert result.returncode == 0, result.stderr
    assert blend.stat().st_size > 10_000
    assert (tmp_path / "scene.npz").is_file()  # the reconstruction goes beside the .blend
    assert f"wrote {tmp_path / 'scene.npz'} and {blend}:" in result.stderr
    # Which Blender opens it (bpy 5.0 writes it: 4.5 LTS and newer), and the .npz route for 4.2.
    assert "scene.blend was saved by Blender 5.0 and opens in Blender 4.5 or newer" in result.stderr
    assert "VGGT Reconstruction on scene.npz" in result.stderr


def test_download_of_a_gated_checkpoint_needs_a_token(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.delenv("HUGGING_FACE_HUB_TOKEN", raising=False)
    code = cli.main(["download", "--checkpoint", "vggt-1b-commercial", "--dest", str(tmp_path), "-q"])
    err = capsys.readouterr().err.splitlines()
    assert code == 1
    assert "VGGT License v1" in err[0]  # the licence is shown first
    assert err[-1].startswith("error: checkpoint vggt-1b-commercial is gated")
    assert list(tmp_path.iterdir()) == []


def test_export_ply(tiny, tmp_path):
    ply = tmp_path / "points.ply"
    result = run_cli(["export-ply", str(tiny["out"]), str(ply), "--min-confidence", "1.0", "--max-points", "1000"],
                     tiny["tmp"])
    assert result.returncode == 0, result.stderr
    assert result.stderr == f"wrote {ply}: 1,000 points\n"
    data = ply.read_bytes()
    header, body = data.split(b"end_header\n", 1)
    assert b"element vertex 1000" in header and b"property uchar red" in header
    rows = np.frombuffer(body, dtype=[("xyz", "<f4", 3), ("rgb", "u1", 3), ("conf", "<f4")])
    assert len(rows) == 1000
    rec = load_reconstruction(tiny["out"])
    valid = np.ascontiguousarray(rec.world_points[rec.valid_mask])
    colours = rec.colors[rec.valid_mask]
    # Every exported point is one of the reconstruction's points (bit-exact), with its colour.
    index = {point.tobytes(): i for i, point in enumerate(valid)}
    for row in rows:
        i = index[np.ascontiguousarray(row["xyz"], dtype=np.float32).tobytes()]
        assert tuple(colours[i]) == tuple(row["rgb"])


def _no_inference(*_args, **_kwargs):
    raise AssertionError("inference must not start")


def test_blend_without_bpy_fails_before_inference(tmp_path, monkeypatch, capsys):
    from vggt_blender.engine import inference

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "bpy" else real_find_spec(name, *a))
    monkeypatch.setattr(inference, "reconstruct_to_file", _no_inference)
    code = cli.main(["reconstruct", str(tmp_path), "--blend", str(tmp_path / "s.blend"), "-q"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 1
    assert err[0].startswith("error: --blend needs the bpy module") and str(tmp_path / "s.blend") in err[0]


@pytest.mark.parametrize("explicit_npz", [False, True])
def test_failed_blend_step_removes_only_a_byproduct_npz(tmp_path, monkeypatch, capsys, explicit_npz):
    import types

    from vggt_blender.engine import inference
    from vggt_blender.errors import RequestError

    def fake_reconstruct(_inputs, output, **_kwargs):
        Path(output).write_bytes(b"npz")
        return None

    def broken_blend(*_args):
        raise RequestError("blend step failed")

    monkeypatch.setattr(inference, "reconstruct_to_file", fake_reconstruct)
    monkeypatch.setitem(sys.modules, "_vggt_blender_extension.scene.blend_file", types.SimpleNamespace(write_blend=broken_blend))
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: object())
    npz = tmp_path / ("mine.npz" if explicit_npz else "s.npz")
    args = ["reconstruct", str(tmp_path), "--blend", str(tmp_path / "s.blend"), "-q"]
    code = cli.main(args + (["-o", str(npz)] if explicit_npz else []))
    err = capsys.readouterr().err
    assert code == 1 and err.strip().endswith("error: blend step failed")
    if explicit_npz:
        assert npz.is_file() and f"{npz} was written and stays" in err
    else:
        assert not npz.exists() and f"removed {npz}" in err


def test_os_error_is_one_readable_line(tmp_path, monkeypatch, capsys):
    def disk_full(_args):
        raise OSError(28, "No space left on device", str(tmp_path / "points.ply"))

    monkeypatch.setitem(cli.COMMANDS, "info", disk_full)
    assert cli.main(["info", "x.npz"]) == 1
    assert capsys.readouterr().err == f"error: {tmp_path / 'points.ply'}: No space left on device\n"


def test_download_does_not_paper_over_a_bad_weights_variable(tmp_path, monkeypatch, capsys):
    from vggt_blender.engine import inference
    from vggt_blender.weights import download

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("VGGT_WEIGHTS", str(tmp_path / "typo.pt"))
    monkeypatch.setattr(download, "download_named_checkpoint", _no_inference)
    monkeypatch.setattr(inference, "reconstruct_to_file", _no_inference)
    code = cli.main(["reconstruct", str(tmp_path), "-o", str(tmp_path / "s.npz"), "--download", "-q"])
    err = capsys.readouterr().err.strip()
    assert code == 1 and "typo.pt" in err and "$VGGT_WEIGHTS" in err


def test_progress_lines_fit_the_terminal(monkeypatch):
    import io

    from vggt_blender.progress import StageProgress

    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.setenv("COLUMNS", "40")
    stream = Tty()
    bar = StageProgress(stream)
    bar("inference", 0.5, "a long message " * 10)
    bar("inference", 1.0, "short")
    bar.finish()
    drawn = [part for part in stream.getvalue().replace("\n", "\r").split("\r") if part]
    assert drawn and all(len(part) == 39 for part in drawn)  # cut and padded to width - 1
