"""Refinement through the worker (`python -m vggt_blender.jobs.worker`, a real subprocess): after inference
(`"refine": true` in a request) and on its own (a `"type": "refine"` request, what Blender's Refine Cameras runs).

The rendered ground-truth scene of tests/test_refine.py supplies the photos; the tiny random-weight checkpoint the
model. Its cameras are random, so refinement after inference cannot help there: the run must still succeed with
the feed-forward file and a warning saying why. A refine request on a file with feed-forward-like camera errors
brings the cameras to the truth and writes `reprojection_error`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("pycolmap")

from tests import refine_groundtruth as gt  # noqa: E402
from tests.helpers import TINY_CONFIG, write_tiny_checkpoint  # noqa: E402
from vggt_blender.io.reconstruction import load_reconstruction, save_reconstruction  # noqa: E402
from vggt_blender.jobs import protocol  # noqa: E402
from vggt_blender.jobs.local import LocalJob  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
SCENE = Path(__file__).resolve().parent / "fixtures" / "refine_scene"
VIEWS = [3, 4, 5]


def _env(tmp: Path) -> dict[str, str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT), XDG_CACHE_HOME=str(tmp / "cache"), OMP_NUM_THREADS="1")
    env.pop("VGGT_WEIGHTS", None)
    return env


def _worker(request: dict, tmp: Path) -> tuple[int, list[dict]]:
    out = subprocess.run([sys.executable, "-m", "vggt_blender.jobs.worker"], input=json.dumps(request),
                         capture_output=True, text=True, env=_env(tmp), timeout=600, cwd=tmp)
    assert "Traceback" not in out.stderr, out.stderr[-3000:]
    return out.returncode, [json.loads(line) for line in out.stdout.splitlines()]


def _relative_rotation_deg(ext: np.ndarray, ext_true: np.ndarray) -> np.ndarray:
    """Angle between the estimated and the true rotation from view i to view j, for every pair i < j."""
    out = []
    for i in range(len(ext)):
        for j in range(i + 1, len(ext)):
            rel = ext[j, :, :3] @ ext[i, :, :3].T
            rel_true = ext_true[j, :, :3] @ ext_true[i, :, :3].T
            cos = (np.trace(rel @ rel_true.T) - 1.0) / 2.0
            out.append(np.degrees(np.arccos(np.clip(cos, -1.0, 1.0))))
    return np.array(out)


def test_refine_after_inference_keeps_the_feedforward_file_and_says_why(tmp_path):
    """The tiny model's random cameras give no inlier matches: the request still succeeds, with the
    feed-forward cameras and one warning naming the views."""
    request = {"images": [str(SCENE / f"view_{i:02d}.jpg") for i in VIEWS], "output": str(tmp_path / "out.npz"),
               "weights": str(write_tiny_checkpoint(tmp_path)), "config": str(TINY_CONFIG), "device": "cpu",
               "refine": {"max_features": 2048}}
    code, lines = _worker(request, tmp_path)
    assert code == protocol.EXIT_OK, lines[-1]
    kinds = [m["type"] for m in lines]
    assert kinds[-1] == "result" and "error" not in kinds
    stages = [m["stage"] for m in lines if m["type"] == "progress"]
    assert stages.index("refining") > stages.index("inference")  # refinement ran, after inference
    warnings = [m["message"] for m in lines if m["type"] == "warning"]
    why = [w for w in warnings if w.startswith("camera refinement")]
    assert len(why) == 1 and why[0].endswith("the feed-forward cameras are kept")
    # Random cameras leave views with a handful of chance inliers at most (or fail already at matching).
    assert "too few matches" in why[0] or (
        "could not refine two views" in why[0]
        and sum(f"view_{i:02d}: only " in why[0] for i in VIEWS) >= len(VIEWS) - 1)
    rec = load_reconstruction(lines[-1]["path"])
    assert "reprojection_error" not in rec.extra and "extrinsics_feedforward" not in rec.extra
    assert "refinement" not in rec.provenance_dict


def test_refine_request_refines_a_file_and_reports_the_solve_error(tmp_path):
    """A refine request run by LocalJob (no checkpoint needed): progress, a result whose file carries
    `reprojection_error`, cameras brought from feed-forward-like errors to the truth."""
    truth = np.load(SCENE / "truth.npz")
    ext_t, k_t = truth["extrinsics"][VIEWS], truth["intrinsics"][VIEWS]
    ext_p, k_p = gt.perturb_cameras(ext_t, k_t, seed=2)
    rec = gt.scene_reconstruction(SCENE, ext_p, k_p, views=VIEWS)
    save_reconstruction(tmp_path / "scene.npz", rec)
    job = LocalJob(sys.executable, protocol.make_refine_request(str(tmp_path / "scene.npz"),
                                                                str(tmp_path / "refined.npz"),
                                                                {"max_features": 2048}),
                   tmp_path / "refine.log", env={"OMP_NUM_THREADS": "1"})
    job.start()
    stages = set()
    while not job.finished:
        job.poll()
        stages.add(job.progress.stage)
        job.wait(0.05)
    assert job.state == "done", (job.error_code, job.error_message)
    assert {"refining", "writing"} <= stages
    [path] = job.fetch(tmp_path)
    assert path == tmp_path / "refined.npz"
    out = load_reconstruction(path)
    err = out.extra["reprojection_error"]
    assert err.shape == (len(VIEWS),) and np.all(np.isfinite(err)) and err.mean() <= 1.0
    # Three centres fix a similarity poorly: compare the relative rotations (free of the gauge) instead.
    assert _relative_rotation_deg(rec.extrinsics, ext_t).mean() > 1.0
    assert _relative_rotation_deg(out.extrinsics, ext_t).mean() <= 0.1
    assert gt.camera_errors(out.extrinsics, out.intrinsics, ext_t, k_t)["focal_pct"].max() <= 0.5
    summary = job.result["summary"]["refinement"]
    assert summary["refined_views"] == len(VIEWS) and summary["mean_error_px"] == pytest.approx(
        out.provenance_dict["refinement"]["mean_error_px"])
    assert load_reconstruction(tmp_path / "scene.npz").extra == rec.extra  # the input file is untouched


def test_refine_request_that_cannot_help_fails_cleanly(tmp_path):
    """Featureless photos: one `refine_failed` line naming the problem, nothing written."""
    from PIL import Image

    truth = np.load(SCENE / "truth.npz")
    photos = tmp_path / "photos"
    photos.mkdir()
    for i in VIEWS[:2]:
        Image.new("RGB", (640, 480), (90, 90, 90)).save(photos / f"view_{i:02d}.jpg")
    (photos / "truth.npz").write_bytes((SCENE / "truth.npz").read_bytes())
    rec = gt.scene_reconstruction(photos, truth["extrinsics"][VIEWS[:2]], truth["intrinsics"][VIEWS[:2]],
                                  views=VIEWS[:2])
    save_reconstruction(tmp_path / "scene.npz", rec)
    code, lines = _worker(protocol.make_refine_request(str(tmp_path / "scene.npz"), str(tmp_path / "out.npz")),
                          tmp_path)
    assert code == protocol.EXIT_ERROR
    assert lines[-1]["type"] == "error" and lines[-1]["code"] == "refine_failed"
    assert "too few matches" in lines[-1]["message"]
    assert not (tmp_path / "out.npz").exists()


def test_refine_requests_are_checked():
    ok = protocol.make_refine_request("/in.npz", "/out.npz")
    assert ok == {"type": "refine", "input": "/in.npz", "output": "/out.npz", "refine": True, "keep_alive": False}
    assert protocol.parse_request({"type": "refine", "input": "/a.npz", "output": "/b.npz",
                                   "refine": {"shared_intrinsics": True}})["refine"] == {"shared_intrinsics": True}
    for bad, match in (({"input": "/a.npz"}, "lacks output"),
                       ({"input": "/a.npz", "output": "/b.txt"}, "must name a .npz"),
                       ({"input": "/a.npz", "output": "/b.npz", "images": ["x"]}, "unknown refine request key"),
                       ({"input": "/a.npz", "output": "/b.npz", "refine": {"camera_model": "fisheye"}},
                        "camera model"),
                       ({"input": "/a.npz", "output": "/b.npz", "refine": False}, "nothing to do")):
        with pytest.raises(protocol.RequestError, match=match):
            protocol.parse_request({"type": "refine", **bad})
