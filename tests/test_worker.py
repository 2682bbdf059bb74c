"""`python -m vggt_blender.jobs.worker` and LocalJob: real subprocesses, the JSON-lines protocol, cancellation.

Faults (out of memory, a slow stage) come from tests/worker_hooks/sitecustomize.py on the worker's PYTHONPATH:
the package has no test hooks of its own."""

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
from vggt_blender.jobs import protocol
from vggt_blender.jobs.local import LocalJob, close_shared_worker

ROOT = Path(__file__).resolve().parent.parent
HOOKS = Path(__file__).resolve().parent / "worker_hooks"
STAGES = {"loading", "preprocessing", "inference", "writing"}


def worker_env(tmp: Path, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + str(HOOKS)
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



def run_worker_bytes(stdin: bytes, tmp: Path, **extra: str) -> tuple[int, list[dict]]:
    result = subprocess.run([sys.executable, "-m", "vggt_blender.jobs.worker"], input=stdin, capture_output=True,
                            env=worker_env(tmp, **extra), timeout=180, cwd=tmp)
    assert b"Traceback" not in result.stderr, result.stderr.decode()[-2000:]
    return result.returncode, [json.loads(line) for line in result.stdout.splitlines()]


def start_worker(tmp: Path, *args: str, **extra: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "vggt_blender.jobs.worker", *args], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp,
                            env=worker_env(tmp, **extra))


def send(proc: subprocess.Popen, message: dict) -> None:
    proc.stdin.write(json.dumps(message) + "\n")
    proc.stdin.flush()


def read_until(proc: subprocess.Popen, predicate) -> list[dict]:
    seen = []
    for line in proc.stdout:
        seen.append(json.loads(line))
        if predicate(seen[-1]):
            return seen
    raise AssertionError(f"the worker ended first: {seen}")


def job_env(tmp: Path, **extra: str) -> dict[str, str]:
    return {"XDG_CACHE_HOME": str(tmp / "cache"), "OMP_NUM_THREADS": "1",
            "PYTHONPATH": str(HOOKS), **extra}


def test_keep_alive_session_streams_json_lines_and_reuses_the_model(setup, tmp_path):
    first, second = tmp_path / "a.npz", tmp_path / "b.npz"
    stdin = (json.dumps(request(setup, first, keep_alive=True, images=setup["photos"] + [setup["rotated"]])) + "\n"
             + json.dumps(request(setup, second, images=setup["photos"][:2], mode="pad")) + "\n")
    code, lines, stderr = run_worker(stdin, tmp_path)
    assert code == 0, stderr
    results = [line for line in lines if line["type"] == "result"]
    assert [r["path"] for r in results] == [str(first), str(second)]
    # The result names everything the run wrote: the file, then the folder of upright copies.
    assert results[0]["files"][0] == str(first) and Path(results[0]["files"][1]).parent == tmp_path / "a_images"
    assert sorted(p.name for p in Path(results[0]["files"][1]).iterdir()) == ["rotated.jpg"]
    assert results[1]["files"] == [str(second)]
    assert results[0]["summary"]["images"] == 4 and results[1]["summary"]["model_size"] == [518, 518]
    assert not [line for line in lines if line["type"] == "error"]
    progress = [line for line in lines if line["type"] == "progress"]
    assert {p["stage"] for p in progress} == STAGES
    assert all(0.0 <= p["fraction"] <= 1.0 and isinstance(p["message"], str) for p in progress)
    loading_done = [p["message"] for p in progress if p["stage"] == "loading" and p["fraction"] == 1.0]
    assert loading_done == ["model loaded", "cached model"]
    assert load_reconstruction(first).num_images == 4
    assert load_reconstruction(second).provenance_dict["mode"] == "pad"


def test_request_file_and_error_codes(setup, tmp_path):
    # A 200-character output name works (the companion folder's name stays under 255 bytes)...
    out = tmp_path / ("n" * 196 + ".npz")
    req_file = tmp_path / "request.json"
    req_file.write_text(json.dumps(request(setup, out, images=[setup["photos"][0]]), indent=2))
    code, lines, stderr = run_worker("", tmp_path, ("--request", str(req_file)))
    assert code == 0, stderr
    assert lines[-1]["type"] == "result" and lines[-1]["files"] == [str(out)] and out.is_file()
    # ...a 300-character one is a bad request at once, not an "internal" error after the inference.
    long_out = str(tmp_path / ("n" * 296 + ".npz"))
    code, lines, _ = run_worker(json.dumps(request(setup, long_out)), tmp_path)
    assert code == 1 and lines == [{"type": "error", "code": "bad_request", "file": long_out,
                                    "message": "'output' has a file name of 300 characters; at most 248 are "
                                               "allowed"}]

    # A request spread over several lines on stdin works too; a bad one is "bad_request".
    code, lines, _ = run_worker(json.dumps({"images": []}, indent=2), tmp_path)
    assert (code, lines) == (1, [{"type": "error", "code": "bad_request", "message": "the request lacks output",
                                  "file": None}])
    code, lines, _ = run_worker('{"images": ["a.jpg"], "output": "x.npz", "colour": 1}', tmp_path)
    assert code == 1 and lines[-1]["code"] == "bad_request" and "colour" in lines[-1]["message"]
    code, lines, _ = run_worker(json.dumps(request(setup, out, precision="fp8")), tmp_path)
    assert code == 1 and lines[-1]["message"] == "'precision' must be one of auto, bf16, fp16, fp32, int8, not 'fp8'"
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


def test_hostile_input_gets_one_protocol_error_line(tmp_path):
    # Invalid UTF-8 and 100,000-deep nesting: one bad_request line each, no traceback (checked on stderr).
    code, lines = run_worker_bytes(b'{"images": ["caf\xe9.jpg"], "output": "x.npz"}\n', tmp_path)
    assert code == 1 and lines == [{"type": "error", "code": "bad_request", "file": None,
                                    "message": "the message is not valid UTF-8 (byte 16)"}]
    code, lines = run_worker_bytes(b"[" * 100_000 + b"]" * 100_000 + b"\n", tmp_path)
    assert code == 1 and lines == [{"type": "error", "code": "bad_request", "file": None,
                                    "message": f"the message nests deeper than {protocol.MAX_DEPTH} levels"}]
    code, lines = run_worker_bytes(b"", tmp_path)
    assert code == 1 and lines[-1]["message"] == "no request on stdin"


def test_protocol_decoding_and_requests():
    assert protocol.decode('{"a": "[[["}') == {"a": "[[["}  # brackets inside strings do not count
    assert protocol.decode_event(b"\xff not json") == {"type": "log", "message": "\ufffd not json"}
    assert protocol.decode_event('{"type": "nonsense"}')["type"] == "log"
    req = protocol.make_request(["a.jpg"], "/out/x.npz", device="cuda:1")
    assert req["device"] == "cuda:1" and req["keep_alive"] is False and req["config"] is None and req["model"] is None
    for bad, words in (({"device": "tpu"}, "'device' must be one of auto, cuda, mps, cpu or cuda:N"),
                       ({"mode": "stretch"}, "'mode' must be one of crop, pad"),
                       ({"download": "yes"}, "'download' must be true or false")):
        with pytest.raises(protocol.RequestError, match=words):
            protocol.make_request(["a.jpg"], "x.npz", **bad)
    with pytest.raises(protocol.RequestError, match="must name a .npz file"):
        protocol.make_request(["a.jpg"], "x.ply")
    # Every error code is an error class's own; an unknown one is sent as "internal".
    assert {"no_weights", "bad_image", "out_of_memory", "cancelled", "bad_request", "download_failed",
            "no_runtime", "internal"} <= set(protocol.ERROR_CODES)
    assert protocol.error("made_up", "x")["code"] == "internal"


def test_out_of_memory_is_reported_with_advice(setup, tmp_path):
    out = tmp_path / "scene.npz"
    code, lines, _ = run_worker(json.dumps(request(setup, out)), tmp_path, VGGT_TEST_FAULT="oom")
    assert code == 1
    error = lines[-1]
    assert error["type"] == "error" and error["code"] == "out_of_memory"
    assert "3 image(s)" in error["message"] and "use fewer images" in error["message"]
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_sigterm_while_writing_leaves_nothing(setup, tmp_path):
    out = tmp_path / "scene.npz"
    req = request(setup, out, images=setup["photos"] + [setup["rotated"]])
    proc = start_worker(tmp_path, VGGT_TEST_DELAY="1.0")
    send(proc, req)
    proc.stdin.close()
    # The upright copy of the rotated photo exists by now; the worker sleeps after its progress report.
    read_until(proc, lambda m: m["type"] == "progress" and m["stage"] == "writing")
    assert (tmp_path / "scene_images").is_dir()
    proc.send_signal(signal.SIGTERM)
    rest = [json.loads(line) for line in proc.stdout]
    assert proc.wait(60) == 130
    assert rest[-1] == {"type": "error", "code": "cancelled", "message": "cancelled", "file": None}
    assert list(tmp_path.iterdir()) == []  # no npz, no temporary file, no display folder


def test_cancel_message_stops_a_one_shot_run(setup, tmp_path):
    out = tmp_path / "scene.npz"
    proc = start_worker(tmp_path, "--cancel-on-eof", VGGT_TEST_DELAY="0.5")
    send(proc, request(setup, out, images=setup["photos"] + [setup["rotated"]]))
    read_until(proc, lambda m: m["type"] == "progress" and m["stage"] == "loading")
    send(proc, protocol.cancel())
    rest = [json.loads(line) for line in proc.stdout]
    assert proc.wait(60) == 130, proc.stderr.read()[-2000:]
    assert rest[-1]["code"] == "cancelled" and list(tmp_path.iterdir()) == []


def test_cancel_in_keep_alive_mode_keeps_the_worker_and_its_model(setup, tmp_path):
    proc = start_worker(tmp_path, "--cancel-on-eof", VGGT_TEST_DELAY="0.3")
    send(proc, request(setup, tmp_path / "a.npz", keep_alive=True))
    read_until(proc, lambda m: m["type"] == "result")
    send(proc, request(setup, tmp_path / "b.npz", images=setup["photos"] + [setup["rotated"]]))
    read_until(proc, lambda m: m["type"] == "progress" and m["stage"] == "inference")
    send(proc, protocol.cancel())
    cancelled = read_until(proc, lambda m: m["type"] == "error")
    assert cancelled[-1]["code"] == "cancelled" and proc.poll() is None  # the session goes on
    send(proc, protocol.cancel())  # a late cancel (nothing runs) does not touch the next request
    send(proc, request(setup, tmp_path / "c.npz", images=setup["photos"][:2]))
    third = read_until(proc, lambda m: m["type"] in ("result", "error"))
    assert third[-1]["type"] == "result", third[-1]
    assert [m["message"] for m in third if m["type"] == "progress" and m["stage"] == "loading"
            and m["fraction"] == 1.0] == ["cached model"]
    proc.stdin.close()
    assert proc.wait(60) == 1  # one request of the session did not succeed
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.npz", "c.npz"]


def poll_until(job, predicate, timeout: float = 120) -> list[dict]:
    messages = []
    deadline = time.monotonic() + timeout
    while not predicate(messages) and time.monotonic() < deadline:
        messages += job.poll()  # never blocks
        time.sleep(0.02)
    return messages


def test_local_job_runs_logs_and_fetches(setup, tmp_path):
    out = tmp_path / "run" / "scene.npz"
    job = LocalJob(sys.executable, request(setup, out, images=setup["photos"] + [setup["rotated"]]),
                   tmp_path / "logs" / "run.log", env=job_env(tmp_path))
    job.start()
    assert job.state == "running"
    messages = poll_until(job, lambda _m: job.finished)
    assert job.state == "done" and job.error_code is None
    assert messages[-1]["type"] == "result" and job.result["path"] == str(out)
    assert {m["stage"] for m in messages if m["type"] == "progress"} == STAGES
    assert job.progress.stage == "writing" and job.progress.fraction == 1.0
    # fetch: where the files are already, nothing moves; elsewhere, they are copied.
    run_folder = Path(job.result["files"][1])
    assert run_folder.parent == out.parent / "scene_images"
    assert job.fetch(out.parent) == [out, run_folder]
    copies = job.fetch(tmp_path / "elsewhere")
    assert copies == [tmp_path / "elsewhere" / "scene.npz", tmp_path / "elsewhere" / "scene_images" / run_folder.name]
    assert (copies[1] / "rotated.jpg").is_file()
    assert job.join(60) and job.returncode == 0
    log = (tmp_path / "logs" / "run.log").read_text()
    assert '"type": "result"' in log and log.endswith("# exit code 0\n")
    rec = load_reconstruction(out)
    assert np.isfinite(rec.world_points).all()


def test_local_job_start_checks_the_runtime_and_the_weights(setup, tmp_path):
    cases = ((None, setup["checkpoint"], "no_runtime", "no inference runtime"),
             (str(tmp_path / "nopython"), setup["checkpoint"], "no_runtime", "the runtime Python does not exist"),
             (sys.executable, str(tmp_path / "none.pt"), "no_weights", "the weights file given by --weights"))
    for python, weights, code, words in cases:
        job = LocalJob(python, request(setup, tmp_path / "x.npz", weights=weights), tmp_path / "x.log")
        job.start()
        assert (job.state, job.error_code) == ("failed", code) and words in job.error_message
        assert job.poll() == [protocol.error(code, job.error_message, job.error_file)]
        assert job.worker is None and not (tmp_path / "x.log").exists()  # no process was started
    job = LocalJob(sys.executable, {"images": [], "output": "x.npz"}, tmp_path / "x.log")
    job.start()
    assert job.error_code == "bad_request" and job.error_message == "'images' is empty"


def test_local_job_cancel(setup, tmp_path):
    out = tmp_path / "scene.npz"
    job = LocalJob(sys.executable, request(setup, out), tmp_path / "run.log",
                   env=job_env(tmp_path, VGGT_TEST_DELAY="0.5"), cancel_timeout=20)
    job.start()
    poll_until(job, lambda m: any(x["type"] == "progress" for x in m))
    started = time.monotonic()
    job.cancel()
    assert time.monotonic() - started < 1.0  # cancel() does not block the caller (Blender's UI)
    assert job.wait(60) == "cancelled" and job.error_code is None
    assert job.join(60) and job.returncode == 130  # the message did it: no signal was needed
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["run.log"]
    log = (tmp_path / "run.log").read_text()
    assert "# cancel requested" in log and "no answer to the cancel" not in log
    assert log.endswith("# exit code 130\n")


def test_local_jobs_share_one_keep_alive_worker_and_cancel_there(setup, tmp_path):
    env = job_env(tmp_path, VGGT_TEST_DELAY="0.2")
    try:
        jobs = []
        for name, images in (("a", setup["photos"]), ("b", setup["photos"][:2]), ("c", setup["photos"]),
                             ("d", setup["photos"][:2])):
            job = LocalJob(sys.executable, request(setup, tmp_path / f"{name}.npz", images=images),
                           tmp_path / f"{name}.log", env=env, keep_alive=True, cancel_timeout=30)
            job.start()
            if name == "c":
                poll_until(job, lambda _m: job.progress.stage == "inference")
                job.cancel()
            assert job.wait(120) == ("cancelled" if name == "c" else "done"), job.error_message
            assert job.join(30)
            jobs.append(job)
        assert len({job.worker.process.pid for job in jobs}) == 1 and jobs[0].worker.alive
        assert sorted(p.name for p in tmp_path.glob("*.npz")) == ["a.npz", "b.npz", "d.npz"]
        loaded = [(tmp_path / f"{n}.log").read_text().count('"cached model"') for n in "abd"]
        assert loaded == [0, 1, 1]
        assert "# request finished" in (tmp_path / "c.log").read_text()
    finally:
        close_shared_worker()


def test_end_of_stdin_cancels_a_one_shot_run(setup, tmp_path):
    # The parent (Blender) holds stdin open; when it dies, stdin ends and the worker cancels itself.
    out = tmp_path / "scene.npz"
    proc = start_worker(tmp_path, "--cancel-on-eof", VGGT_TEST_DELAY="0.5")
    send(proc, request(setup, out))
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


def test_local_job_hard_kill_cleans_up_and_closes_the_log(setup, tmp_path):
    # A stand-in "python" that ignores the cancel line and SIGTERM after leaving a temporary file and a display
    # folder behind, as a worker stuck in native code would: the client kills it and removes what it created.
    if os.name != "posix":
        pytest.skip("uses a shell script as the runtime Python")
    out = tmp_path / "out" / "scene.npz"
    out.parent.mkdir()
    (out.parent / ".vggt_tmp_older.npz").write_bytes(b"not ours")
    fake = tmp_path / "fakepython"
    # Its own temporary names carry its process id ($$: the sleeper it becomes); `.vggt_tmp_1_...` stands for
    # another process's temporary file appearing in the same folder meanwhile: it must stay.
    fake.write_text("#!/bin/sh\ntrap '' TERM\n"
                    f"touch '{out.parent}/.vggt_tmp_'$$'_abc.npz' '{out.parent}/.vggt_tmp_1_other.npz'\n"
                    f"mkdir -p '{out.parent}/scene_images/.vggt_tmp_'$$'_run' "
                    f"'{out.parent}/scene_images/20260101-000000-p'$$'-abcdef'\n"
                    'echo \'{"type": "progress", "stage": "loading", "fraction": 0, "message": ""}\'\n'
                    "exec sleep 30\n")  # exec: the kill hits the sleeper itself, no orphan keeps the pipes
    fake.chmod(0o755)
    job = LocalJob(str(fake), {"images": ["x.jpg"], "output": str(out), "weights": setup["checkpoint"]},
                   tmp_path / "run.log", cancel_timeout=0.3, kill_timeout=0.5)
    job.start()
    poll_until(job, lambda m: bool(m), timeout=20)
    job.cancel()
    assert job.wait(20) == "cancelled" and job.join(20)
    assert sorted(p.name for p in out.parent.iterdir()) == [".vggt_tmp_1_other.npz", ".vggt_tmp_older.npz"]
    log = (tmp_path / "run.log").read_text()
    assert "no answer to the cancel" in log and "# removed after the kill" in log and "# exit code -9" in log


@pytest.mark.skipif(not hasattr(signal, "pthread_sigmask"), reason="POSIX signal masks")
@pytest.mark.parametrize("module, handler_setup, caught", [
    ("vggt_blender.jobs.worker", "worker._install_signal_handlers()", "worker.Cancelled"),
    ("vggt_blender.cli", "cm = worker._terminating_signals_clean_up(); cm.__enter__()", "BaseException"),
])
def test_two_signals_at_once_print_nothing_after_the_unwinding(module, handler_setup, caught):
    """Issue 9 §2.9: SIGINT and SIGTERM pending together (a cancel during the write, then the client's SIGTERM):
    the first handler used to set the other to SIG_IGN and Python then printed "Signal 15 ignored due to race
    condition" once the first one had unwound."""
    script = f"""if 1:
        import os, signal, sys, time
        import {module} as worker
        {handler_setup}
        both = {{signal.SIGINT, signal.SIGTERM}}
        signal.pthread_sigmask(signal.SIG_BLOCK, both)
        os.kill(os.getpid(), signal.SIGINT)
        os.kill(os.getpid(), signal.SIGTERM)
        try:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, both)  # both handlers are now due
            time.sleep(1)
        except {caught}:
            pass
        for _ in range(1000):
            time.sleep(0)  # the other pending signal is handled here
        print("unwound")
    """
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60,
                          cwd=Path(__file__).resolve().parent.parent)
    assert done.returncode == 0 and done.stdout == "unwound\n", done.stderr
    assert done.stderr == ""
