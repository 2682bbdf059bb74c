"""The service's parts without a server: safe names, start-up checks, the job store, result paths."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from vggt_blender import cli
from vggt_blender.io.reconstruction import load_reconstruction, save_reconstruction
from tests.helpers import synthetic_reconstruction
from vggt_blender.service import store as st
from vggt_blender.service.config import ServiceConfig, check_config, is_loopback
from vggt_blender.service.names import UniqueNames, safe_name
from vggt_blender.service.results import localise


@pytest.mark.parametrize("sent, safe", [
    ("../../etc/passwd.png", "passwd.png"),
    ("..\\..\\win.ini.JPG", "win.ini.jpg"),
    ("..", "photo"),
    (".hidden.png", "hidden.png"),
    ("C:\\Users\\a\\IMG 1.jpeg", "IMG 1.jpeg"),
    ("con.png", "con_.png"),
    ("été 2024.png", "ete 2024.png"),
    ("a\x00b\nc.png", "a_b_c.png"),
    ("写真.jpg", "photo.jpg"),
    ("x" * 300 + ".png", "x" * 96 + ".png"),
])
def test_safe_names(sent, safe):
    assert safe_name(sent) == safe
    assert "/" not in safe and "\\" not in safe and not safe.startswith(".")


def test_unique_names_ignore_case():
    names = UniqueNames()
    assert [names.take(n) for n in ("a.png", "A.PNG", "dir/a.png", "a_2.png")] == \
        ["a.png", "A_2.png", "a_3.png", "a_2_2.png"]


def test_open_server_beyond_loopback_refuses_to_start(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("VGGT_SERVER_TOKEN", raising=False)
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.5") and not is_loopback("gpu-box")
    code = cli.main(["serve", "--host", "0.0.0.0", "--data-dir", str(tmp_path / "d")])
    assert code == 1
    assert "refusing to listen on 0.0.0.0 without a token" in capsys.readouterr().err
    assert not (tmp_path / "d").exists()
    check_config(ServiceConfig(host="0.0.0.0", token="x" * 32))  # with a token it may
    with pytest.raises(Exception, match="shorter than 16"):
        check_config(ServiceConfig(host="127.0.0.1", token="short"))
    token_file = tmp_path / "token"
    token_file.write_text("\n")
    assert cli.main(["serve", "--token-file", str(token_file)]) == 1
    assert "the token file is empty" in capsys.readouterr().err


def make_job(store: st.JobStore, photos=("a.png",)) -> str:
    folder = store.new_upload()
    return store.submit(folder, list(photos), list(photos), {})


def test_a_job_is_ordered_by_when_its_upload_completed_not_when_it_began(tmp_path):
    # Two clients at once: the first to start uploading is the last to finish. The queue (and the ids, which
    # clients and the runner sort) follow completion, so the runner never takes a later id before an earlier.
    store = st.JobStore(tmp_path)
    slow, fast = store.new_upload(), store.new_upload()
    fast_id = store.submit(fast, ["fast.png"], ["fast.png"], {})
    assert store.claim_next("h~1~a") == fast_id  # the runner takes it while the slow upload still arrives
    slow_id = store.submit(slow, ["slow.png"], ["slow.png"], {})
    assert fast_id < slow_id
    assert store.read(slow_id)["photos"] == ["slow.png"] and store.read(slow_id)["position"] == 0
    same_tick = [make_job(store) for _ in range(20)]  # ids stay strictly increasing within one microsecond
    assert same_tick == sorted(same_tick) and len(set(same_tick)) == 20
    assert not any(store.uploads.iterdir())


def test_queue_order_claims_and_cancel(tmp_path):
    store = st.JobStore(tmp_path)
    ids = [make_job(store) for _ in range(3)]
    assert store.queue_ids() == ids == sorted(ids)
    assert [store.read(i)["position"] for i in ids] == [0, 1, 2]
    assert store.claim_next("h~1~a") == ids[0]
    assert store.claim_next("h~1~b") == ids[1]  # the next one: a job is claimed once
    # Cancelling a queued job takes it off the queue: no runner can claim it afterwards.
    assert store.request_cancel(ids[2])["state"] == "cancelled"
    assert store.claim_next("h~1~a") is None
    # Cancelling a claimed job only leaves the marker for its owner.
    assert store.request_cancel(ids[0])["state"] == "queued" and store.cancel_requested(ids[0])
    assert store.read("../../etc") is None and store.read("0" * 30) is None


def test_orphans_of_a_dead_server_fail_and_lose_their_partial_output(tmp_path):
    store = st.JobStore(tmp_path)
    job_id = make_job(store)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    owner = f"{st.make_owner('x').split('~')[0]}~{dead.pid}~0-cpu"
    assert store.claim_next(owner) == job_id
    store.update(job_id, state=st.RUNNING, started=time.time())
    out = store.out_folder(job_id)
    out.mkdir()
    (out / ".vggt_tmp_half.npz").write_bytes(b"half")
    alive_job = make_job(store)
    assert store.claim_next(st.make_owner("me")) == alive_job  # this process: alive
    assert store.recover_orphans() == [job_id]
    status = store.read(job_id)
    assert status["state"] == "failed" and status["error"]["code"] == "server_stopped"
    assert not out.exists() and store.read(alive_job)["state"] == "queued"
    # A remote owner (another host) counts as gone only once its heartbeat is stale.
    third = make_job(store)
    store.claim_next("elsewhere~1~0-cuda")
    assert store.recover_orphans() == []
    old = time.time() - st.STALE_SECONDS - 5
    os.utime(store.running / f"{third}@elsewhere~1~0-cuda", (old, old))
    assert store.recover_orphans() == [third]


def test_finished_jobs_are_removed_after_the_retention_time(tmp_path):
    store = st.JobStore(tmp_path, keep_seconds=60)
    job_id = make_job(store)
    store.claim_next("h~1~a")
    store.finish(job_id, st.DONE)
    queued = make_job(store)
    assert store.cleanup() == []
    assert store.cleanup(now=time.time() + 61) == [job_id]
    assert not store.folder(job_id).exists() and store.folder(queued).exists()


@pytest.mark.parametrize("client_output, folder, join", [
    ("/home/a/shot/scene.npz", "/home/a/shot", "/"),
    ("C:\\Users\\a\\shot\\scene.npz", "C:\\Users\\a\\shot", "\\"),
])
def test_result_paths_become_the_clients(tmp_path, client_output, folder, join):
    out = tmp_path / "out"
    rec = synthetic_reconstruction(num_images=2)
    sources = [str(tmp_path / "input" / "a.png"), str(tmp_path / "input" / "b_2.jpg")]
    rec.image_paths = sources
    rec.display_paths = [sources[0], str(out / "scene_images" / "b_2.jpg")]
    out.mkdir()
    save_reconstruction(out / "scene.npz", rec)
    clients = [f"{folder}{join}a.png", f"{folder}{join}b.jpg"]
    files = localise(out / "scene.npz", clients, client_output)
    assert files == [{"path": "scene.npz", "save_as": "scene.npz"},
                     {"path": "scene_images/b_2.jpg", "save_as": "scene_images/b_2.jpg"}]
    back = load_reconstruction(out / "scene.npz")
    assert back.image_paths == clients and back.image_names == ["a", "b"]
    assert back.display_paths == [clients[0], f"{folder}{join}scene_images{join}b_2.jpg"]
    assert json.loads(back.provenance) == json.loads(rec.provenance)


def test_a_job_lost_between_folder_and_queue_goes_back_into_the_queue(tmp_path):
    store = st.JobStore(tmp_path)
    job_id = make_job(store)
    os.unlink(store.queue / job_id)  # as if the server stopped before the queue entry was made
    assert store.queue_ids() == []
    store.cleanup()
    assert store.queue_ids() == []  # a fresh job may still be on its way
    store.cleanup(now=time.time() + st.STALE_SECONDS + 1)
    assert store.queue_ids() == [job_id]
    claimed = make_job(store)
    store.claim_next("h~1~a")  # takes job_id
    assert store.claim_next("h~1~a") == claimed
    store.cleanup(now=time.time() + st.STALE_SECONDS + 1)
    assert store.queue_ids() == []  # claimed jobs are never queued again


def test_runner_states_are_shared_and_forget_the_dead(tmp_path):
    store = st.JobStore(tmp_path)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    host = st.make_owner("x").split("~")[0]
    store.publish_runner(st.make_owner("0-cpu"), {"state": "ready", "device": "cpu"})
    store.publish_runner(f"{host}~{dead.pid}~0-cuda", {"state": "ready", "device": "cuda"})
    store.publish_runner("elsewhere~7~0-cuda", {"state": "loading", "device": "cuda"})
    assert sorted(r["device"] + ":" + r["state"] for r in store.runners()) == ["cpu:ready", "cuda:loading"]
    old = time.time() - st.STALE_SECONDS
    info = json.loads((store.runner_states / "elsewhere~7~0-cuda.json").read_text())
    (store.runner_states / "elsewhere~7~0-cuda.json").write_text(json.dumps({**info, "beat": old}))
    assert [r["device"] for r in store.runners()] == ["cpu"]
    assert sorted(os.listdir(store.runner_states)) == [f"{st.make_owner('0-cpu')}.json"]
