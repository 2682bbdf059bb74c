"""Depth-textured planes (bpy): geometry on the camera rays, UVs through the pixel map, the confidence filter,
and a Cycles render from the plane's own camera that reproduces the photo."""

from __future__ import annotations

import importlib

import bpy
import numpy as np
import pytest

from vggt_blender.extension_package import load_extension_package
from vggt_blender.geometry.blender_camera import opencv_project
from vggt_blender.io.reconstruction import make_reconstruction
from tests.helpers import save_png
from vggt_blender.options import SceneOptions

EXT = load_extension_package("_vggt_ext_tests")
attributes = importlib.import_module(f"{EXT.__name__}.scene.attributes")
depth_planes = importlib.import_module(f"{EXT.__name__}.scene.depth_planes")
node_groups = importlib.import_module(f"{EXT.__name__}.scene.node_groups")
cameras = importlib.import_module(f"{EXT.__name__}.scene.cameras")
build = importlib.import_module(f"{EXT.__name__}.scene.build")


@pytest.fixture(autouse=True)
def empty_file():
    bpy.ops.wm.read_homefile(use_empty=True)
    yield


def load_png(path):
    """An 8-bit PNG as float RGB in [0, 1], top row first."""
    img = bpy.data.images.load(str(path))
    w, h = img.size
    out = np.empty(w * h * 4, dtype=np.float32)
    img.pixels.foreach_get(out)
    bpy.data.images.remove(img)
    return out.reshape(h, w, 4)[::-1, :, :3].astype(np.float64)


def _rot_y(a):
    return np.array([[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]])


def _photo(path, width, height):
    """A smooth but clearly textured photo: colour gradients plus large soft checks."""
    yy, xx = np.mgrid[0:height, 0:width] + 0.5
    check = (np.sin(xx / width * 6 * np.pi) * np.sin(yy / height * 4 * np.pi)) * 0.25
    rgb = np.stack([0.2 + 0.6 * xx / width + check, 0.2 + 0.6 * yy / height - check,
                    0.5 + 0.3 * np.cos(xx / width * 2 * np.pi) * np.sin(yy / height * np.pi)], axis=-1)
    img = (np.clip(rgb, 0, 1) * 255).round().astype(np.uint8)
    save_png(path, img)
    return img


def _rec(photo_path, photo_size, model_size, pixel_map, valid_box, seed=0):
    rng = np.random.default_rng(seed)
    w, h = model_size
    K = np.array([[0.9 * w, 0, w / 2 + 3.0], [0, 0.85 * w, h / 2 - 2.0], [0, 0, 1]])
    E = np.hstack([_rot_y(0.3), np.array([[0.2], [-0.1], [0.5]])])
    yy, xx = np.mgrid[0:h, 0:w]
    depth = (2.0 + 0.6 * np.sin(xx / w * 3.0) * np.cos(yy / h * 2.0) + 0.4 * xx / w).astype(np.float32)
    conf = (1.0 + 9.0 * rng.random((1, h, w))).astype(np.float32)
    return make_reconstruction(
        depth[None], E[None], K[None], depth_conf=conf, pixel_map=np.array([pixel_map]),
        valid_box=np.array([valid_box]), original_sizes=np.array([photo_size]),
        image_paths=[str(photo_path)],
    )


def test_plane_vertices_lie_on_camera_rays_and_uvs_follow_the_pixel_map():
    # Pad mode: a 640x427 photo inside a 518x518 model input, rows 84..434 valid.
    pm = (640 / 518, 427 / 350, 0.0, -84 * 427 / 350)
    rec = _rec("/nonexistent/photo.jpg", (640, 427), (518, 518), pm, (0, 84, 518, 434))
    arrays = depth_planes.depth_plane_arrays(rec, 0, step=5, scale=1.5)
    cols = len(np.arange(0, 518, 5)) + 1  # 0, 5, ..., 515 and the last pixel 517
    rows = len(np.arange(84, 434, 5)) + 1
    assert arrays["positions"].shape == (rows * cols, 3)
    assert arrays["faces"].shape == ((rows - 1) * (cols - 1), 4)
    # Back to OpenCV world, then into the photo: vertices land on the grid of photo pixels they were made for.
    world_cv = arrays["positions"].astype(np.float64)[:, [0, 2, 1]] * [1, -1, 1] / 1.5
    photo_px = opencv_project(rec.intrinsics[0], rec.extrinsics[0], world_cv).reshape(rows, cols, 2)
    np.testing.assert_allclose(photo_px[0, 0], [0, 0], atol=1e-3)  # corners pushed to the valid box edges
    np.testing.assert_allclose(photo_px[-1, -1], [640, 427], atol=1e-3)
    np.testing.assert_allclose(photo_px[1, 1], [(5.5) * pm[0], (89.5) * pm[1] + pm[3]], atol=1e-3)
    # Each corner's UV is its vertex's photo position, normalised (v up).
    corner_px = photo_px.reshape(-1, 2)[arrays["faces"].reshape(-1)]
    uv = arrays["corner_uv"]
    np.testing.assert_allclose(uv[:, 0] * 640, corner_px[:, 0], atol=2e-3)
    np.testing.assert_allclose((1 - uv[:, 1]) * 427, corner_px[:, 1], atol=2e-3)
    # Depth attribute is the (scaled) z-depth of the sampled pixel.
    assert arrays["depth"][cols + 1] == pytest.approx(1.5 * rec.depth[0, 89, 5], rel=1e-6)


def test_confidence_filter_deletes_vertices_and_their_faces():
    rec = _rec("/nonexistent/photo.jpg", (96, 72), (96, 72), (1, 1, 0, 0), (0, 0, 96, 72), seed=4)
    opts = SceneOptions(create_cameras=False, create_point_cloud=False, plane_step=3)
    col = build.build_scene(rec, opts, "planes")
    (ob,) = [o for o in col.objects if o.get("vggt_kind") == "depth_plane"]
    assert col["vggt_warnings"] == ["photo not found: /nonexistent/photo.jpg"]
    conf = attributes.read_attribute(ob.data, "conf")
    # Rows 0, 3, ..., 69 and the last pixel 71; columns 0, 3, ..., 93 and 95.
    faces = depth_planes.grid_faces(25, 33)
    assert len(ob.data.polygons) == len(faces)
    for threshold in (1.0, 2.0, 5.5, 9.0):
        node_groups.set_shared_property(col, node_groups.PLANE_MIN_CONFIDENCE_PROP, threshold)
        depsgraph = bpy.context.evaluated_depsgraph_get()
        evaluated = ob.evaluated_get(depsgraph)
        mesh = evaluated.to_mesh()
        keep = conf >= threshold
        assert len(mesh.vertices) == keep.sum()
        assert len(mesh.polygons) == keep[faces].all(axis=1).sum()
        evaluated.to_mesh_clear()


def test_cycles_render_from_its_camera_reproduces_the_photo(tmp_path):
    photo_path = tmp_path / "wall.png"
    photo = _photo(photo_path, 192, 144).astype(np.float64) / 255.0
    # Model input at half the photo's resolution (sx = sy = 2).
    rec = _rec(photo_path, (192, 144), (96, 72), (2.0, 2.0, 0.0, 0.0), (0, 0, 96, 72))
    opts = SceneOptions(create_point_cloud=False, plane_step=1, min_confidence=0.0, scale=2.0)
    col = build.build_scene(rec, opts, "render")
    scene = bpy.context.scene
    cam = [o for o in col.objects if o.get("vggt_kind") == "camera"][0]
    cameras.activate_camera(scene, cam)
    scene.render.resolution_percentage = 50  # 96 x 72
    scene.render.engine = "CYCLES"
    scene.cycles.device = "CPU"
    scene.cycles.samples = 8
    scene.cycles.use_denoising = False
    scene.cycles.pixel_filter_type = "BOX"
    scene.cycles.filter_width = 1.0
    scene.render.threads_mode = "FIXED"
    scene.render.threads = 1
    scene.view_settings.view_transform = "Standard"
    scene.render.image_settings.file_format = "PNG"
    out = tmp_path / "render.png"
    scene.render.filepath = str(out)
    bpy.ops.render.render(write_still=True)
    rendered = load_png(out)
    assert rendered.shape == (72, 96, 3)
    expected = photo.reshape(72, 2, 96, 2, 3).mean(axis=(1, 3))  # the photo at the render's resolution
    err = np.abs(rendered - expected).mean()
    shifted = np.abs(rendered[:, 2:] - expected[:, :-2]).mean()  # 2 px misalignment, for scale
    print(f"render vs photo: mean |diff| {err:.4f} (2 px shift would give {shifted:.4f})")
    assert err < 0.015
    assert err < shifted / 3


def test_depth_planes_share_one_min_confidence_per_reconstruction():
    """One control on the collection drives every plane of that reconstruction, and only that one."""
    one = _rec("/nonexistent/a.jpg", (96, 72), (96, 72), (1, 1, 0, 0), (0, 0, 96, 72), seed=5)
    two = make_reconstruction(
        np.concatenate([one.depth] * 2), np.concatenate([one.extrinsics] * 2),
        np.concatenate([one.intrinsics_model] * 2), depth_conf=np.concatenate([one.depth_conf, one.depth_conf[:, ::-1]]),
        pixel_map=np.concatenate([one.pixel_map] * 2), valid_box=np.concatenate([one.valid_box] * 2),
        original_sizes=np.concatenate([one.original_sizes] * 2), image_paths=["/nonexistent/a.jpg", "/nonexistent/b.jpg"])
    opts = SceneOptions(create_cameras=False, create_point_cloud=False, plane_step=4, min_confidence=1.0)
    first = build.build_scene(two, opts, "first")
    second = build.build_scene(_rec("/nonexistent/c.jpg", (96, 72), (96, 72), (1, 1, 0, 0), (0, 0, 96, 72), seed=6),
                               opts, "second")
    planes = [o for o in first.objects if o.get("vggt_kind") == "depth_plane"]
    (other,) = [o for o in second.objects if o.get("vggt_kind") == "depth_plane"]
    assert len(planes) == 2
    ui = first.id_properties_ui(node_groups.PLANE_MIN_CONFIDENCE_PROP).as_dict()
    assert ui["min"] == 1.0 and ui["description"]
    node_groups.set_shared_property(first, node_groups.PLANE_MIN_CONFIDENCE_PROP, 4.0)
    depsgraph = bpy.context.evaluated_depsgraph_get()
    for ob, threshold in ((planes[0], 4.0), (planes[1], 4.0), (other, 1.0)):
        conf = attributes.read_attribute(ob.data, "conf")
        assert node_groups.modifier_input(ob.modifiers["VGGT"], "Min Confidence") == pytest.approx(threshold)
        evaluated = ob.evaluated_get(depsgraph)
        mesh = evaluated.to_mesh()
        assert len(mesh.vertices) == int((conf >= threshold).sum())
        evaluated.to_mesh_clear()
    assert 0 < int((attributes.read_attribute(planes[0].data, "conf") >= 4.0).sum()) < len(planes[0].data.vertices)


def test_node_group_inputs_have_defaults_ranges_and_tooltips():
    for group in (node_groups.point_cloud_group(), node_groups.depth_plane_group()):
        inputs = {item.name: item for item in group.interface.items_tree
                  if item.item_type == "SOCKET" and item.in_out == "INPUT"}
        conf = inputs["Min Confidence"]
        assert (conf.min_value, conf.default_value) == (1.0, 1.0) and conf.description
        if "Point Radius" in inputs:
            radius = inputs["Point Radius"]
            assert radius.min_value == 0.0 and radius.default_value > 0 and radius.description
