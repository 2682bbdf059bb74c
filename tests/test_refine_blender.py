"""Blender side of refinement (real bpy): each camera carries its solve error, the collection its mean and worst,
the panel flags cameras above 1 px, and File > Export > COLMAP writes the collection's reconstruction."""

from __future__ import annotations

import importlib
import time
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


# ---- Refine Cameras: the worker refines the active reconstruction's file, the collection is rebuilt from it ----

VIEWS = [3, 4, 5]


@pytest.fixture
def refine_ops(monkeypatch):
    """The properties, the Reconstruct/Cancel and Refine Cameras operators and the task registry, registered in
    this process; the worker runs with this Python (it has pycolmap)."""
    import sys

    properties = importlib.import_module(f"{EXT.__name__}.properties")
    recon = importlib.import_module(f"{EXT.__name__}.operators.reconstruct")
    refine = importlib.import_module(f"{EXT.__name__}.operators.refine")
    runtime = importlib.import_module(f"{EXT.__name__}.runtime")
    tasks = importlib.import_module(f"{EXT.__name__}.tasks")
    from vggt_blender.jobs.local import close_shared_worker

    monkeypatch.setattr(runtime, "runtime_python", lambda prefs=None: sys.executable)
    properties.register()
    classes = recon.classes + refine.classes
    for cls in classes:
        bpy.utils.register_class(cls)
    tasks.register()
    try:
        yield recon, refine, tasks
    finally:
        tasks.unregister()
        close_shared_worker()
        for cls in reversed(classes):
            bpy.utils.unregister_class(cls)
        properties.unregister()


def _perturbed_scene_file(tmp_path: Path) -> Path:
    from tests import refine_groundtruth as gt

    scene_dir = Path(__file__).resolve().parent / "fixtures" / "refine_scene"
    truth = np.load(scene_dir / "truth.npz")
    ext_p, k_p = gt.perturb_cameras(truth["extrinsics"][VIEWS], truth["intrinsics"][VIEWS], seed=2)
    rec = gt.scene_reconstruction(scene_dir, ext_p, k_p, views=VIEWS)
    return save_reconstruction(tmp_path / "shot.npz", rec)


def _imported_perturbed_scene(tmp_path: Path):
    """The perturbed scene built as cameras only, with the panel set to build the same."""
    settings = bpy.context.scene.vggt
    for key, value in CAMERAS_ONLY.items():
        setattr(settings, key, value)
    return build.import_reconstruction_file(_perturbed_scene_file(tmp_path), SceneOptions(**CAMERAS_ONLY))


def _track_error(col, rec) -> np.ndarray:
    """Mean pixel error per view of the refined tracks of `rec` projected through the collection's Blender
    cameras (world -> the collection's scene frame -> world_to_camera_view -> photo pixels)."""
    from bpy_extras.object_utils import world_to_camera_view
    from mathutils import Vector

    cameras = importlib.import_module(f"{EXT.__name__}.scene.cameras")
    scene = bpy.context.scene
    a = np.array(col["vggt_alignment"], dtype=np.float64).reshape(4, 4)
    obs, pix = rec.extra["track_observations"], rec.extra["track_pixels"]
    pts = rec.extra["track_points"] @ a[:3, :3].T + a[:3, 3]
    per_view = {o["vggt_view_index"]: o for o in col.objects if o.get("vggt_kind") == "camera"}
    out = []
    for i in range(rec.num_images):
        w, h = (int(v) for v in rec.original_sizes[i])
        cameras.activate_camera(scene, per_view[i])
        sel = np.nonzero(obs[:, 1] == i)[0]
        got = np.array([[(n := world_to_camera_view(scene, per_view[i], Vector(p.tolist()))).x * w, (1 - n.y) * h]
                        for p in pts[obs[sel, 0]]])
        out.append(float(np.linalg.norm(got - pix[sel], axis=1).mean()))
    return np.array(out)


class _WindowManager:
    """A window manager for the modal path (bpy as a module has no window): records timers and handlers."""

    def __init__(self, real) -> None:
        self._real, self.handlers, self.timers = real, [], []

    def __getattr__(self, name):
        return getattr(self._real, name)

    def event_timer_add(self, step, window=None):
        self.timers.append(step)
        return step

    def event_timer_remove(self, timer):
        self.timers.remove(timer)

    def modal_handler_add(self, op):
        self.handlers.append(op)


def _ui_operator(refine):
    """The UI path: invoke() with a window, then modal() on every timer event while the task timer ticks (the
    operator's own methods on a stand-in for the instance Blender makes)."""
    import types

    class UIOperator:
        _run = None
        _timer = None
        shared_intrinsics, camera_model = False, "pinhole"

        def __init__(self):
            self.reports = []

        def report(self, level, text):
            self.reports.append((sorted(level)[0], text))

    for attr in ("invoke", "modal", "cancel", "execute", "_begin", "_report_end", "_remove_timer"):
        setattr(UIOperator, attr, getattr(refine.VGGT_OT_refine_cameras, attr))
    ctx = types.SimpleNamespace(scene=bpy.context.scene, preferences=bpy.context.preferences, window=object(),
                                window_manager=_WindowManager(bpy.context.window_manager), workspace=None,
                                active_object=bpy.context.active_object, collection=bpy.context.collection)
    return UIOperator(), ctx


def _drive(op, ctx, tasks, until=lambda: False, timeout: float = 600):
    import types

    job = bpy.context.window_manager.vggt_job
    timer, seen, t0 = types.SimpleNamespace(type="TIMER"), [], time.monotonic()
    while time.monotonic() - t0 < timeout:
        tasks._tick()
        result = op.modal(ctx, timer)
        seen.append((job.stage, job.progress))
        if result != {"PASS_THROUGH"}:
            return result, seen
        if until():
            return None, seen
        time.sleep(0.05)
    return "timeout", seen


def test_refine_cameras_rebuilds_the_collection_from_the_refined_file(tmp_path, refine_ops):
    from vggt_blender.io.reconstruction import load_reconstruction

    recon, refine, tasks = refine_ops
    col = _imported_perturbed_scene(tmp_path)
    name = col.name
    bpy.context.view_layer.objects.active = col.objects[0]
    assert refine.VGGT_OT_refine_cameras.poll(bpy.context)

    op, ctx = _ui_operator(refine)
    assert op.invoke(ctx, None) == {"RUNNING_MODAL"}
    assert not refine.VGGT_OT_refine_cameras.poll(bpy.context) and not recon.VGGT_OT_reconstruct.poll(bpy.context)
    job = bpy.context.window_manager.vggt_job
    result, seen = _drive(op, ctx, tasks)
    assert result == {"FINISHED"}, op.reports
    assert ctx.window_manager.timers == [] and job.running is False
    stages = [s for k, (s, _f) in enumerate(seen) if k == 0 or seen[k - 1][0] != s]
    assert "Refining cameras" in stages and stages[-1] == "Building scene"
    fractions = [f for _s, f in seen]
    assert all(b >= a for a, b in zip(fractions, fractions[1:])) and fractions[-1] == pytest.approx(1.0)

    # One collection under the old name, built from the refined file (the feed-forward file is kept).
    cols = [c for c in bpy.data.collections if "vggt_reconstruction" in c]
    assert [c.name for c in cols] == [name]
    new = cols[0]
    refined_path = Path(new["vggt_reconstruction"])
    assert refined_path == tmp_path / "shot_refined.npz" and (tmp_path / "shot.npz").is_file()
    out = load_reconstruction(refined_path)
    level, text = op.reports[-1]
    assert level == "INFO" and text.startswith(f"VGGT: refined the cameras of {name}: mean solve error")
    assert job.message == f"Refined {name}"
    # The Blender cameras are the refined ones: the refined tracks reproject through them as the file says,
    # and each carries its solve error; the feed-forward cameras miss the same tracks by pixels.
    np.testing.assert_allclose(_track_error(new, out), out.extra["reprojection_error"], atol=1e-3)
    assert out.extra["reprojection_error"].max() <= 1.0
    cams = sorted((o for o in new.objects if o.get("vggt_kind") == "camera"), key=lambda o: o["vggt_view_index"])
    assert [o["vggt_solve_error"] for o in cams] == pytest.approx(list(out.extra["reprojection_error"]))
    ff = build.build_scene(load_reconstruction(tmp_path / "shot.npz"), SceneOptions(**CAMERAS_ONLY), "ff")
    assert _track_error(ff, out).min() > 3.0


def test_refine_cameras_that_fails_leaves_the_scene_as_it_was(tmp_path, refine_ops):
    """Featureless photos: one error line, the collection and its file unchanged, no refined file."""
    from PIL import Image

    _, refine, _ = refine_ops
    rec = synthetic_reconstruction(2)
    paths = []
    for i in range(2):
        p = tmp_path / f"flat_{i}.png"
        Image.new("RGB", (42, 28), (100, 100, 100)).save(p)
        paths.append(str(p))
    rec.image_paths = rec.display_paths = paths
    path = save_reconstruction(tmp_path / "flat.npz", rec)
    col = build.import_reconstruction_file(path, SceneOptions(**CAMERAS_ONLY))
    before = (col.name, sorted(o.name for o in col.objects), len(bpy.data.objects), path.read_bytes())
    bpy.context.view_layer.objects.active = col.objects[0]
    with pytest.raises(RuntimeError, match="too few matches"):
        bpy.ops.vggt.refine_cameras()
    assert (col.name, sorted(o.name for o in col.objects), len(bpy.data.objects), path.read_bytes()) == before
    assert bpy.context.window_manager.vggt_job.last_error_code == "refine_failed"
    assert not (tmp_path / "flat_refined.npz").exists()


def test_refine_cameras_cancelled_leaves_the_scene_and_no_file(tmp_path, refine_ops):
    recon, refine, tasks = refine_ops
    col = _imported_perturbed_scene(tmp_path)
    before = (col.name, col["vggt_reconstruction"], sorted(o.name for o in col.objects), len(bpy.data.objects))
    bpy.context.view_layer.objects.active = col.objects[0]
    op, ctx = _ui_operator(refine)
    assert op.invoke(ctx, None) == {"RUNNING_MODAL"}
    run = recon.active_run()
    assert isinstance(run, refine.RefineRun)
    result, _ = _drive(op, ctx, tasks, until=lambda: run.stage == "refining")
    assert result is None
    assert bpy.ops.vggt.cancel_reconstruction() == {"FINISHED"}
    result, _ = _drive(op, ctx, tasks)
    assert result == {"CANCELLED"} and op.reports[-1] == ("WARNING", "VGGT: camera refinement cancelled")
    assert run.job.wait(60) == "cancelled"
    assert (col.name, col["vggt_reconstruction"], sorted(o.name for o in col.objects),
            len(bpy.data.objects)) == before
    assert not (tmp_path / "shot_refined.npz").exists() and recon.active_run() is None
