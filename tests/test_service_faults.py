"""The service when things go wrong: loading, a full queue, cancels, a server killed mid-job and restarted."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest

from tests.service_helpers import TOKEN, Server, call, submit, wait_for
from tests.helpers import write_photos, write_tiny_checkpoint
from vggt_blender.jobs.remote import RemoteJob  # noqa: E402

DELAY = "1.5"  # seconds at the start of every stage (tests/worker_hooks): room to act mid-run


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("faults")
    photos = write_photos(tmp / "photos", count=2)
    return {"tmp": tmp, "photos": photos, "checkpoint": write_tiny_checkpoint(tmp)}


def photo(setup, index: int = 0) -> tuple[str, bytes]:
    path = Path(setup["photos"][index])
    return path.name, path.read_bytes()


def children(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry))
    return found


def test_loading_queue_full_and_cancels(setup):
    server = Server(setup["tmp"] / "data1", setup["checkpoint"], "--max-queue", "1",
                    env={"VGGT_TEST_DELAY": DELAY})
    try:
        # The warm-up run is slow here: jobs are refused with 503 until the model is in memory.
        status, body = submit(server, [photo(setup)], {})
        assert status == 503 and body["error"]["code"] == "loading", body
        assert call(server, "GET", "/v1/health", auth=False)[1]["status"] == "loading"
        assert server.wait_ready()["status"] == "ready"

        status, first = submit(server, [photo(setup)], {})
        assert status == 202, first
        running = wait_for(server, first["id"], states=("running",), stage="inference")
        status, second = submit(server, [photo(setup, 1)], {})
        assert status == 202, second
        assert call(server, "GET", f"/v1/jobs/{second['id']}")[1]["position"] == 0
        status, body = submit(server, [photo(setup)], {})  # one running, one waiting: the queue is full
        assert status == 429 and body["error"]["code"] == "queue_full", body
        assert call(server, "GET", "/v1/health", auth=False)[1]["queue_length"] == 1

        # A queued job is cancelled at once; a running one when its worker stops.
        status, body = call(server, "DELETE", f"/v1/jobs/{second['id']}")
        assert status == 200 and body["state"] == "cancelled", body
        status, body = call(server, "DELETE", f"/v1/jobs/{first['id']}")
        assert status == 202 and body["cancel_requested"], body
        final = wait_for(server, first["id"])
        assert final["state"] == "cancelled" and final["error"]["code"] == "cancelled", final
        assert final["started"] == running["started"]
        out = server.data_dir / "jobs" / first["id"] / "out"
        assert not out.exists() or not os.listdir(out)
        status, body = call(server, "GET", f"/v1/jobs/{first['id']}/result")
        assert status == 409 and body["error"]["code"] == "not_done"
        # The worker survived the cancel (keep-alive): the runner is ready for the next job.
        assert call(server, "GET", "/v1/health", auth=False)[1]["devices"][0]["state"] == "ready"
    finally:
        server.stop()


def test_server_killed_mid_job_client_reports_it_and_restart_serves_nothing_half_written(setup, tmp_path):
    data = setup["tmp"] / "data2"
    server = Server(data, setup["checkpoint"], env={"VGGT_TEST_DELAY": DELAY})
    server.wait_ready()
    output = tmp_path / "scene.npz"
    job = RemoteJob(server.url, TOKEN, {"images": [str(setup["photos"][0])], "output": str(output)},
                    poll_interval=0.2, reconnect_for=120)
    job.start()
    deadline = time.monotonic() + 120
    while job.remote_state != "running" and time.monotonic() < deadline:
        job.poll()
        time.sleep(0.1)
    status, waiting = submit(server, [photo(setup, 1)], {})  # queued behind the running one
    assert status == 202
    time.sleep(0.5)
    workers = children(server.process.pid)
    assert workers, "the runner has a worker process"
    server.kill()

    # The client keeps polling through the outage and says so.
    messages: list[str] = []
    deadline = time.monotonic() + 30
    while not any("retrying" in m for m in messages) and time.monotonic() < deadline:
        messages += [e.get("message", "") for e in job.poll()]
        time.sleep(0.1)
    assert any("cannot reach the server" in m and "retrying" in m for m in messages), messages
    assert not job.finished
    # The killed server's worker stops too (its stdin closed): nothing keeps running on the device.
    deadline = time.monotonic() + 30
    while any(Path(f"/proc/{pid}").exists() and "Z" not in Path(f"/proc/{pid}/stat").read_text().split()[2]
              for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not [pid for pid in workers if Path(f"/proc/{pid}").exists()
                and "Z" not in Path(f"/proc/{pid}/stat").read_text().split()[2]]

    restarted = Server(data, setup["checkpoint"], port=server.port)
    try:
        assert job.wait(120) == "failed"
        assert job.error_message and "server stopped while this job was running" in job.error_message
        assert not output.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".vggt_tmp_")]
        status, body = call(restarted, "GET", f"/v1/jobs/{job.job_id}/result")
        assert status == 409, body
        assert not (data / "jobs" / job.job_id / "out").exists()
        # Nothing lost: the job that was waiting runs on the restarted server.
        restarted.wait_ready()
        final = wait_for(restarted, waiting["id"])
        assert final["state"] == "done", final
        assert call(restarted, "GET", f"/v1/jobs/{waiting['id']}/result")[0] == 200
    finally:
        restarted.stop()
