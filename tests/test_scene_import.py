"""Import operator and headless .blend (bpy): collections, shared data-blocks, properties, errors."""

from __future__ import annotations

import importlib
import sys

import bpy
import numpy as np
import pytest

from vggt_blender.extension_package import load_extension_package
from vggt_blender.errors import VGGTError
from vggt_blender.io.reconstruction import save_reconstruction
from tests.helpers import save_png, synthetic_reconstruction
from vggt_blender.options import SceneOptions

EXT = load_extension_package("_vggt_ext_tests")
BLEND_FILE = importlib.import_module("_vggt_ext_tests.scene.blend_file")
BPY_MISSING, write_blend = BLEND_FILE.BPY_MISSING, BLEND_FILE.write_blend
importer = importlib.import_module(f"{EXT.__name__}.operators.import_reconstruction")
cameras_module = importlib.import_module(f"{EXT.__name__}.scene.cameras")
build_module = importlib.import_module(f"{EXT.__name__}.scene.build")
node_groups = importlib.import_module(f"{EXT.__name__}.scene.node_groups")


@pytest.fixture(autouse=True)
def empty_file():
    bpy.ops.wm.read_homefile(use_empty=True)
    yield


@pytest.fixture
def operator_registered():
    for cls in importer.classes:
        bpy.utils.register_class(cls)
    yield
    for cls in reversed(importer.classes):
        bpy.utils.unregister_class(cls)


@pytest.fixture
def rec_file(tmp_path):
    """A 3-photo reconstruction whose photos exist (as small PNGs in a folder named 'garden')."""
    rec = synthetic_reconstruction(num_images=3, height=28, width=42)
    folder = tmp_path / "garden"
    folder.mkdir()
    paths = []
    for i in range(3):
        path = folder / f"IMG_{i:04d}.png"
        save_png(path, rec.colors[i])
        paths.append(str(path))
    rec.image_paths = list(paths)
    rec.display_paths = list(paths)
    rec.image_names = [f"IMG_{i:04d}" for i in range(3)]
    return save_reconstruction(tmp_path / "garden.npz", rec), rec


def _kinds(collection):
    kinds: dict[str, int] = {}
    for ob in collection.objects:
        kinds[ob["vggt_kind"]] = kinds.get(ob["vggt_kind"], 0) + 1
    return kinds


def test_panel_settings_and_import_operator_share_one_declaration(operator_registered):
    # Both get the SceneOptions properties from one mixin: same names, defaults, limits and descriptions.
    props_module = importlib.import_module(f"{EXT.__name__}.properties")
    props_module.register()
    try:
        panel = bpy.context.scene.vggt.bl_rna.properties
        operator = bpy.ops.vggt.import_reconstruction.get_rna_type().properties
        names = [f for f in SceneOptions.__dataclass_fields__]
        for name in names:
            a, b = panel[name], operator[name]
            assert (a.type, a.name, a.description) == (b.type, b.name, b.description), name
            if a.type in {"INT", "FLOAT"}:
                assert (a.default, a.hard_min, a.hard_max) == (b.default, b.hard_min, b.hard_max), name
        assert operator["min_confidence"].hard_min == 1.0 and operator["max_points"].hard_min == 1
        settings = bpy.context.scene.vggt
        settings.max_points, settings.camera_mode, settings.create_depth_planes = 1234, "both", False
        options = props_module.scene_options_from(settings)
        assert settings.scene_options() == options and type(options.max_points) is int
        assert (options.max_points, options.camera_mode, options.create_depth_planes) == (1234, "both", False)
        assert options.point_radius == pytest.approx(SceneOptions().point_radius)
    finally:
        props_module.unregister()


def test_importing_twice_makes_two_collections_and_shares_groups_and_materials(rec_file, operator_registered):
    path, rec = rec_file
    for _ in range(2):
        assert bpy.ops.vggt.import_reconstruction(filepath=str(path), camera_mode="both",
                                                  max_points=500, plane_step=2) == {"FINISHED"}
    scene = bpy.context.scene
    cols = list(scene.collection.children)
    assert [c.name for c in cols] == ["garden", "garden.001"]
    for col in cols:
        assert col["vggt_reconstruction"] == str(path.resolve())
        assert "vggt_warnings" not in col
        assert _kinds(col) == {"camera": 3, "animated_camera": 1, "point_cloud": 1, "depth_plane": 3}
        cam = col.objects[rec.image_names[0]] if col.name == "garden" else col.objects[rec.image_names[0] + ".001"]
        assert cam["vggt_image_path"] == rec.display_paths[0]
        assert (cam["vggt_image_width"], cam["vggt_image_height"]) == (42, 28)
        assert cam.data.background_images[0].image.filepath == rec.display_paths[0]
        points = next(o for o in col.objects if o["vggt_kind"] == "point_cloud")
        assert len(points.data.vertices) == 500
    # The animated camera shows each photo on its own frame; the others are hidden (not just transparent,
    # which would still upload every photo to the GPU).
    shot = next(o for o in cols[0].objects if o["vggt_kind"] == "animated_camera")
    backgrounds = shot.data.background_images
    assert [bg.image.filepath for bg in backgrounds] == rec.display_paths
    for frame in (1, 2, 3, 2):
        scene.frame_set(frame)
        assert [bg.show_background_image for bg in backgrounds] == [i == frame - 1 for i in range(3)]
        assert [round(bg.alpha, 3) for bg in backgrounds] == [0.8] * 3
    keyed = {fc.data_path: {kp.interpolation for kp in fc.keyframe_points}
             for fc in cameras_module._fcurves(shot.data) if fc.data_path.startswith("background_images")}
    assert sorted(keyed) == [f"background_images[{i}].show_background_image" for i in range(3)]
    assert all(kinds == {"CONSTANT"} for kinds in keyed.values())
    groups = sorted(g.name for g in bpy.data.node_groups)
    assert groups == ["VGGT Depth Plane Filter", "VGGT Point Cloud"]
    mats = sorted(m.name for m in bpy.data.materials)
    assert mats == ["VGGT Photo IMG_0000", "VGGT Photo IMG_0001", "VGGT Photo IMG_0002", "VGGT Point Color"]
    assert len(bpy.data.images) == 3
    assert scene.camera is not None and (scene.frame_start, scene.frame_end) == (1, 3)


def test_name_option_and_scene_options(rec_file, operator_registered):
    path, _ = rec_file
    assert bpy.ops.vggt.import_reconstruction(
        filepath=str(path), name="My Scan", create_cameras=False, create_depth_planes=False,
        min_confidence=4.0, point_radius=0.02, scale=3.0) == {"FINISHED"}
    col = bpy.data.collections["My Scan"]
    assert _kinds(col) == {"point_cloud": 1}
    points = col.objects[0]
    mod = points.modifiers["VGGT"]
    assert node_groups.modifier_input(mod, "Min Confidence") == pytest.approx(4.0)
    # scene units: not multiplied by Scale
    assert node_groups.modifier_input(mod, "Point Radius") == pytest.approx(0.02)
    assert node_groups.modifier_input(mod, "Material").name == "VGGT Point Color"


@pytest.mark.parametrize("content,problem", [
    (b"this is not a zip archive", "not a reconstruction file"),
    (None, "file not found"),
])
def test_bad_file_gives_a_readable_error(tmp_path, operator_registered, content, problem):
    path = tmp_path / "broken.npz"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(RuntimeError) as info:
        bpy.ops.vggt.import_reconstruction(filepath=str(path))
    message = str(info.value)
    assert str(path) in message and problem in message
    assert "Traceback" not in message
    assert len(bpy.data.collections) == 0


def test_menu_entry_runs_the_registered_import(operator_registered, rec_file):
    # What File > Import draws: the entry must name an operator that exists and imports the file.
    class Layout:
        def __init__(self):
            self.entries = []

        def operator(self, idname, text=""):
            self.entries.append((idname, text))

    menu = type("Menu", (), {"layout": Layout()})()
    importer.menu_func_import(menu, bpy.context)
    ((idname, text),) = menu.layout.entries
    assert ".npz" in text
    group, name = idname.split(".")
    operator = getattr(getattr(bpy.ops, group), name)
    path, rec = rec_file
    assert operator(filepath=str(path)) == {"FINISHED"}
    cams = [o for o in bpy.data.objects if o.get("vggt_kind") == "camera"]
    assert len(cams) == rec.num_images


def test_write_blend_reopens_with_the_objects(rec_file, tmp_path):
    path, rec = rec_file
    blend = tmp_path / "out" / "scene.blend"
    blend.parent.mkdir()
    written = write_blend(path, blend, SceneOptions(max_points=300, plane_step=3))
    assert written == blend.resolve() and blend.stat().st_size > 0
    bpy.ops.wm.read_homefile(use_empty=True)
    assert len(bpy.data.objects) == 0
    bpy.ops.wm.open_mainfile(filepath=str(blend))
    col = bpy.data.collections["garden"]
    assert _kinds(col) == {"camera": 3, "point_cloud": 1, "depth_plane": 3}
    assert sorted(o.name for o in col.objects if o.type == "CAMERA") == rec.image_names
    points = next(o for o in col.objects if o["vggt_kind"] == "point_cloud")
    assert len(points.data.vertices) == 300
    assert points.data.attributes["conf"].data_type == "FLOAT"
    assert points.modifiers["VGGT"].node_group.name == "VGGT Point Cloud"
    np.testing.assert_array_equal(sorted(o["vggt_view_index"] for o in col.objects if o.type == "CAMERA"),
                                  [0, 1, 2])


def test_write_blend_stores_the_reconstruction_relative_to_the_blend(rec_file, tmp_path):
    path, _ = rec_file  # tmp_path/garden.npz: beside the .blend
    blend = tmp_path / "scene.blend"
    write_blend(path, blend, SceneOptions(create_point_cloud=False, create_depth_planes=False))
    bpy.ops.wm.read_homefile(use_empty=True)
    bpy.ops.wm.open_mainfile(filepath=str(blend))
    col = bpy.data.collections["garden"]
    assert col["vggt_reconstruction"] == "//garden.npz"
    assert bpy.path.abspath(col["vggt_reconstruction"]) == str(path)
    note = BLEND_FILE.blend_compatibility_note(blend, path)
    major, minor = bpy.app.version[:2]
    assert f"saved by Blender {major}.{minor}" in note and "garden.npz" in note and "4.2" in note
    assert BLEND_FILE.oldest_blender_that_opens((5, 0)) == (4, 5)  # measured: 4.2 refuses a 5.0 file


def test_write_blend_errors(rec_file, tmp_path, monkeypatch):
    path, _ = rec_file
    with pytest.raises(VGGTError, match=r"must end in \.blend"):
        write_blend(path, tmp_path / "scene.txt")
    with pytest.raises(VGGTError, match="does not exist"):
        write_blend(path, tmp_path / "missing" / "scene.blend")
    with pytest.raises(VGGTError, match="file not found"):
        write_blend(tmp_path / "nothing.npz", tmp_path / "scene.blend")
    monkeypatch.setitem(sys.modules, "bpy", None)  # as if this Python had no bpy
    with pytest.raises(VGGTError) as info:
        write_blend(path, tmp_path / "scene.blend")
    assert str(info.value) == BPY_MISSING


def test_failed_build_leaves_nothing_behind(rec_file, operator_registered, monkeypatch):
    path, _ = rec_file
    depth_planes = importlib.import_module(f"{EXT.__name__}.scene.depth_planes")

    def broken(*args, **kwargs):
        raise ValueError("plane_step must be >= 1, got 0")

    monkeypatch.setattr(depth_planes, "depth_plane_arrays", broken)
    scene = bpy.context.scene
    scene.frame_start, scene.frame_end = 10, 20
    kept = bpy.data.materials.new("artist's material")  # existing data-blocks survive the rollback
    # Depth planes come last: cameras (with actions), images, materials and node groups exist by then.
    with pytest.raises(RuntimeError, match="plane_step must be >= 1"):
        bpy.ops.vggt.import_reconstruction(filepath=str(path), camera_mode="both")
    assert len(bpy.data.collections) == 0 and len(bpy.data.objects) == 0
    assert len(bpy.data.meshes) == 0 and len(bpy.data.cameras) == 0
    assert len(bpy.data.actions) == 0 and len(bpy.data.images) == 0 and len(bpy.data.node_groups) == 0
    assert list(bpy.data.materials) == [kept]
    assert (scene.frame_start, scene.frame_end) == (10, 20) and scene.camera is None


def test_reconstruction_path_is_relative_under_the_saved_blend(rec_file, tmp_path):
    path, rec = rec_file  # tmp_path/garden.npz
    bpy.ops.wm.save_as_mainfile(filepath=str(tmp_path / "project.blend"))
    inside = build_module.import_reconstruction_file(path, SceneOptions(create_point_cloud=False,
                                                                        create_depth_planes=False))
    assert inside["vggt_reconstruction"] == "//" + path.name
    assert bpy.path.abspath(inside["vggt_reconstruction"]) == str(path)
    elsewhere = tmp_path / "sub" / "other.blend"
    elsewhere.parent.mkdir()
    bpy.ops.wm.save_as_mainfile(filepath=str(elsewhere))
    outside = build_module.import_reconstruction_file(path, SceneOptions(create_point_cloud=False,
                                                                         create_depth_planes=False))
    assert outside["vggt_reconstruction"] == str(path.resolve())  # not under the .blend's folder: absolute


def test_point_material_is_emission_only(rec_file, operator_registered):
    path, _ = rec_file
    assert bpy.ops.vggt.import_reconstruction(filepath=str(path), create_cameras=False,
                                              create_depth_planes=False) == {"FINISHED"}
    mat = bpy.data.materials["VGGT Point Color"]
    nodes = mat.node_tree.nodes
    assert sorted(n.bl_idname for n in nodes) == ["ShaderNodeAttribute", "ShaderNodeEmission",
                                                  "ShaderNodeOutputMaterial"]
    out = next(n for n in nodes if n.bl_idname == "ShaderNodeOutputMaterial")
    emit = out.inputs["Surface"].links[0].from_node
    assert emit.bl_idname == "ShaderNodeEmission" and emit.inputs["Strength"].default_value == 1.0
    attr = emit.inputs["Color"].links[0].from_node
    assert attr.attribute_name == "Col" and attr.attribute_type == "GEOMETRY"
