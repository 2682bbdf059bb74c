"""The extension in Server mode (bpy module): Test Connection, then Reconstruct (photos, then a video shot)
through a real `serve` process on 127.0.0.1; the scene is built from the downloaded file, whose photo and video
paths are this machine's."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

pytest.importorskip("bpy")

from tests.service_helpers import TOKEN, Server
from tests.test_extension_blender import RUNTIME_PYTHON, extension_zip, job_inputs, run_driver  # noqa: F401

DRIVER_SERVER = r'''
import json
import numpy as np
pkg = install()
p = prefs(pkg)
p.inference_source = "SERVER"
p.server_url = ARGS["url"]
p.server_token = "not-the-token-0123456789"
OUT["wrong_token"] = op_error(lambda: bpy.ops.vggt.test_server())
p.server_token = ARGS["token"]
OUT["test"] = sorted(bpy.ops.vggt.test_server())
p.model_config = ARGS["config"]
p.python_path = "/nonexistent/python"  # Server mode needs no local runtime
p.runtime_source = "CUSTOM"
p.precision = "fp32"
settings = bpy.context.scene.vggt
bpy.ops.vggt.add_photos(directory=ARGS["photos"])
settings.plane_step = 8
settings.refine_cameras = True  # bundle adjustment on the server, with the job
OUT["result"] = sorted(bpy.ops.vggt.reconstruct())
job = bpy.context.window_manager.vggt_job
OUT["last_error"] = job.last_error
OUT["warnings"] = [w.text for w in job.last_warnings]
coll = bpy.data.collections.get(job.last_result)
OUT["kinds"] = kinds_in(coll) if coll else []
OUT["cameras"] = sum(1 for ob in coll.all_objects if ob.get("vggt_kind") == "camera") if coll else 0
path = bpy.path.abspath(coll.get("vggt_reconstruction", "")) if coll else ""
OUT["npz"] = path
if path:
    with np.load(path) as z:
        OUT["image_paths"] = [str(x) for x in z["image_paths"]]
        OUT["refinement"] = "refinement" in json.loads(str(z["provenance"]))
OUT["images"] = sorted(bpy.path.abspath(im.filepath) for im in bpy.data.images if im.filepath)
# A shot through the server: the video is uploaded, the server picks the frames, the camera is on the plate.
bpy.ops.vggt.choose_shot(filepath=ARGS["video"])
settings.shot_every, settings.shot_start, settings.shot_end = 6, 1, 20
settings.shot_refine = False
settings.create_point_cloud = settings.create_depth_planes = False
OUT["shot_result"] = sorted(bpy.ops.vggt.reconstruct())
OUT["shot_error"] = job.last_error
coll = bpy.data.collections.get(job.last_result)
OUT["shot_kinds"] = kinds_in(coll) if coll else []
cams = [ob for ob in coll.all_objects if ob.get("vggt_kind") == "animated_camera"] if coll else []
clip = cams[0].data.background_images[0].clip if cams and len(cams[0].data.background_images) else None
OUT["shot_clip"] = bpy.path.abspath(clip.filepath) if clip else ""
path = bpy.path.abspath(coll.get("vggt_reconstruction", "")) if coll else ""
if path:
    with np.load(path) as z:
        OUT["shot_frames"] = [int(n) for n in z["frame_numbers"]]
        OUT["shot_source"] = str(z["source_video"])
OUT["shot_range"] = [bpy.context.scene.frame_start, bpy.context.scene.frame_end]
emit()
'''


def test_server_mode_reconstructs_through_the_server(extension_zip, job_inputs, tmp_path):
    pytest.importorskip("av")
    from tests.video_helpers import write_video

    video = write_video(tmp_path / "plate.mp4", count=24)
    server = Server(tmp_path / "data", Path(job_inputs["weights"]), python=RUNTIME_PYTHON)
    try:
        server.wait_ready()
        r = run_driver(DRIVER_SERVER, dict(job_inputs, zip=extension_zip, url=server.url, token=TOKEN,
                                           video=str(video)), tmp_path / "home")
    finally:
        server.stop()
    assert r["wrong_token"].startswith("Error: VGGT: server") and "Bearer" in r["wrong_token"], r["wrong_token"]
    assert r["test"] == ["FINISHED"]
    assert r["result"] == ["FINISHED"] and r["last_error"] == "", r
    assert r["kinds"] == ["camera", "depth_plane", "point_cloud"] and r["cameras"] == 3
    photos = [str(Path(job_inputs["photos"]) / f"frame_{i}.png") for i in (1, 2, 3)]
    assert r["image_paths"] == photos  # this machine's photos, not the server's copies
    assert set(photos) <= set(r["images"])  # and the scene's camera backgrounds show them
    # Refine Cameras went with the job: the server refined, or said why the model's cameras stay (random weights).
    assert r["refinement"] or any("feed-forward cameras are kept" in w for w in r["warnings"]), r["warnings"]
    # The shot: frames 1, 7, 13, 19 of this machine's video, keyed from scene frame 2, on its Movie Clip.
    assert r["shot_result"] == ["FINISHED"] and r["shot_error"] == "", r
    assert r["shot_kinds"] == ["animated_camera"]
    assert r["shot_frames"] == [1, 7, 13, 19] and r["shot_range"] == [2, 20]
    assert r["shot_source"] == str(video) and Path(r["shot_clip"]) == video
