"""Point cloud and the attribute helper (bpy): bulk attributes, subsampling, the live confidence filter."""

from __future__ import annotations

import importlib

import bpy
import numpy as np
import pytest

from vggt_blender.extension_package import load_extension_package
from tests.helpers import synthetic_reconstruction
from vggt_blender.options import SceneOptions

EXT = load_extension_package("_vggt_ext_tests")
attributes = importlib.import_module(f"{EXT.__name__}.scene.attributes")
point_cloud = importlib.import_module(f"{EXT.__name__}.scene.point_cloud")
node_groups = importlib.import_module(f"{EXT.__name__}.scene.node_groups")
build = importlib.import_module(f"{EXT.__name__}.scene.build")

POINTS_ONLY = dict(create_cameras=False, create_depth_planes=False)


@pytest.fixture(autouse=True)
def empty_file():
    bpy.ops.wm.read_homefile(use_empty=True)
    yield


def _grid_mesh():
    """3x3 vertices, 4 quads, 16 corners."""
    mesh = bpy.data.meshes.new("grid")
    verts = [(x, y, 0.0) for y in range(3) for x in range(3)]
    faces = [(r * 3 + c, r * 3 + c + 1, r * 3 + c + 4, r * 3 + c + 3) for r in range(2) for c in range(2)]
    mesh.from_pydata(verts, [], faces)
    return mesh


@pytest.mark.parametrize("domain,count", [("POINT", 9), ("FACE", 4), ("CORNER", 16)])
@pytest.mark.parametrize("data_type,comps", [("FLOAT", 1), ("INT", 1), ("BOOLEAN", 1), ("FLOAT2", 2),
                                             ("FLOAT_VECTOR", 3), ("FLOAT_COLOR", 4)])
def test_attribute_round_trip(domain, count, data_type, comps):
    mesh = _grid_mesh()
    rng = np.random.default_rng(0)
    shape = (count,) if comps == 1 else (count, comps)
    if data_type == "INT":
        values = rng.integers(-1000, 1000, shape)
    elif data_type == "BOOLEAN":
        values = rng.random(shape) > 0.5
    else:
        values = rng.random(shape).astype(np.float32)
    attr = attributes.write_attribute(mesh, "a", domain, data_type, values)
    assert (attr.domain, attr.data_type) == (domain, data_type)
    back = attributes.read_attribute(mesh, "a")
    assert back.shape == shape
    np.testing.assert_array_equal(back, values)


def test_attribute_shape_and_type_checks():
    mesh = _grid_mesh()
    with pytest.raises(ValueError, match=r"needs shape \(9,\)"):
        attributes.write_attribute(mesh, "a", "POINT", "FLOAT", np.zeros(8))
    with pytest.raises(ValueError, match=r"needs shape \(4, 3\)"):
        attributes.write_attribute(mesh, "a", "FACE", "FLOAT_VECTOR", np.zeros((4, 2)))
    with pytest.raises(ValueError, match="unsupported"):
        attributes.write_attribute(mesh, "a", "POINT", "STRING", np.zeros(9))
    # RGB colours get an opaque alpha; an existing attribute of another type is replaced.
    attributes.write_attribute(mesh, "c", "POINT", "FLOAT", np.ones(9))
    attributes.write_attribute(mesh, "c", "POINT", "FLOAT_COLOR", np.full((9, 3), 0.25))
    back = attributes.read_attribute(mesh, "c")
    np.testing.assert_allclose(back, np.tile([0.25, 0.25, 0.25, 1.0], (9, 1)))
    with pytest.raises(KeyError):
        attributes.read_attribute(mesh, "missing")
    np.testing.assert_allclose(attributes.read_positions(mesh)[4], [1, 1, 0])


def test_srgb_to_linear_table():
    lin = attributes.srgb_to_linear_u8(np.array([0, 10, 128, 255], dtype=np.uint8))
    np.testing.assert_allclose(lin, [0.0, 10 / 255 / 12.92, ((128 / 255 + 0.055) / 1.055) ** 2.4, 1.0], rtol=1e-6)


@pytest.mark.parametrize("source", ["depth", "point_map"])
def test_point_cloud_attributes_match_reconstruction(source):
    rec = synthetic_reconstruction(num_images=3, height=28, width=42)
    opts = SceneOptions(point_source=source, max_points=2000, scale=2.0, **POINTS_ONLY)
    col = build.build_scene(rec, opts, "pc")
    (ob,) = [o for o in col.objects if o.get("vggt_kind") == "point_cloud"]
    mesh = ob.data
    points = rec.world_points if source == "depth" else rec.point_map
    conf = rec.depth_conf if source == "depth" else rec.point_map_conf
    # Expected without the code under test: Blender world is (x, z, -y) times the scale, and each vertex must
    # be one distinct pixel's point carrying that pixel's confidence, photo index and (linearised) colour.
    table = np.stack([points[..., 0], points[..., 2], -points[..., 1]], axis=-1).reshape(-1, 3).astype(np.float32)
    table *= np.float32(2.0)  # exact in float32, like the builder's own scaling
    where = {row.tobytes(): i for i, row in enumerate(table)}
    assert len(where) == len(table)  # every point is distinct, so a position names its pixel
    positions = np.ascontiguousarray(attributes.read_positions(mesh), dtype=np.float32)
    assert len(positions) == 2000  # every pixel of the synthetic file is valid and finite: exactly max_points
    pixel = np.array([where[row.tobytes()] for row in positions])
    assert len(np.unique(pixel)) == 2000
    assert np.all(np.diff(pixel) > 0)  # kept in pixel order
    np.testing.assert_array_equal(attributes.read_attribute(mesh, "conf"), conf.reshape(-1)[pixel])
    np.testing.assert_array_equal(attributes.read_attribute(mesh, "view_index"), pixel // (28 * 42))
    col_attr = attributes.read_attribute(mesh, "Col")
    srgb = rec.colors.reshape(-1, 3)[pixel] / 255.0
    linear = np.where(srgb <= 0.04045, srgb / 12.92, ((srgb + 0.055) / 1.055) ** 2.4)
    np.testing.assert_allclose(col_attr[:, :3], linear, rtol=1e-5, atol=1e-7)
    np.testing.assert_array_equal(col_attr[:, 3], 1.0)
    # The sample is spread over the photos roughly in proportion (each has the same number of pixels).
    assert np.abs(np.bincount(pixel // (28 * 42), minlength=3) / 2000 - 1 / 3).max() < 0.05


def evaluated_point_cloud(ob):
    """(owner to keep alive, evaluated PointCloud or None) of `ob` under its modifiers."""
    depsgraph = bpy.context.evaluated_depsgraph_get()
    evaluated = ob.evaluated_get(depsgraph)
    if hasattr(evaluated, "evaluated_geometry"):  # Blender 4.3+
        geometry = evaluated.evaluated_geometry()
        return geometry, geometry.pointcloud
    # Blender 4.2: the point cloud comes out of the depsgraph as an instance of the object.
    for inst in depsgraph.object_instances:
        if inst.object.type == "POINTCLOUD" and inst.object.original == ob:
            return inst.object, inst.object.data
    return None, None


def test_geometry_nodes_filter_counts_match_numpy():
    rec = synthetic_reconstruction(num_images=4, height=28, width=42, seed=2)
    opts = SceneOptions(max_points=3000, point_radius=0.01, scale=2.0, **POINTS_ONLY)
    col = build.build_scene(rec, opts, "pc")
    (ob,) = [o for o in col.objects if o.get("vggt_kind") == "point_cloud"]
    conf = attributes.read_attribute(ob.data, "conf")
    assert len(conf) == 3000
    for threshold in (1.0, 1.5, 3.3, 7.9, 10.5):
        node_groups.set_modifier_input(ob, "Min Confidence", threshold)
        geometry, cloud = evaluated_point_cloud(ob)  # keep `geometry` referenced while reading
        expected = int((conf >= threshold).sum())
        assert (len(cloud.points) if cloud else 0) == expected, threshold
        if expected:
            radius = np.empty(expected, dtype=np.float32)
            cloud.attributes["radius"].data.foreach_get("value", radius)
            np.testing.assert_allclose(radius, 0.01)  # the option, in scene units (not times Scale)
            assert cloud.materials[0].name == "VGGT Point Color"
