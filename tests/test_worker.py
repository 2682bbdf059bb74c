"""`python -m vggt_blender.jobs.worker` and WorkerJob: real subprocesses, the JSON-lines protocol, cancellation."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.helpers import TINY_CONFIG, photo_pixels, write_photos, write_tiny_checkpoint
from vggt_blender.io.reconstruction import load_reconstruction
from vggt_blender.jobs.local import WorkerJob

ROOT = Path(__file__).resolve().parent.parent
STAGES = {"loading", "preprocessing", "inference", "writing"}


def worker_env(tmp: Path, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT)
    env["XDG_CACHE_HOME"] = str(tmp / "cache")
    env["OMP_NUM_THREADS"] = "1"
    env.pop("VGGT_WEIGHTS", None)
    env.update(extra)
    return env


def run_worker(stdin: str, tmp: Path, args: tuple[str, ...] = (), **extra: str) -> tuple[int, list[dict], str]:
    result = subprocess.run([sys.executable, "-m", "vggt_blender.jobs.worker", *args], input=stdin, capture_output=True,
                            text=True, env=worker_env(tmp, **extra), timeout=180, cwd=tmp)
    # Every stdout line is one JSON object: anything else would break the protocol.
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    return result.returncode, lines, result.stderr


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> dict:
    tmp = tmp_path_factory.mktemp("worker")
    photos = write_photos(tmp / "photos", count=3)
    rotated = tmp / "photos" / "rotated.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(photo_pixels(160, 120, 9)).save(rotated, quality=95, exif=exif)
    return {"tmp": tmp, "photos": [str(p) for p in photos], "rotated": str(rotated),
            "checkpoint": str(write_tiny_checkpoint(tmp))}


def request(setup: dict, output: Path, **more) -> dict:
    req = {"images": setup["photos"], "output": str(output), "weights": setup["checkpoint"], "device": "cpu",
           "precision": "auto", "mode": "crop", "config": str(TINY_CONFIG), "download": False}
    req.update(more)
    return req


def test_keep_alive_session_streams_json_lines_and_reuses_the_model(setup, tmp_path):
    first, second = tmp_path / "a.npz", tmp_path / "b.npz"
    stdin = (json.dumps(request(setup, first, keep_alive=True)) + "\n"
             + json.dumps(request(setup, second, images=setup["photos"][:2], mode="pad")) + "\n")
    code, lines, stderr = run_worker(stdin, tmp_path)
    assert code == 0, stderr
    results = [line for line in lines if line["type"] == "result"]
    assert [r["path"] for r in results] == [str(first), str(second)]
    assert results[0]["summary"]["images"] == 3 and results[1]["summary"]["model_size"] == [518, 518]
    assert not [line for line in lines if line["type"] == "error"]
    progress = [line for line in lines if line["type"] == "progress"]
    assert {p["stage"] for p in progress} == STAGES
    assert all(0.0 <= p["fraction"] <= 1.0 and isinstance(p["message"], str) for p in progress)
    loading_done = [p["message"] for p in progress if p["stage"] == "loading" and p["fraction"] == 1.0]
    assert loading_done == ["model loaded", "cached model"]
    assert load_reconstruction(first).num_images == 3
    assert load_reconstruction(second).provenance_dict["mode"] == "pad"


def test_request_file_and_error_codes(setup, tmp_path):
    out = tmp_path / "scene.npz"
    req_file = tmp_path / "request.json"
    req_file.write_text(json.dumps(request(setup, out, images=[setup["photos"][0]]), indent=2))
    code, lines, stderr = run_worker("", tmp_path, ("--request", str(req_file)))
    assert code == 0, stderr
    assert lines[-1]["type"] == "result" and out.is_file()

    # A request spread over several lines on stdin works too; a bad one is "bad_request".
    code, lines, _ = run_worker(json.dumps({"images": []}, indent=2), tmp_path)
    assert (code, lines) == (1, [{"type": "error", "code": "bad_request", "message": "the request lacks output",
                                  "file": None}])
    code, lines, _ = run_worker('{"images": ["a.jpg"], "output": "x.npz", "colour": 1}', tmp_path)
    assert code == 1 and lines[-1]["code"] == "bad_request" and "colour" in lines[-1]["message"]
    code, lines, _ = run_worker("not json", tmp_path)
    assert code == 1 and lines[-1]["code"] == "bad_request"

    # No checkpoint anywhere: "no_weights", with the instructions.
    code, lines, _ = run_worker(json.dumps(request(setup, out, weights=None)), tmp_path)
    assert code == 1 and lines[-1]["code"] == "no_weights"
    assert "python -m vggt_blender download" in lines[-1]["message"]

    # An unreadable photo: "bad_image" naming the file; nothing written.
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n broken")
    out2 = tmp_path / "never.npz"
    code, lines, _ = run_worker(json.dumps(request(setup, out2, images=[setup["photos"][0], str(bad)])), tmp_path)
    assert code == 1 and lines[-1]["code"] == "bad_image" and lines[-1]["file"] == str(bad)
    assert str(bad) in lines[-1]["message"] and not out2.exists()


def test_out_of_memory_is_reported_with_advice(setup, tmp_path):
    out = tmp_path / "scene.npz"
    code, lines, _ = run_worker(json.dumps(request(setup, out)), tmp_path, VGGT_BLENDER_TEST_FAULT="oom")
    assert code == 1
    error = lines[-1]
    assert error["type"] == "error" and error["code"] == "out_of_memory"
    assert "3 image(s)" in error["message"] and "use fewer images" in error["message"]
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_sigterm_while_writing_leaves_nothing(setup, tmp_path):
    out = tmp_path / "scene.npz"
    req = request(setup, out, images=setup["photos"] + [setup["rotated"]])
    proc = subprocess.Popen([sys.executable, "-m", "vggt_blender.jobs.worker"], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path,
                            env=worker_env(tmp_path, VGGT_BLENDER_TEST_DELAY="1.0"))
    proc.stdin.write(json.dumps(req) + "\n")
    proc.stdin.close()
    seen = []
    for line in proc.stdout:
        seen.append(json.loads(line))
        # The upright copy of the rotated photo exists by now; the worker sleeps in its progress callback.
        if seen[-1]["type"] == "progress" and seen[-1]["stage"] == "writing":
            assert (tmp_path / "scene_images").is_dir()
            proc.send_signal(signal.SIGTERM)
            break
    rest = [json.loads(line) for line in proc.stdout]
    assert proc.wait(60) == 130
    assert rest[-1] == {"type": "error", "code": "cancelled", "message": "cancelled", "file": None}
    assert list(tmp_path.iterdir()) == []  # no npz, no temporary file, no display folder


def test_worker_job_runs_and_logs(setup, tmp_path):
    out = tmp_path / "scene.npz"
    job = WorkerJob(sys.executable, request(setup, out), tmp_path / "logs" / "run.log",
                    env={"XDG_CACHE_HOME": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"})
    job.start()
    messages = []
    deadline = time.monotonic() + 180
    while not job.done and time.monotonic() < deadline:
        messages += job.poll()  # never blocks
        time.sleep(0.05)
    messages += job.poll()
    assert job.returncode == 0
    assert messages[-1]["type"] == "result" and messages[-1]["path"] == str(out)
    assert {m["stage"] for m in messages if m["type"] == "progress"} == STAGES
    log = (tmp_path / "logs" / "run.log").read_text()
    assert '"type": "result"' in log and "# exit code 0" in log
    rec = load_reconstruction(out)
    assert np.isfinite(rec.world_points).all()


def test_worker_job_cancel(setup, tmp_path):
    out = tmp_path / "scene.npz"
    job = WorkerJob(sys.executable, request(setup, out), tmp_path / "run.log",
                    env={"XDG_CACHE_HOME": str(tmp_path / "cache"), "VGGT_BLENDER_TEST_DELAY": "0.5"})
    job.start()
    messages = []
    deadline = time.monotonic() + 120
    while not any(m["type"] == "progress" for m in messages) and time.monotonic() < deadline:
        messages += job.poll()
        time.sleep(0.02)
    started = time.monotonic()
    job.cancel(kill_after=20)
    assert time.monotonic() - started < 1.0  # cancel() does not block the caller (Blender's UI)
    assert job.wait(60) == 130 and job.done and job.cancelled
    messages += job.poll()
    assert messages[-1]["code"] == "cancelled"
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["run.log"]
    log = (tmp_path / "run.log").read_text()
    assert "# cancel requested" in log and log.endswith("# exit code 130\n")  # cancel() closed the log


def test_end_of_stdin_cancels_a_one_shot_run(setup, tmp_path):
    # The parent (Blender) holds stdin open; when it dies, stdin ends and the worker cancels itself.
    out = tmp_path / "scene.npz"
    proc = subprocess.Popen([sys.executable, "-m", "vggt_blender.jobs.worker", "--cancel-on-eof"], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=tmp_path,
                            env=worker_env(tmp_path, VGGT_BLENDER_TEST_DELAY="0.5"))
    proc.stdin.write(json.dumps(request(setup, out)) + "\n")
    proc.stdin.flush()
    first = json.loads(proc.stdout.readline())
    assert first["type"] == "progress"
    proc.stdin.close()
    rest = [json.loads(line) for line in proc.stdout]
    assert proc.wait(60) == 130
    assert rest[-1]["code"] == "cancelled" and not out.exists()
    assert list(tmp_path.iterdir()) == []


def test_protocol_lines_are_ascii_even_for_undecodable_paths():
    import io

    from vggt_blender.jobs.worker import Emitter

    stream = io.StringIO()
    Emitter(stream).error("bad_image", "cannot open /photos/caf\udce9.jpg", "/photos/caf\udce9.jpg")
    line = stream.getvalue()
    assert line.isascii() and line.encode("utf-8")  # no lone surrogate reaches the UTF-8 stream
    assert json.loads(line)["file"] == "/photos/caf\udce9.jpg"


def test_worker_job_hard_kill_cleans_up_and_closes_the_log(tmp_path):
    # A stand-in "python" that ignores SIGTERM after leaving a temporary file and a display folder behind,
    # as a worker stuck in native code would: the client kills it and removes what this run created.
    if os.name != "posix":
        pytest.skip("uses a shell script as the runtime Python")
    out = tmp_path / "out" / "scene.npz"
    out.parent.mkdir()
    (out.parent / ".vggt_tmp_older.npz").write_bytes(b"not ours")
    fake = tmp_path / "fakepython"
    fake.write_text("#!/bin/sh\ntrap '' TERM\n"
                    f"touch '{out.parent}/.vggt_tmp_abc.npz'\nmkdir '{out.parent}/scene_images'\n"
                    'echo \'{"type": "progress", "stage": "loading", "fraction": 0, "message": ""}\'\n'
                    "exec sleep 30\n")  # exec: the kill hits the sleeper itself, no orphan keeps the pipes
    fake.chmod(0o755)
    job = WorkerJob(str(fake), {"images": ["x.jpg"], "output": str(out)}, tmp_path / "run.log")
    job.start()
    deadline = time.monotonic() + 20
    messages = []
    while not messages and time.monotonic() < deadline:
        messages += job.poll()
        time.sleep(0.02)
    job.cancel(kill_after=0.5)
    assert job.wait(20) is not None and job.done
    assert sorted(p.name for p in out.parent.iterdir()) == [".vggt_tmp_older.npz"]
    assert job._log is None  # closed
    log = (tmp_path / "run.log").read_text()
    assert "# removed after the kill" in log and "# exit code" in log
