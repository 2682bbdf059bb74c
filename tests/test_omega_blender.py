"""A VGGT-Omega reconstruction in Blender (bpy): made by the command line from a tiny Omega checkpoint the test
writes (subprocesses: this module imports no torch), imported with the point-map source asked for. The cameras
project world points to the right photo pixels, the point cloud is the depth points, there is no point map and
the fallback is a warning on the collection, not an error."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from pathlib import Path

import bpy
import numpy as np
import pytest
from bpy_extras.object_utils import world_to_camera_view
from mathutils import Vector

from tests.helpers import TINY_OMEGA_CONFIG, write_photos
from vggt_blender.extension_package import load_extension_package
from vggt_blender.geometry.alignment import reconstruction_alignment
from vggt_blender.geometry.blender_camera import opencv_to_blender_points
from vggt_blender.io.reconstruction import load_reconstruction
from vggt_blender.options import SceneOptions

ROOT = Path(__file__).resolve().parent.parent
EXT = load_extension_package("_vggt_ext_tests")
build = importlib.import_module(f"{EXT.__name__}.scene.build")
cameras = importlib.import_module(f"{EXT.__name__}.scene.cameras")


@pytest.fixture(scope="module")
def omega_file(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("omega_blender")
    write_photos(tmp / "photos", count=3, size=(160, 120))
    env = dict(os.environ, PYTHONPATH=str(ROOT), XDG_CACHE_HOME=str(tmp / "cache"), OMP_NUM_THREADS="1")
    env.pop("VGGT_WEIGHTS", None)
    python = os.environ.get("VGGT_TEST_RUNTIME_PYTHON", sys.executable)
    subprocess.run([python, "-c", "import sys; from pathlib import Path; from tests.helpers import "
                    "write_tiny_omega_checkpoint; write_tiny_omega_checkpoint(Path(sys.argv[1]))", str(tmp)],
                   check=True, env=env, cwd=ROOT, timeout=120)
    out = tmp / "omega.npz"
    result = subprocess.run([python, "-m", "vggt_blender", "reconstruct", str(tmp / "photos"), "-o", str(out),
                             "--weights", str(tmp / "omega.pt"), "--config", str(TINY_OMEGA_CONFIG),
                             "--device", "cpu", "-q"], capture_output=True, text=True, env=env, cwd=tmp,
                            timeout=300)
    assert result.returncode == 0, result.stderr
    return out


@pytest.fixture(autouse=True)
def empty_file():
    bpy.ops.wm.read_homefile(use_empty=True)
    yield


def test_omega_file_imports_with_depth_points_and_cameras_on_the_photo_pixels(omega_file):
    rec = load_reconstruction(omega_file)
    assert rec.point_map is None and rec.model_family == "vggt-omega"
    options = SceneOptions(point_source="point_map", max_points=10_000_000, create_depth_planes=True,
                           plane_step=8)
    col = build.import_reconstruction_file(omega_file, options)
    warnings = list(col.get("vggt_warnings", []))
    assert any("has no point map: the point cloud is built from depth + camera" in w for w in warnings), warnings
    alignment = reconstruction_alignment(rec)

    # The point cloud: exactly the valid depth points, in the order of the one point selection.
    cloud = [o for o in col.objects if o.get("vggt_kind") == "point_cloud"]
    assert len(cloud) == 1 and cloud[0]["vggt_point_source"] == "depth"
    mesh = cloud[0].data
    got = np.empty(len(mesh.vertices) * 3)
    mesh.vertices.foreach_get("co", got)
    want = opencv_to_blender_points(rec.world_points[rec.valid_mask].reshape(-1, 3), 1.0, alignment)
    assert got.reshape(-1, 3).shape == want.shape
    assert np.abs(got.reshape(-1, 3) - want).max() < 1e-4

    # Depth planes exist, one per photo.
    assert sum(o.get("vggt_kind") == "depth_plane" for o in col.objects) == rec.num_images

    # Each camera sees a world point at the photo pixel its model pixel maps to (pixel_map), via Blender's
    # own projection.
    scene = bpy.context.scene
    cams = sorted((o for o in col.objects if o.get("vggt_kind") == "camera"), key=lambda o: o["vggt_view_index"])
    assert len(cams) == rec.num_images
    rng = np.random.default_rng(0)
    h, w = rec.model_hw
    for i, cam in enumerate(cams):
        width, height = (int(v) for v in rec.original_sizes[i])
        cameras.activate_camera(scene, cam)
        x0, y0, x1, y1 = (int(v) for v in rec.valid_box[i])
        us, vs = rng.integers(x0, x1, 40), rng.integers(y0, y1, 40)
        world = rec.world_points[i, vs, us].astype(np.float64)
        sx, sy, ox, oy = rec.pixel_map[i]
        want_px = np.c_[sx * (us + 0.5) + ox, sy * (vs + 0.5) + oy]
        got_px = []
        for p in opencv_to_blender_points(world, 1.0, alignment):
            ndc = world_to_camera_view(scene, cam, Vector(p.tolist()))
            got_px.append((ndc.x * width, (1.0 - ndc.y) * height))
        err = np.abs(np.array(got_px) - want_px).max()
        assert err < 0.02, f"{cam.name}: {err:.4f} px"
