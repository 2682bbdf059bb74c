"""Blender side of refinement (real bpy): each camera carries its solve error, the collection its mean and worst,
the panel flags cameras above 1 px, and File > Export > COLMAP writes the collection's reconstruction."""

from __future__ import annotations

import importlib
from pathlib import Path

import bpy
import numpy as np
import pytest

from vggt_blender.extension_package import load_extension_package
from tests.helpers import synthetic_reconstruction
from vggt_blender.io.reconstruction import save_reconstruction
from vggt_blender.options import SceneOptions

EXT = load_extension_package("_vggt_ext_tests")
build = importlib.import_module(f"{EXT.__name__}.scene.build")
panel = importlib.import_module(f"{EXT.__name__}.panels.main_panel")
export_op = importlib.import_module(f"{EXT.__name__}.operators.export_colmap")

CAMERAS_ONLY = dict(create_point_cloud=False, create_depth_planes=False, background_images=False)
ERRORS = np.array([0.31, 1.72, np.nan, 0.55])


@pytest.fixture(autouse=True)
def empty_file():
    bpy.ops.wm.read_homefile(use_empty=True)
    yield


def _refined_file(tmp_path: Path) -> Path:
    from PIL import Image

    rec = synthetic_reconstruction(4)
    paths = []
    for i in range(4):
        p = tmp_path / f"synthetic_{i:02d}.png"
        Image.fromarray(rec.colors[i]).save(p)
        paths.append(str(p))
    rec.image_paths = rec.display_paths = paths
    rec.extra["reprojection_error"] = ERRORS.copy()
    return save_reconstruction(tmp_path / "refined.npz", rec)


class _Layout:
    """Records what a draw function puts in a layout (labels with their alert state)."""

    def __init__(self, lines: list, alert: bool = False) -> None:
        self.lines, self.alert = lines, alert

    def box(self):
        return _Layout(self.lines)

    def row(self, **_kw):
        return _Layout(self.lines)

    def label(self, text: str = "", icon: str = "NONE"):
        self.lines.append((text, self.alert))


def test_cameras_carry_their_solve_error_and_the_panel_flags_the_bad_one(tmp_path):
    col = build.import_reconstruction_file(_refined_file(tmp_path), SceneOptions(**CAMERAS_ONLY))
    cams = sorted((o for o in col.objects if o.get("vggt_kind") == "camera"), key=lambda o: o["vggt_view_index"])
    assert [cams[i]["vggt_solve_error"] for i in (0, 1, 3)] == pytest.approx([0.31, 1.72, 0.55])
    assert "vggt_solve_error" not in cams[2]  # NaN: no inlier observations, no error to show
    assert col["vggt_solve_error_mean"] == pytest.approx(np.nanmean(ERRORS))
    assert col["vggt_solve_error_max"] == pytest.approx(1.72)
    lines: list = []
    panel.draw_solve_error(_Layout(lines), cams[0])
    assert lines[0] == (f"Solve error: mean {np.nanmean(ERRORS):.2f} px, worst 1.72 px", True)
    flagged = [text for text, alert in lines[1:] if alert]
    assert flagged == [f"{cams[1].name}: 1.72 px"]
    assert lines[-1] == (f"{cams[0].name}: 0.31 px", False)


def test_unrefined_collection_shows_no_solve_error(tmp_path):
    rec = synthetic_reconstruction(2)
    col = build.build_scene(rec, SceneOptions(**CAMERAS_ONLY), "plain")
    assert "vggt_solve_error_mean" not in col
    lines: list = []
    panel.draw_solve_error(_Layout(lines), col.objects[0])
    assert lines == []


def test_file_export_colmap_writes_the_selected_collection(tmp_path):
    pycolmap = pytest.importorskip("pycolmap")
    for cls in export_op.classes:
        bpy.utils.register_class(cls)
    try:
        col = build.import_reconstruction_file(_refined_file(tmp_path), SceneOptions(**CAMERAS_ONLY))
        ob = col.objects[0]
        bpy.context.view_layer.objects.active = ob
        assert bpy.ops.vggt.export_colmap(directory=str(tmp_path / "colmap")) == {"FINISHED"}
        model = pycolmap.Reconstruction(str(tmp_path / "colmap" / "sparse" / "0"))
        assert model.num_images() == 4 and model.num_points3D() > 100
        assert len(list((tmp_path / "colmap" / "images").iterdir())) == 4
        bpy.context.view_layer.objects.active = None
        assert not export_op.VGGT_OT_export_colmap.poll(bpy.context)
    finally:
        for cls in reversed(export_op.classes):
            bpy.utils.unregister_class(cls)
