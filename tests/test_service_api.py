"""The reconstruction service over real HTTP on 127.0.0.1: a `serve` process with a tiny checkpoint."""

from __future__ import annotations

import json
import os
import socket
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.service_helpers import TINY_CONFIG, TOKEN, Server, call, follow, multipart, submit, wait_for
from tests.helpers import photo_pixels, write_photos, write_tiny_checkpoint
from vggt_blender.io.reconstruction import load_reconstruction  # noqa: E402
from vggt_blender.jobs.remote import RemoteJob  # noqa: E402

MAX_PHOTOS = 3
MAX_UPLOAD_MB = 1


def prepare(tmp: Path, *extra: str, **server_options) -> dict:
    """Photos (one of them EXIF-rotated), a tiny checkpoint and a ready server with this module's limits."""
    photos = write_photos(tmp / "photos", count=3)
    rotated = tmp / "photos" / "rotated.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # shown rotated by 90 degrees: the upright copy is 120 x 160
    Image.fromarray(photo_pixels(160, 120, 9)).save(rotated, quality=95, exif=exif)
    checkpoint = write_tiny_checkpoint(tmp)
    server = Server(tmp / "data", checkpoint, "--max-photos", str(MAX_PHOTOS), "--max-upload-mb",
                    str(MAX_UPLOAD_MB), "--max-queue", "4", *extra, **server_options)
    try:
        assert server.wait_ready(300)["status"] == "ready", server.lines
    except BaseException:
        server.stop()
        raise
    return {"tmp": tmp, "photos": photos, "rotated": rotated, "checkpoint": checkpoint, "server": server}


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    prepared = prepare(tmp_path_factory.mktemp("service"))
    yield prepared
    prepared["server"].stop()


def photo_bytes(setup, index: int = 0) -> bytes:
    return Path(setup["photos"][index]).read_bytes()


def data_entries(server: Server, folder: str) -> list[str]:
    return sorted(os.listdir(server.data_dir / folder))


def test_health_is_open_and_everything_else_needs_the_token(setup):
    server = setup["server"]
    status, health = call(server, "GET", "/v1/health", auth=False)
    assert status == 200
    assert (health["status"], health["model"], health["device"], health["auth"]) == \
        ("ready", str(TINY_CONFIG), "cpu", True)
    assert health["limits"]["max_photos"] == MAX_PHOTOS
    for auth in (False, "wrong-token-0123456789abcdef", TOKEN + "x"):
        status, body = call(server, "GET", "/v1/auth", auth=auth)
        assert status == 401 and body["error"]["code"] == "unauthorized", body
        status, body = submit(server, [("a.png", photo_bytes(setup))], {}, auth=auth)
        assert status == 401 and body["error"]["code"] == "unauthorized", body
    assert call(server, "GET", "/v1/auth") == (200, {"ok": True, "auth": True})
    assert data_entries(server, "queue") == [] and data_entries(server, "uploads") == []
    status, body = call(server, "GET", "/v1/jobs/0123456789abcdef0123456789abcd")
    assert status == 404 and body["error"]["code"] == "not_found"
    status, body = call(server, "GET", "/v1/jobs/..%2F..%2Fetc")
    assert status == 404 and body["error"]["code"] == "not_found"
    status, document = call(server, "GET", "/v1/openapi.json", auth=False)
    assert status == 200 and {"/v1/health", "/v1/jobs", "/v1/jobs/{job_id}", "/v1/jobs/{job_id}/events",
                              "/v1/jobs/{job_id}/result"} <= set(document["paths"])


def read_events(server: Server, job_id: str, into: list[dict]) -> None:
    """The job's server-sent events, parsed, until the stream ends."""
    connection = socket.create_connection(("127.0.0.1", server.port), timeout=120)
    connection.sendall(f"GET /v1/jobs/{job_id}/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n"
                       "Connection: close\r\n\r\n".encode())
    data = b""
    while chunk := connection.recv(65536):
        data += chunk
    connection.close()
    head, _, body = data.partition(b"\r\n\r\n")
    assert b" 200 " in head.split(b"\r\n")[0] and b"text/event-stream" in head
    for line in body.decode().splitlines():
        if line.startswith("data: "):
            into.append(json.loads(line[6:]))


def test_a_whole_job_gives_the_local_engine_numbers_with_client_paths(setup):
    server = setup["server"]
    photos = setup["photos"][:2]
    client_paths = ["/home/artist/shoot/view_0.png", "/home/artist/shoot/view_1.png"]
    status, accepted = submit(server, [(Path(p).name, Path(p).read_bytes()) for p in photos],
                              {"mode": "crop", "precision": "fp32", "images": client_paths,
                               "output": "/home/artist/shoot/scene.npz"})
    assert status == 202, accepted
    job_id = accepted["id"]
    assert accepted["urls"]["result"] == f"/v1/jobs/{job_id}/result"
    events: list[dict] = []
    reader = threading.Thread(target=read_events, args=(server, job_id, events))
    reader.start()
    status, body = call(server, "GET", f"/v1/jobs/{job_id}/result")
    assert status == 409 and body["error"]["code"] == "not_done"  # a 2-photo job takes seconds
    done = wait_for(server, job_id)
    reader.join(120)
    assert done["state"] == "done", done
    assert [f["save_as"] for f in done["result"]["files"]] == ["scene.npz"]
    # The event stream: the same statuses, versions rising, stages in the worker's order, ending done.
    assert events and events[-1]["state"] == "done"
    assert [e["version"] for e in events] == sorted(set(e["version"] for e in events))
    stages = [e["stage"] for e in events if e["state"] == "running"]
    order = ["starting", "preprocessing", "loading", "inference", "writing"]
    assert [s for s in order if s in stages] == [s for s in dict.fromkeys(stages)], stages
    assert "inference" in stages

    status, raw = call(server, "GET", f"/v1/jobs/{job_id}/result")
    assert status == 200
    result = setup["tmp"] / "served.npz"
    result.write_bytes(raw["_raw"])
    rec = load_reconstruction(result)
    assert rec.image_paths == client_paths and rec.display_paths == client_paths
    assert rec.image_names == ["view_0", "view_1"]
    # The same photos through the engine here give the same cameras and depth.
    from vggt_blender.engine import inference

    local = inference.reconstruct([str(p) for p in photos], weights=str(setup["checkpoint"]),
                                  config=str(TINY_CONFIG), device="cpu", precision="fp32")
    np.testing.assert_allclose(rec.extrinsics, local.extrinsics, atol=1e-4)
    np.testing.assert_allclose(rec.intrinsics, local.intrinsics, rtol=1e-4)
    np.testing.assert_allclose(rec.depth, local.depth, rtol=1e-3, atol=1e-4)
    # Nothing of the server's own paths leaks into what the client sees.
    assert str(server.data_dir) not in json.dumps(done)


def test_two_clients_at_once_run_one_at_a_time_in_arrival_order(setup):
    server = setup["server"]
    answers: dict[int, tuple[int, dict]] = {}
    barrier = threading.Barrier(2)

    def client(index: int) -> None:
        barrier.wait()
        answers[index] = submit(server, [(f"client{index}.png", photo_bytes(setup, index))], {"mode": "pad"})

    threads = [threading.Thread(target=client, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert [answers[i][0] for i in range(2)] == [202, 202], answers
    ids = sorted(answers[i][1]["id"] for i in range(2))  # ids sort in arrival order
    finals = [wait_for(server, job_id) for job_id in ids]
    assert [f["state"] for f in finals] == ["done", "done"], finals
    if server.replicas == 1:  # one device: never both at once, and in arrival order
        assert finals[0]["runner"] == finals[1]["runner"]
        assert finals[0]["started"] <= finals[0]["finished"] <= finals[1]["started"]
    else:  # one runner per replica: the two jobs went to two of them
        assert finals[0]["runner"] != finals[1]["runner"], finals
    for index, final in enumerate(finals):
        status, raw = call(server, "GET", f"/v1/jobs/{final['id']}/result")
        assert status == 200
        path = setup["tmp"] / f"client{index}.npz"
        path.write_bytes(raw["_raw"])
        rec = load_reconstruction(path)
        assert rec.num_images == 1 and rec.provenance_dict["mode"] == "pad"
        assert rec.image_names == [final["photos"][0].rsplit(".", 1)[0]]


def read_answer(connection: socket.socket, answer: bytes = b"") -> bytes:
    """An HTTP answer's head and body (by its Content-Length), or what came before the connection closed."""
    connection.settimeout(10)
    try:
        while True:
            head, sep, body = answer.partition(b"\r\n\r\n")
            if sep:
                length = next((int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                               if line.lower().startswith(b"content-length:")), 0)
                if len(body) >= length:
                    return answer
            more = connection.recv(65536)
            if not more:
                return answer
            answer += more
    except OSError:
        return answer


def test_upload_limits_are_checked_while_the_body_arrives(setup):
    server = setup["server"]
    # Declared too large: refused before the body.
    body, headers = multipart([("a.png", photo_bytes(setup))], {})
    headers["Content-Length"] = str(MAX_UPLOAD_MB * 2**20 + 1)
    connection = socket.create_connection(("127.0.0.1", server.port), timeout=30)
    head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    connection.sendall(f"POST /v1/jobs HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n{head}\r\n".encode())
    answer = read_answer(connection)
    connection.close()
    assert b" 413 " in answer.split(b"\r\n")[0] and b'"too_large"' in answer

    # Chunked, no length: the answer comes once the limit is passed, while the client still has more to send.
    connection = socket.create_connection(("127.0.0.1", server.port), timeout=30)
    connection.sendall(f"POST /v1/jobs HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n"
                       f"Content-Type: multipart/form-data; boundary=b0undary\r\n"
                       "Transfer-Encoding: chunked\r\n\r\n".encode())
    start = b'--b0undary\r\nContent-Disposition: form-data; name="photos"; filename="big.png"\r\n\r\n'
    connection.sendall(f"{len(start):x}\r\n".encode() + start + b"\r\n")
    block = b"\0" * 65536
    sent = 0
    answer = b""
    connection.settimeout(0.05)
    while sent < 4 * MAX_UPLOAD_MB * 2**20:  # four times the limit at most
        try:
            connection.sendall(f"{len(block):x}\r\n".encode() + block + b"\r\n")
        except OSError:
            break  # the server closed the connection after answering
        sent += len(block)
        try:
            answer += connection.recv(65536)
        except socket.timeout:
            continue
        if answer:
            break
    answer = read_answer(connection, answer)
    connection.close()
    assert b" 413 " in answer.split(b"\r\n")[0], answer[:200]
    assert sent < 2 * MAX_UPLOAD_MB * 2**20  # answered soon after the limit, not at the end of the body

    # More photos than --max-photos.
    status, body = submit(server, [(f"p{i}.png", photo_bytes(setup)) for i in range(MAX_PHOTOS + 1)], {})
    assert status == 413 and body["error"]["code"] == "too_many_photos", body
    time.sleep(0.2)
    assert data_entries(server, "uploads") == [] and data_entries(server, "queue") == []


@pytest.mark.parametrize("options, words", [
    ("{not json", "not valid JSON"),
    ('["a list"]', "JSON object"),
    ({"colour": "red"}, "unknown option"),
    ({"mode": "zoom"}, "'mode'"),
    ({"precision": 16}, "'precision'"),
    ({"weights": "/etc/passwd"}, "'weights'"),
    ({"download": True}, "'download'"),
    ({"model": "vggt-omega"}, "this server runs the model"),
    ({"device": "cuda:7"}, "device"),
    ({"images": ["/a.png", "/b.png"]}, "one client path per uploaded photo"),
    ({"output": "scene.txt"}, ".npz"),
])
def test_bad_options_are_422_and_create_no_job(setup, options, words):
    server = setup["server"]
    before = data_entries(server, "jobs")
    status, body = submit(server, [("a.png", photo_bytes(setup))], options)
    assert status == 422 and body["error"]["code"] == "bad_request", body
    assert words in body["error"]["message"], body
    assert data_entries(server, "jobs") == before and data_entries(server, "uploads") == []


def test_no_photos_is_422(setup):
    status, body = submit(setup["server"], [], {})
    assert status == 422 and "no photos" in body["error"]["message"]


def test_bad_photos_are_400_naming_the_file_as_sent(setup):
    server = setup["server"]
    broken = b"\x89PNG\r\n\x1a\n" + os.urandom(300)
    cases = [("holiday/broken.png", broken, "broken.png"), ("notes.txt", b"hello", "notes.txt"),
             ("empty.jpg", b"", "empty.jpg")]
    for sent, data, named in cases:
        status, body = submit(server, [("good.png", photo_bytes(setup)), (sent, data)], {})
        assert status == 400 and body["error"]["code"] == "bad_image", body
        assert body["error"]["file"] == named and body["error"]["message"].startswith(named + ":"), body
    assert data_entries(server, "uploads") == [] and data_entries(server, "queue") == []


def test_uploaded_names_cannot_escape_or_collide(setup):
    server = setup["server"]
    outside = server.data_dir.parent
    before = set(os.listdir(outside))
    names = ["../../escape.png", "..\\..\\Escape.PNG", "/etc/cron.d/x\x00.png"]
    status, accepted = submit(server, [(n, photo_bytes(setup)) for n in names], {})
    assert status == 202, accepted
    job_id = accepted["id"]
    status, cancelled = call(server, "DELETE", f"/v1/jobs/{job_id}")  # queued or running: either way it stops
    assert status in (200, 202), cancelled
    final = wait_for(server, job_id)
    assert final["state"] == "cancelled", final
    assert final["photos"] == ["escape.png", "Escape.PNG", "x\x00.png"]
    stored = sorted(os.listdir(server.data_dir / "jobs" / job_id / "input"))
    assert stored == ["Escape_2.png", "escape.png", "x.png"]
    assert set(os.listdir(outside)) == before
    for root, _dirs, files in os.walk(server.data_dir):
        for name in files:
            assert Path(root, name).resolve().is_relative_to(server.data_dir.resolve())


def test_remote_job_runs_like_a_local_one_and_fetches_upright_copies(setup, tmp_path):
    server = setup["server"]
    output = tmp_path / "out" / "shot.npz"
    output.parent.mkdir()
    request = {"images": [str(setup["photos"][2]), str(setup["rotated"])], "output": str(output),
               "config": str(TINY_CONFIG), "device": "cpu"}
    job = RemoteJob(server.url, TOKEN, request, poll_interval=0.2)
    job.start()
    seen = follow(job)
    assert job.state == "done", (job.error_code, job.error_message)
    stages = [e["stage"] for e in seen if e["type"] == "progress"]
    assert stages[0] == "connecting" and "uploading" in stages and "inference" in stages
    assert stages[-1] == "downloading"
    rec = load_reconstruction(output)
    assert rec.image_paths == [str(setup["photos"][2]), str(setup["rotated"])]
    upright = output.parent / "shot_images" / "rotated.jpg"
    assert rec.display_paths == [str(setup["photos"][2]), str(upright)]
    with Image.open(upright) as image:
        assert image.size == (120, 160)
    assert job.result["files"] == [str(output), str(upright.parent)]
    fetched = job.fetch(tmp_path / "elsewhere")
    assert [p.name for p in fetched] == ["shot.npz", "shot_images"] and (fetched[1] / "rotated.jpg").is_file()
    assert not [p for p in output.parent.iterdir() if p.name.startswith(".vggt_tmp_")]


def test_command_line_server_option_runs_without_torch(setup, tmp_path):
    import subprocess

    server = setup["server"]
    output = tmp_path / "cli" / "scene.npz"
    code = ("import sys; sys.modules['torch'] = None; from vggt_blender.cli import main; "
            "sys.exit(main(sys.argv[1:]))")  # a pipeline machine without torch
    args = [sys.executable, "-c", code, "reconstruct", str(setup["photos"][0]), "-o", str(output),
            "--server", server.url, "--config", str(TINY_CONFIG), "-q"]
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parent.parent), VGGT_SERVER_TOKEN=TOKEN)
    done = subprocess.run(args, capture_output=True, text=True, timeout=240, env=env)
    assert done.returncode == 0, done.stderr
    assert "wrote" in done.stderr and "1 image(s)" in done.stderr
    served = load_reconstruction(output)
    assert served.image_paths == [str(setup["photos"][0])]
    # Stood upright as a local run would be (--align auto, the default), here, without torch.
    assert "alignment" in served.extra and "aligned:" in done.stderr, done.stderr
    env["VGGT_SERVER_TOKEN"] = "wrong-token-0123456789abcdef"
    refused = subprocess.run(args[:-1] + ["-o", str(tmp_path / "other.npz")], capture_output=True, text=True,
                             timeout=120, env=env)
    assert refused.returncode == 1 and "error: server" in refused.stderr and "Bearer" in refused.stderr, \
        refused.stderr
    assert "Traceback" not in refused.stderr and not (tmp_path / "other.npz").exists()
