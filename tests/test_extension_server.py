"""The extension in Server mode (bpy module): Test Connection, then Reconstruct through a real `serve` process
on 127.0.0.1; the scene is built from the downloaded file, whose photo paths are this machine's."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

pytest.importorskip("bpy")

from tests.service_helpers import TOKEN, Server
from tests.test_extension_blender import RUNTIME_PYTHON, extension_zip, job_inputs, run_driver  # noqa: F401

DRIVER_SERVER = r'''
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
OUT["result"] = sorted(bpy.ops.vggt.reconstruct())
job = bpy.context.window_manager.vggt_job
OUT["last_error"] = job.last_error
coll = bpy.data.collections.get(job.last_result)
OUT["kinds"] = kinds_in(coll) if coll else []
OUT["cameras"] = sum(1 for ob in coll.all_objects if ob.get("vggt_kind") == "camera") if coll else 0
path = bpy.path.abspath(coll.get("vggt_reconstruction", "")) if coll else ""
OUT["npz"] = path
if path:
    with np.load(path) as z:
        OUT["image_paths"] = [str(x) for x in z["image_paths"]]
OUT["images"] = sorted(bpy.path.abspath(im.filepath) for im in bpy.data.images if im.filepath)
emit()
'''


def test_server_mode_reconstructs_through_the_server(extension_zip, job_inputs, tmp_path):
    server = Server(tmp_path / "data", Path(job_inputs["weights"]), python=RUNTIME_PYTHON)
    try:
        server.wait_ready()
        r = run_driver(DRIVER_SERVER, dict(job_inputs, zip=extension_zip, url=server.url, token=TOKEN),
                       tmp_path / "home")
    finally:
        server.stop()
    assert r["wrong_token"].startswith("Error: VGGT: server") and "Bearer" in r["wrong_token"], r["wrong_token"]
    assert r["test"] == ["FINISHED"]
    assert r["result"] == ["FINISHED"] and r["last_error"] == "", r
    assert r["kinds"] == ["camera", "depth_plane", "point_cloud"] and r["cameras"] == 3
    photos = [str(Path(job_inputs["photos"]) / f"frame_{i}.png") for i in (1, 2, 3)]
    assert r["image_paths"] == photos  # this machine's photos, not the server's copies
    assert set(photos) <= set(r["images"])  # and the scene's camera backgrounds show them
