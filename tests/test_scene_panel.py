"""The sidebar panel and the photo-list operators (bpy): what the panel draws, read through a recording layout
(a headless Blender has no window to draw into), and what the buttons do to the photo list."""

from __future__ import annotations

import importlib
import shutil
from pathlib import Path
from types import SimpleNamespace

import bpy
import numpy as np
import pytest

from vggt_blender.extension_package import load_extension_package
from vggt_blender.io.reconstruction import make_reconstruction
from vggt_blender.options import SceneOptions

EXT = load_extension_package("_vggt_ext_tests")
properties = importlib.import_module(f"{EXT.__name__}.properties")
photos_ops = importlib.import_module(f"{EXT.__name__}.operators.photos")
main_panel = importlib.import_module(f"{EXT.__name__}.panels.main_panel")
VGGTError = importlib.import_module(f"{EXT.__name__}.vggt_blender.errors").VGGTError  # the extension's own
build = importlib.import_module(f"{EXT.__name__}.scene.build")
node_groups = importlib.import_module(f"{EXT.__name__}.scene.node_groups")

ROTATED = Path(__file__).parent / "fixtures" / "exif_orientation_6.jpg"  # stored 40 x 30, EXIF "turn right"


BUTTONS: dict[str, SimpleNamespace] = {}  # the last button drawn per operator
ENABLED: dict[str, bool] = {}  # whether that button's row could be clicked


class Layout:
    """Records what a panel draws: labels, operator buttons and property fields, in order."""

    def __init__(self, log: list) -> None:
        self.log = log
        self.enabled = True
        self.scale_y = 1.0

    def _child(self, *args, **kwargs) -> "Layout":
        child = Layout(self.log)
        child.enabled = self.enabled  # a greyed-out layout greys out what is inside it
        return child

    row = column = box = split = _child

    def label(self, text: str = "", icon: str = "NONE", **kwargs) -> None:
        self.log.append(("label", text, icon))

    def operator(self, idname: str, text: str = "", icon: str = "NONE", **kwargs):
        module, name = idname.split(".")
        assert hasattr(getattr(bpy.ops, module), name), f"no operator {idname}"
        self.log.append(("operator", idname, icon))
        button = SimpleNamespace()  # the operator properties the panel sets on its button
        BUTTONS[idname] = button
        ENABLED[idname] = self.enabled
        return button

    def prop(self, data, path: str, **kwargs) -> None:
        data.path_resolve(path)  # the field must point at a real property
        self.log.append(("prop", data, path))

    def template_list(self, *args, **kwargs) -> None:
        self.log.append(("list",))

    def progress(self, **kwargs) -> None:
        self.log.append(("progress", kwargs.get("text", "")))


def draw(active_object=None) -> list:
    log: list = []
    BUTTONS.clear()
    ENABLED.clear()
    context = SimpleNamespace(scene=bpy.context.scene, window_manager=bpy.context.window_manager,
                              active_object=active_object, preferences=bpy.context.preferences)
    main_panel.VGGT_PT_main.draw(SimpleNamespace(layout=Layout(log)), context)
    return log


def labels(log: list) -> list[str]:
    return [entry[1] for entry in log if entry[0] == "label"]


@pytest.fixture(autouse=True)
def registered():
    bpy.ops.wm.read_homefile(use_empty=True)
    properties.register()
    for cls in photos_ops.classes:
        bpy.utils.register_class(cls)
    main_panel._cache_for([])
    yield
    for cls in reversed(photos_ops.classes):
        bpy.utils.unregister_class(cls)
    properties.unregister()


@pytest.fixture()
def photo_folder(tmp_path):
    for name in ("a.jpg", "b.jpg", "c.jpg"):
        shutil.copy(ROTATED, tmp_path / name)
    return tmp_path


def test_add_photos_adds_to_the_list(photo_folder):
    settings = bpy.context.scene.vggt
    assert bpy.ops.vggt.add_photos(directory=str(photo_folder), files=[{"name": "a.jpg"}]) == {"FINISHED"}
    assert bpy.ops.vggt.add_photos(directory=str(photo_folder), files=[{"name": "b.jpg"}]) == {"FINISHED"}
    assert [Path(p).name for p in settings.photo_paths()] == ["a.jpg", "b.jpg"]
    # The whole folder: only what is not there yet is added.
    assert bpy.ops.vggt.add_photos(directory=str(photo_folder)) == {"FINISHED"}
    assert [Path(p).name for p in settings.photo_paths()] == ["a.jpg", "b.jpg", "c.jpg"]
    assert bpy.ops.vggt.add_photos(directory=str(photo_folder), files=[{"name": "c.jpg"}], replace=True)
    assert [Path(p).name for p in settings.photo_paths()] == ["c.jpg"]


def test_add_photos_does_not_take_a_folder_named_like_a_photo_for_photos(photo_folder):
    """Issue 9 §2.12: `x.jpg/` selected among photos is skipped with a warning, its contents not added."""
    (photo_folder / "x.jpg").mkdir()
    shutil.copy(ROTATED, photo_folder / "x.jpg" / "inside.jpg")
    settings = bpy.context.scene.vggt
    assert bpy.ops.vggt.add_photos(directory=str(photo_folder), files=[{"name": "a.jpg"}, {"name": "x.jpg"}]) \
        == {"FINISHED"}
    assert [Path(p).name for p in settings.photo_paths()] == ["a.jpg"]


def test_panel_has_a_remove_one_button_that_removes_the_selected_photo(photo_folder):
    settings = bpy.context.scene.vggt
    bpy.ops.vggt.add_photos(directory=str(photo_folder))
    assert ("operator", "vggt.remove_photo", "REMOVE") in draw()
    settings.photo_index = 1
    assert bpy.ops.vggt.remove_photo() == {"FINISHED"}
    assert [Path(p).name for p in settings.photo_paths()] == ["a.jpg", "c.jpg"]


def test_panel_shows_an_exif_rotated_photo_upright(photo_folder):
    bpy.ops.vggt.add_photos(directory=str(photo_folder), files=[{"name": "a.jpg"}])
    # Stored 40 wide and 30 tall; EXIF orientation 6 shows it 30 wide and 40 tall.
    assert "Selected: 30 × 40 px" in labels(draw())


def test_last_runs_warnings_show_after_the_run():
    job = bpy.context.window_manager.vggt_job
    lines = [f"IMG_{i}.jpg: a third of the portrait photo is cropped away (use Pad to keep it)" for i in range(7)]
    properties.set_job_warnings(job, lines)
    shown = labels(draw())
    assert "Last run: 7 warnings" in shown
    assert lines[0] in shown and lines[4] in shown and lines[5] not in shown
    assert "... and 2 more (see the log)" in shown
    job.running = True  # while a run is going, its progress shows instead
    assert not any(text.startswith("Last run") for text in labels(draw()))
    job.running = False
    properties.set_job_warnings(job, [])
    assert not any(text.startswith("Last run") for text in labels(draw()))


def test_panel_shows_the_reconstructions_shared_plane_control_and_lens_warning():
    n, h, w = 2, 12, 16
    K = np.array([[[14.0, 0, 8], [0, 14.0, 6], [0, 0, 1]]] * n)
    K[1, 1, 1] = 9.6e8  # what random weights predicted: no lens has that
    E = np.array([np.hstack([np.eye(3), np.zeros((3, 1))])] * n)
    rec = make_reconstruction(np.full((n, h, w), 2.0, np.float32), E, K,
                              image_paths=["/nowhere/IMG_0.jpg", "/nowhere/IMG_1.jpg"])
    col = build.build_scene(rec, SceneOptions(create_point_cloud=False, background_images=False), "room")
    plane = next(o for o in col.objects if o.get("vggt_kind") == "depth_plane")
    log = draw(active_object=plane)
    assert ("prop", col, f'["{node_groups.PLANE_MIN_CONFIDENCE_PROP}"]') in log
    warning = [t for t in labels(log) if t.startswith("IMG_1: implausible camera")]
    assert len(warning) == 1 and "9.6e+08" in warning[0]
    assert not [t for t in labels(log) if t.startswith("IMG_0:")]
    assert ("operator", "vggt.refine_cameras", "CON_CAMERASOLVER") in log  # the reconstruction's own box
    assert not [entry for entry in draw() if entry[0] == "prop" and entry[1] == col]  # nothing selected
    assert ("operator", "vggt.refine_cameras", "CON_CAMERASOLVER") not in draw()


@pytest.mark.parametrize("weights, checkpoint, shown, point_source_field", [
    ("", "vggt-1b", "Model: VGGT-1B", True),
    ("", "vggt-omega-1b-512", "Model: VGGT-Omega-1B-512", False),
    ("/models/omega.pt", "vggt-1b", "Model: omega.pt (family from the file)", True),
])
def test_panel_shows_the_model_and_offers_only_depth_points_for_omega(monkeypatch, weights, checkpoint, shown,
                                                                      point_source_field):
    runtime = importlib.import_module(f"{EXT.__name__}.runtime")
    prefs = SimpleNamespace(weights_path=weights, checkpoint=checkpoint)
    monkeypatch.setattr(runtime, "selected_model", lambda p=None, _f=runtime.selected_model: _f(prefs))
    monkeypatch.setattr(runtime, "selected_model_label",
                        lambda p=None, _f=runtime.selected_model_label: _f(prefs))
    bpy.context.scene.vggt.create_point_cloud = True
    log = draw()
    assert shown in labels(log)
    fields = [entry[2] for entry in log if entry[0] == "prop"]
    assert ("point_source" in fields) == point_source_field
    if not point_source_field:
        assert "Points: Depth + Camera (VGGT-Omega has no point map)" in labels(log)
    # The request the Reconstruct button sends names the model only when no weights file decides.
    assert runtime.selected_model(prefs) == (None if weights else checkpoint)


@pytest.mark.parametrize("kind", ["video", "sequence", "photos"])
def test_refine_cameras_solves_one_lens_for_a_shot(tmp_path, kind):
    from tests.video_helpers import shot_reconstruction

    if kind == "sequence":
        files = [str(tmp_path / f"plate.{1001 + n}.png") for n in (0, 4, 8)]
        rec = shot_reconstruction([0, 4, 8], tmp_path / "plate.####.png", kind="sequence", files=files,
                                  first_number=1001)
    else:
        rec = shot_reconstruction([0, 4, 8], tmp_path / "shot.mp4")
    if kind == "photos":
        rec.extra = {}
    col = build.build_scene(rec, SceneOptions(create_point_cloud=False, create_depth_planes=False,
                                              background_images=False), "shot")
    assert col["vggt_source_kind"] == kind
    draw(active_object=col.objects[0])
    # A video or an image sequence is one physical camera: its Refine Cameras button solves one lens for all.
    assert BUTTONS["vggt.refine_cameras"].shared_intrinsics is (kind != "photos")


def test_reconstruct_can_be_clicked_with_photos_or_a_shot_alone(tmp_path, photo_folder):
    settings = bpy.context.scene.vggt
    draw()
    assert ENABLED["vggt.reconstruct"] is False  # nothing chosen
    settings.shot_path = str(tmp_path / "plate.mp4")  # a movie and no photos: what a matchmover does
    draw()
    assert ENABLED["vggt.reconstruct"] is True
    settings.shot_path = ""
    bpy.ops.vggt.add_photos(directory=str(photo_folder), files=[{"name": "a.jpg"}])
    draw()
    assert ENABLED["vggt.reconstruct"] is True


def test_refine_cameras_is_a_reconstruct_option_and_server_mode_needs_no_runtime(monkeypatch, photo_folder):
    runtime = importlib.import_module(f"{EXT.__name__}.runtime")
    reconstruct = importlib.import_module(f"{EXT.__name__}.operators.reconstruct")
    settings = bpy.context.scene.vggt
    bpy.ops.vggt.add_photos(directory=str(photo_folder))
    local = SimpleNamespace(inference_source="LOCAL", runtime_source="CUSTOM", python_path="", weights_path="",
                            checkpoint="vggt-1b", device="cpu", precision="fp32", model_config="", keep_worker=False,
                            fast_path="auto", server_url="http://127.0.0.1:9", server_token="t" * 20)
    monkeypatch.setattr(runtime, "get_prefs", lambda context=None: local)
    monkeypatch.setattr(runtime, "default_output_dir", lambda: photo_folder / "vggt")  # not the user's folder
    fields = [entry[2] for entry in draw() if entry[0] == "prop"]
    assert "refine_cameras" in fields
    assert "No inference runtime: see the add-on preferences" in labels(draw())
    assert reconstruct.ReconstructionRun(bpy.context).request["refine"] is False
    settings.refine_cameras = True
    run = reconstruct.ReconstructionRun(bpy.context)
    assert run.request["refine"] is True and type(run.job).__name__ == "LocalJob"
    # Server mode: the job goes to the server, refinement with it, and no local runtime is asked for.
    local.inference_source = "SERVER"
    assert "No inference runtime: see the add-on preferences" not in labels(draw())
    run = reconstruct.ReconstructionRun(bpy.context)
    assert run.request["refine"] is True and type(run.job).__name__ == "RemoteJob"
    # A shot brings its own choice (Refine and Track); the photo option is not shown for it.
    settings.shot_path = str(photo_folder / "plate.mp4")
    settings.shot_refine = False
    with pytest.raises(VGGTError, match="plate.mp4: the shot does not exist"):
        reconstruct.ReconstructionRun(bpy.context)
    (photo_folder / "plate.mp4").write_bytes(b"not opened here")
    assert reconstruct.ReconstructionRun(bpy.context).request["refine"] is False
    assert "refine_cameras" not in [entry[2] for entry in draw() if entry[0] == "prop"]


def test_refine_cameras_in_server_mode_without_a_runtime_says_what_to_do(monkeypatch, tmp_path):
    from vggt_blender.io.reconstruction import save_reconstruction

    runtime = importlib.import_module(f"{EXT.__name__}.runtime")
    refine = importlib.import_module(f"{EXT.__name__}.operators.refine")
    n = 2
    rec = make_reconstruction(np.full((n, 12, 16), 2.0, np.float32),
                              np.array([np.hstack([np.eye(3), np.zeros((3, 1))])] * n),
                              np.array([[[14.0, 0, 8], [0, 14.0, 6], [0, 0, 1]]] * n),
                              image_paths=["/nowhere/a.jpg", "/nowhere/b.jpg"])
    path = save_reconstruction(tmp_path / "room.npz", rec)
    col = build.build_scene(rec, SceneOptions(create_point_cloud=False, background_images=False), "room",
                            source_path=str(path))
    server = SimpleNamespace(inference_source="SERVER", runtime_source="CUSTOM", python_path="", keep_worker=False)
    monkeypatch.setattr(runtime, "get_prefs", lambda context=None: server)
    with pytest.raises(VGGTError, match="tick Refine Cameras before Reconstruct to refine on the server"):
        refine.RefineRun(bpy.context, col, {"shared_intrinsics": False})
    server.inference_source = "LOCAL"  # locally the job itself reports the missing runtime, as Reconstruct does
    assert type(refine.RefineRun(bpy.context, col, True).job).__name__ == "LocalJob"


def test_files_dropped_on_the_sidebar_choose_the_shot_or_add_the_photos(tmp_path, photo_folder):
    """Blender calls a file handler's operator through its invoke with the dropped paths set: it must take
    them at once (no file browser), and only a drop on the VGGT sidebar is ours."""
    from vggt_blender.shot.selection import VIDEO_EXTENSIONS

    shot_ops = importlib.import_module(f"{EXT.__name__}.operators.shot")
    for cls in shot_ops.classes:
        bpy.utils.register_class(cls)
    try:
        assert {cls.bl_import_operator for cls in (shot_ops.VGGT_FH_shot, photos_ops.VGGT_FH_photos)} == \
            {"vggt.choose_shot", "vggt.add_photos"}
        assert set(shot_ops.VGGT_FH_shot.bl_file_extensions.split(";")) == set(VIDEO_EXTENSIONS)
        assert ".jpg" in photos_ops.VGGT_FH_photos.bl_file_extensions.split(";")
        where = {(area, region): shot_ops.VGGT_FH_shot.poll_drop(
            SimpleNamespace(area=SimpleNamespace(type=area), region=SimpleNamespace(type=region)))
            for area in ("VIEW_3D", "IMAGE_EDITOR") for region in ("UI", "WINDOW")}
        assert where == {("VIEW_3D", "UI"): True, ("VIEW_3D", "WINDOW"): False, ("IMAGE_EDITOR", "UI"): False,
                         ("IMAGE_EDITOR", "WINDOW"): False}
        assert photos_ops.VGGT_FH_photos.poll_drop(SimpleNamespace(area=SimpleNamespace(type="VIEW_3D"),
                                                                   region=SimpleNamespace(type="UI")))
        # Blender calls invoke with the dropped paths set (a headless bpy.ops call skips invoke: call it here).
        browsers: list = []
        context = SimpleNamespace(window_manager=SimpleNamespace(fileselect_add=browsers.append))
        for cls, dropped in ((shot_ops.VGGT_OT_choose_shot, {"filepath"}),
                             (photos_ops.VGGT_OT_add_photos, {"directory", "files"})):
            assert set(cls.drop_properties) == dropped
            for given in (dropped, set()):
                op = SimpleNamespace(properties=SimpleNamespace(is_property_set=given.__contains__),
                                     execute=lambda _context: {"FINISHED"}, drop_properties=cls.drop_properties)
                assert cls.invoke(op, context, None) == ({"FINISHED"} if given else {"RUNNING_MODAL"})
        assert len(browsers) == 2  # only the clicks without paths opened the file browser
        video = tmp_path / "plate.mov"
        video.write_bytes(b"a movie")
        assert bpy.ops.vggt.choose_shot("INVOKE_DEFAULT", filepath=str(video)) == {"FINISHED"}
        assert bpy.context.scene.vggt.shot_path == str(video)
        assert bpy.ops.vggt.add_photos("INVOKE_DEFAULT", directory=str(photo_folder),
                                       files=[{"name": "a.jpg"}, {"name": "c.jpg"}]) == {"FINISHED"}
        assert [Path(p).name for p in bpy.context.scene.vggt.photo_paths()] == ["a.jpg", "c.jpg"]
    finally:
        for cls in reversed(shot_ops.classes):
            bpy.utils.unregister_class(cls)
