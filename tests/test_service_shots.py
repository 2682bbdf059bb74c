"""Shots on the reconstruction server, over real HTTP on 127.0.0.1: a video uploaded whole, the chosen frames of
an image sequence, refinement as a job option. The result must be what the same shot gives on this machine,
with the client's paths and frame numbers."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.helpers import write_photos, write_tiny_checkpoint
from tests.service_helpers import TINY_CONFIG, TOKEN, Server, call, follow, submit, wait_for
from tests.video_helpers import frame_pattern, read_number, write_video
from vggt_blender.io.reconstruction import load_reconstruction
from vggt_blender.io.shot_fields import read_shot_fields
from vggt_blender.jobs.remote import RemoteJob

pytest.importorskip("av")

SEQUENCE_FILES = [1001 + i for i in range(14) if i != 5]  # plate.1006.png is missing: a gap in the plate


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("shots")
    checkpoint = write_tiny_checkpoint(tmp)
    plate = tmp / "client" / "plate"
    plate.mkdir(parents=True)
    video = write_video(tmp / "client" / "take 3.mp4", count=24)
    for number in SEQUENCE_FILES:
        Image.fromarray(frame_pattern(number - 1001)).save(plate / f"plate.{number}.png")
    server = Server(tmp / "data", checkpoint, "--max-photos", "8", "--max-upload-mb", "4")
    try:
        assert server.wait_ready(300)["status"] == "ready", server.lines
        yield {"tmp": tmp, "checkpoint": checkpoint, "video": video, "plate": plate, "server": server}
    finally:
        server.stop()


def run_remote(setup, request: dict) -> tuple[RemoteJob, list[dict]]:
    job = RemoteJob(setup["server"].url, TOKEN, {"config": str(TINY_CONFIG), "device": "cpu", "precision": "auto",
                                                 "mode": "crop", "fast_path": "auto", **request}, poll_interval=0.2)
    job.start()
    return job, follow(job)


def run_local(setup, inputs: list[str], output: Path, **shot):
    from vggt_blender.engine.inference import reconstruct_to_file

    return reconstruct_to_file(inputs, output, weights=str(setup["checkpoint"]),
                               config=str(TINY_CONFIG), device="cpu", precision="fp32", **shot)


def assert_same_numbers(served, local) -> None:
    np.testing.assert_allclose(served.extrinsics, local.extrinsics, atol=1e-4)
    np.testing.assert_allclose(served.intrinsics, local.intrinsics, rtol=1e-4)
    np.testing.assert_allclose(served.depth, local.depth, rtol=1e-3, atol=1e-4)
    np.testing.assert_array_equal(served.colors, local.colors)


def test_a_video_is_uploaded_whole_and_the_server_picks_its_frames(setup):
    output = setup["tmp"] / "video.npz"
    job, seen = run_remote(setup, {"images": [str(setup["video"])], "output": str(output), "every": 5, "start": 2,
                                   "end": 20})
    assert job.state == "done", (job.error_code, job.error_message)
    assert "uploading" in [e.get("stage") for e in seen if e["type"] == "progress"]
    served = load_reconstruction(output)
    fields = read_shot_fields(served)
    assert fields.frame_numbers.tolist() == [2, 7, 12, 17]
    assert [read_number(c) for c in served.colors] == [2, 7, 12, 17]  # the decoded frames are those frames
    assert fields.source_video == str(setup["video"]) and fields.source_kind == "video"
    assert fields.fps_fraction == (24000, 1001) and fields.source_frame_count == 24
    assert served.image_paths == [str(setup["video"])] * 4 == served.display_paths
    assert served.image_names == ["take 3_00002", "take 3_00007", "take 3_00012", "take 3_00017"]
    assert served.provenance_dict["shot"]["source"]["path"] == str(setup["video"])
    assert str(setup["server"].data_dir) not in served.provenance  # no server folder reaches the client
    # The same shot run here gives the same cameras, depth and colours.
    local = run_local(setup, [str(setup["video"])], setup["tmp"] / "video_local.npz", every=5, start=2, end=20)
    assert_same_numbers(served, local)
    # What the server kept of the job names the video as it was sent.
    status = wait_for(setup["server"], job.job_id)
    assert status["photos"] == ["take 3.mp4"]


def test_only_the_chosen_frames_of_a_sequence_are_uploaded_and_keep_their_numbers(setup):
    pattern = str(setup["plate"] / "plate.####.png")
    output = setup["tmp"] / "plate.npz"
    job, _ = run_remote(setup, {"images": [pattern], "output": str(output), "every": 3, "start": 1,
                                "max_frames": 4, "fps": 25})
    assert job.state == "done", (job.error_code, job.error_message)
    # Frames 0..13 without 5: every 3rd from 1 is 1, 4, 7, 10, 13; at most 4, spread evenly over them
    # (first and last kept: positions 0, 1.33, 2.67, 4 of the five round to 1, 4, 10, 13).
    expected = [1, 4, 10, 13]
    status = wait_for(setup["server"], job.job_id)
    served = load_reconstruction(output)
    fields = read_shot_fields(served)
    local = run_local(setup, [pattern], setup["tmp"] / "plate_local.npz", every=3, start=1, max_frames=4, fps=25)
    assert fields.frame_numbers.tolist() == read_shot_fields(local).frame_numbers.tolist() == expected
    assert status["photos"] == [f"plate.{1001 + n}.png" for n in expected]  # nothing else was sent
    assert [read_number(c) for c in served.colors] == expected
    assert fields.source_video == pattern and fields.source_kind == "sequence"
    assert fields.source_first_number == 1001 and fields.source_frame_count == len(SEQUENCE_FILES)
    assert fields.fps_fraction == (25, 1)
    assert served.image_paths == [str(setup["plate"] / f"plate.{1001 + n}.png") for n in expected]
    assert served.image_names == local.image_names == [f"plate_{n:05d}" for n in expected]
    assert served.provenance_dict["shot"]["source"]["first_file_number"] == 1001
    assert served.provenance_dict["shot"]["selection"] == {"every": 3, "start": 1, "end": None, "max_frames": 4}
    assert_same_numbers(served, local)


def test_refine_is_a_job_option(setup, tmp_path):
    photos = write_photos(tmp_path / "photos", count=3)
    output = tmp_path / "refined.npz"
    job, seen = run_remote(setup, {"images": [str(p) for p in photos], "output": str(output),
                                   "refine": {"shared_intrinsics": True}})
    assert job.state == "done", (job.error_code, job.error_message)
    # The worker bundle-adjusted, or said why the feed-forward cameras stay: either way it was asked to.
    warnings = [e["message"] for e in seen if e["type"] == "warning"]
    refinement = load_reconstruction(output).provenance_dict.get("refinement")
    assert refinement or any("feed-forward cameras are kept" in w for w in warnings), warnings


@pytest.mark.parametrize("options, words", [
    ({"every": 2}, "'every' is for a shot"),
    ({"sequence_frames": {"pattern": "p.####.png", "numbers": [0]}}, "must be an object with"),
    ({"sequence_frames": {"pattern": "p.####.png", "numbers": [3, 1], "first_number": 1, "frame_count": 9}},
     "ascending"),
    ({"sequence_frames": {"pattern": "p.####.png", "numbers": [0, 1], "first_number": 1, "frame_count": 9},
      "every": 2}, "chosen by the client"),
    ({"sequence_frames": {"pattern": "p.####.png", "numbers": [0, 1], "first_number": 1, "frame_count": 1}},
     "smaller than the number of frames"),
    ({"sequence_frames": {"pattern": "p.####.png", "numbers": [0, 10**300], "first_number": 1,
                          "frame_count": 9}}, "whole numbers from 0 to"),
])
def test_bad_shot_options_are_422(setup, options, words):
    frame = (setup["plate"] / "plate.1001.png").read_bytes()
    status, body = submit(setup["server"], [("plate.1001.png", frame), ("plate.1002.png", frame)], options)
    assert status == 422 and words in body["error"]["message"], body


def test_a_video_with_a_wrong_name_or_damaged_is_one_line_naming_it(setup):
    server = setup["server"]
    status, body = submit(server, [], {}, video=("notes.txt", b"hello"))
    assert status == 400 and body["error"] == {"code": "bad_video", "file": "notes.txt",
                                               "message": body["error"]["message"]}, body
    assert body["error"]["message"].startswith("notes.txt: not a video file name")
    status, body = submit(server, [], {}, video=("empty.mp4", b""))
    assert status == 400 and body["error"]["message"] == "empty.mp4: the file is empty (0 bytes)", body
    status, body = submit(server, [("a.png", b"x")], {}, video=("b.mp4", b"x"))
    assert status == 422 and "not both" in body["error"]["message"]
    sequence = {"pattern": "p.####.png", "numbers": [0], "first_number": 1, "frame_count": 9}
    status, body = submit(server, [], {"sequence_frames": sequence}, video=("b.mp4", b"x"))
    assert status == 422 and "not for a video" in body["error"]["message"], body
    status, accepted = submit(server, [], {"images": ["/shots/broken.mp4"], "every": 2},
                              video=("broken.mp4", b"\x00\x00\x00\x18ftypmp42" + bytes(400)))
    assert status == 202, accepted
    final = wait_for(server, accepted["id"])
    assert final["state"] == "failed" and final["error"]["code"] == "bad_video", final
    assert final["error"]["message"].startswith("broken.mp4: not a video file or a damaged one"), final
    assert str(server.data_dir) not in json.dumps(final)
    # A missing video fails at once on the client, naming it; nothing is sent.
    job, _ = run_remote(setup, {"images": [str(setup["tmp"] / "gone.mp4")], "output": str(setup["tmp"] / "g.npz")})
    assert job.state == "failed" and job.error_code == "bad_video"
    assert job.error_message == f"{setup['tmp'] / 'gone.mp4'}: the file does not exist"


def test_command_line_sends_a_shot_to_the_server(setup, tmp_path, monkeypatch, capsys):
    from vggt_blender import cli

    monkeypatch.setenv("VGGT_SERVER_TOKEN", TOKEN)
    output = tmp_path / "cli_shot.npz"
    code = cli.main(["reconstruct", str(setup["video"]), "-o", str(output), "--server", setup["server"].url,
                     "--config", str(TINY_CONFIG), "--every", "8", "-q"])
    assert code == 0, capsys.readouterr().err
    assert read_shot_fields(load_reconstruction(output)).frame_numbers.tolist() == [0, 8, 16]
    status, _ = call(setup["server"], "GET", "/v1/health", auth=False)
    assert status == 200


def test_a_folder_with_frame_options_is_a_sequence_as_it_is_locally(setup, tmp_path):
    # The engine's rule: a folder is a photo set unless frame options (or --sequence) ask for a sequence.
    output = tmp_path / "folder.npz"
    job, _ = run_remote(setup, {"images": [str(setup["plate"])], "output": str(output), "every": 6})
    assert job.state == "done", (job.error_code, job.error_message)
    assert read_shot_fields(load_reconstruction(output)).frame_numbers.tolist() == [0, 6, 12]
    # Frame options with photos are refused here, before anything is sent, as the engine refuses them.
    photos = write_photos(tmp_path / "photos", count=2)
    job, _ = run_remote(setup, {"images": [str(p) for p in photos], "output": str(tmp_path / "p.npz"), "every": 2})
    assert job.state == "failed" and job.error_code == "bad_request" and "need one video file" in job.error_message
