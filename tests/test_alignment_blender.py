"""Alignment in Blender (bpy): the import applies the file's alignment to everything it builds, and Level to
Floor / Set Origin / Set Scale keep every camera projecting world points onto the right photo pixels, write the
alignment back, and a re-import of the written file gives the same scene."""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import sys
from pathlib import Path

import bpy
import numpy as np
import pytest
from bpy_extras.object_utils import world_to_camera_view
from mathutils import Vector

from vggt_blender.extension_package import load_extension_package
from vggt_blender.geometry import alignment as al
from vggt_blender.io.reconstruction import load_reconstruction, save_reconstruction
from vggt_blender.options import SceneOptions

from tests import alignment_scenes as scenes

EXT = load_extension_package("_vggt_ext_tests")
build = importlib.import_module(f"{EXT.__name__}.scene.build")
cameras = importlib.import_module(f"{EXT.__name__}.scene.cameras")
attributes = importlib.import_module(f"{EXT.__name__}.scene.attributes")
transform = importlib.import_module(f"{EXT.__name__}.scene.transform")
ops_alignment = importlib.import_module(f"{EXT.__name__}.operators.alignment")

OPTIONS = SceneOptions(camera_mode="both", background_images=False, plane_step=6, max_points=50_000)


@pytest.fixture(autouse=True)
def empty_file():
    bpy.ops.wm.read_homefile(use_empty=True)
    for cls in ops_alignment.classes:
        bpy.utils.register_class(cls)
    yield
    for cls in reversed(ops_alignment.classes):
        bpy.utils.unregister_class(cls)


def _scene():
    E = scenes.arc_cameras(5, 4.0, 2.0, target=(0, 0, 0.3), span_deg=80.0, first_roll=8.0, first_pitch_extra=10.0)
    return scenes.make_scene(E, [((-0.5, -0.5, 0.0), (0.5, 0.5, 1.0))], [((-1.2, 0.8, 0.4), 0.4)], width=40,
                             height=30)


def _projection_error(col, rec, scene_from_world) -> float:
    """Largest pixel error of every camera (and the animated one at every frame) on known world points."""
    scene = bpy.context.scene
    rng = np.random.default_rng(5)
    worst = 0.0
    shot = next(o for o in col.objects if o.get("vggt_kind") == "animated_camera")
    per_photo = {o["vggt_view_index"]: o for o in col.objects if o.get("vggt_kind") == "camera"}
    for i in range(rec.num_images):
        W, H = (int(v) for v in rec.original_sizes[i])
        pix = np.c_[rng.uniform(0, W, 20), rng.uniform(0, H, 20)]
        ray = np.linalg.solve(rec.intrinsics[i], np.c_[pix, np.ones(20)].T).T
        R, t = rec.extrinsics[i][:, :3], rec.extrinsics[i][:, 3]
        world = (ray * rng.uniform(0.3, 3.0, 20)[:, None] - t) @ R
        placed = al.apply_alignment(scene_from_world, world)
        scene.frame_set(i + 1)
        for cam in (per_photo[i], shot):
            cameras.activate_camera(scene, cam)
            got = np.array([[(n := world_to_camera_view(scene, cam, Vector(p.tolist()))).x * W, (1 - n.y) * H]
                            for p in placed])
            worst = max(worst, float(np.abs(got - pix).max()))
    return worst


def _points(col, confident=False) -> np.ndarray:
    """Point-cloud positions in the world (only the ray-cast hits with `confident`; misses have conf 1)."""
    ob = next(o for o in col.objects if o.get("vggt_kind") == "point_cloud")
    pts = attributes.read_positions(ob.data).astype(np.float64) @ np.array(ob.matrix_world)[:3, :3].T
    return pts[attributes.read_attribute(ob.data, "conf") > 2] if confident else pts


def _point_radius(col) -> float:
    ob = next(o for o in col.objects if o.get("vggt_kind") == "point_cloud")
    mod = ob.modifiers["VGGT"]
    node_groups = importlib.import_module(f"{EXT.__name__}.scene.node_groups")
    return float(mod[node_groups.socket_identifier(mod.node_group, "Point Radius")])


def _floor_share(points, size) -> float:
    return float(np.mean(np.abs(points[:, 2]) < 0.01 * size))


def _activate(col, name):
    ob = col.objects[name]
    bpy.context.view_layer.objects.active = ob
    return ob


def test_import_applies_the_files_alignment_to_everything(tmp_path):
    sc = _scene()
    result = al.align_reconstruction(sc.rec, "floor")
    sc.rec.alignment = al.scaled_alignment(result.matrix, 2.5)  # a scale in the alignment too
    path = save_reconstruction(tmp_path / "floor.npz", sc.rec)
    col = build.import_reconstruction_file(path, OPTIONS)
    err = _projection_error(col, sc.rec, sc.rec.alignment)
    print(f"import with alignment: max projection error {err:.2e} px")
    assert err < 0.01
    pts = _points(col, confident=True)
    share = _floor_share(pts, 2.5 * sc.size_rec)
    print(f"point cloud: {100 * share:.0f}% of the points on z = 0")
    assert share > 0.3 and pts[:, 2].min() > -0.02 * 2.5 * sc.size_rec
    # Depth planes are in the same frame: every vertex is on or above the floor.
    for ob in (o for o in col.objects if o.get("vggt_kind") == "depth_plane"):
        hit = attributes.read_attribute(ob.data, "conf") > 2
        assert attributes.read_positions(ob.data)[hit][:, 2].min() > -0.02 * 2.5 * sc.size_rec
    np.testing.assert_allclose(transform.collection_alignment(col), sc.rec.alignment)


@pytest.mark.parametrize("import_scale", [1.0, 2.0])
def test_level_origin_scale_keep_cameras_right_and_write_the_file_back(tmp_path, import_scale):
    sc = _scene()
    path = save_reconstruction(tmp_path / "plain.npz", sc.rec)  # no alignment: today's axis change
    col = build.import_reconstruction_file(path, dataclasses.replace(OPTIONS, scale=import_scale))
    assert _floor_share(_points(col, True), import_scale * sc.size_rec) < 0.05  # tilted: the floor is not at z = 0
    first = sc.rec.image_names[0]
    _activate(col, first)

    assert bpy.ops.vggt.level_to_floor() == {"FINISHED"}
    A = load_reconstruction(path).alignment
    np.testing.assert_allclose(transform.collection_alignment(col), A, atol=1e-12)
    up_error = scenes.angle_deg(al.similarity_parts(A)[1] @ sc.up_rec, [0, 0, 1])
    share = _floor_share(_points(col, True), import_scale * sc.size_rec)
    err = _projection_error(col, sc.rec, A)
    print(f"Level to Floor: up {up_error:.3f} deg off, {100 * share:.0f}% of points on z = 0, projection {err:.2e} px")
    assert up_error < 1.0 and share > 0.3 and err < 0.01

    bpy.context.scene.cursor.location = (0.3, -0.2, 0.0)
    assert bpy.ops.vggt.set_origin(source="CURSOR") == {"FINISHED"}
    A2 = load_reconstruction(path).alignment
    np.testing.assert_allclose(A2, al.origin_transform(np.array([0.3, -0.2, 0.0])) @ A, atol=1e-12)
    assert _projection_error(col, sc.rec, A2) < 0.01

    cams = [col.objects[n] for n in sc.rec.image_names[:2]]
    for ob in bpy.context.selected_objects:
        ob.select_set(False)
    for ob in cams:
        ob.select_set(True)
    radius = _point_radius(col)
    s_before = al.similarity_parts(A2)[0]
    assert bpy.ops.vggt.set_scale(distance=5.0) == {"FINISHED"}
    A3 = load_reconstruction(path).alignment
    factor = al.similarity_parts(A3)[0] / s_before
    assert _point_radius(col) == pytest.approx(radius * factor, rel=1e-5)  # points keep their look
    gap = (cams[0].matrix_world.translation - cams[1].matrix_world.translation).length
    err = _projection_error(col, sc.rec, A3)
    print(f"Set Scale: cameras {gap:.6f} apart (asked 5), projection {err:.2e} px")
    assert gap == pytest.approx(5.0, rel=1e-6) and err < 0.01

    # The written file re-imports to the same scene (scale now in the alignment, import scale 1).
    again = build.import_reconstruction_file(path, OPTIONS, name="again")
    def by_view(c, kind):
        return {o["vggt_view_index"]: o for o in c.objects if o.get("vggt_kind") == kind}

    moved, fresh = by_view(col, "camera"), by_view(again, "camera")
    assert sorted(fresh) == list(range(sc.rec.num_images))
    for i in fresh:
        np.testing.assert_allclose(np.array(fresh[i].matrix_world), np.array(moved[i].matrix_world), atol=1e-5)
    assert _projection_error(again, sc.rec, A3) < 0.01
    np.testing.assert_allclose(_points(again), _points(col), atol=1e-4)
    ob = next(o for o in col.objects if o.get("vggt_kind") == "depth_plane")
    twin = next(o for o in again.objects if o.get("vggt_kind") == "depth_plane" and o["vggt_view_index"] ==
                ob["vggt_view_index"])
    np.testing.assert_allclose(attributes.read_attribute(twin.data, "depth"),
                               attributes.read_attribute(ob.data, "depth"), rtol=1e-5)
    np.testing.assert_allclose(attributes.read_positions(twin.data), attributes.read_positions(ob.data), atol=1e-4)


def test_level_to_floor_from_selected_vertices(tmp_path):
    sc = _scene()
    path = save_reconstruction(tmp_path / "plain.npz", sc.rec)
    col = build.import_reconstruction_file(path, OPTIONS)
    points = next(o for o in col.objects if o.get("vggt_kind") == "point_cloud")
    # Select the vertices that are truly on the floor (known from the synthetic scene).
    pos = attributes.read_positions(points.data).astype(np.float64)
    true = (np.linalg.inv(sc.to_rec) @ np.c_[pos @ al.DEFAULT_ALIGNMENT[:3, :3], np.ones(len(pos))].T).T[:, :3]
    on_floor = np.abs(true[:, 2]) < 0.005
    assert on_floor.sum() > 50
    points.data.vertices.foreach_set("select", on_floor)
    bpy.context.view_layer.objects.active = points
    points.select_set(True)
    bpy.ops.object.mode_set(mode="EDIT")
    try:
        assert bpy.ops.vggt.level_to_floor() == {"FINISHED"}
        assert bpy.context.mode == "EDIT_MESH"
        assert bpy.ops.vggt.set_origin(source="SELECTION") == {"FINISHED"}  # the selection's centre
    finally:
        bpy.ops.object.mode_set(mode="OBJECT")
    A = load_reconstruction(path).alignment
    up_error = scenes.angle_deg(al.similarity_parts(A)[1] @ sc.up_rec, [0, 0, 1])
    err = _projection_error(col, sc.rec, A)
    print(f"Level to Floor (selected vertices): up {up_error:.3f} deg off, projection {err:.2e} px")
    assert up_error < 1.0 and err < 0.01
    assert np.abs(_points(col)[on_floor][:, 2]).max() < 0.01 * sc.size_rec
    np.testing.assert_allclose(_points(col)[on_floor].mean(axis=0), 0.0, atol=1e-5)


def test_failed_write_changes_nothing(tmp_path):
    sc = _scene()
    path = save_reconstruction(tmp_path / "plain.npz", sc.rec)
    col = build.import_reconstruction_file(path, OPTIONS)
    bpy.context.scene.frame_set(1)  # the animated camera's matrix is evaluated
    before = {o.name: np.array(o.matrix_world) for o in col.objects}
    points_before = _points(col)
    path.unlink()
    _activate(col, sc.rec.image_names[0])
    with pytest.raises(RuntimeError, match="file not found"):
        bpy.ops.vggt.set_origin(source="CURSOR")
    for o in col.objects:
        np.testing.assert_allclose(np.array(o.matrix_world), before[o.name], atol=1e-6)  # not moved
    np.testing.assert_array_equal(_points(col), points_before)
