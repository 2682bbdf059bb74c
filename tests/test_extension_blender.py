"""The extension inside Blender (the bpy module): install the built zip into a temporary HOME, enable,
register/unregister/register, and run the Reconstruct operator end to end with a real worker subprocess.

bpy reads HOME when it is imported, so every scenario runs in a fresh subprocess of this Python (bpy 5.0 in
.venv, or bpy 4.2 in .venv-bpy42: set VGGT_TEST_BLENDER=4.2) with a small driver script. The worker runs with
the runtime Python (.venv/bin/python, which has torch) and a tiny random-weight checkpoint written here.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytest.importorskip("bpy")  # the Blender-side tests need the bpy module in this Python

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).parent / "fixtures"
TINY_CONFIG = FIXTURES / "parity" / "tiny" / "config.json"
HOOKS = Path(__file__).parent / "worker_hooks"  # test-only faults for the worker (sitecustomize.py)
RUNTIME_PYTHON = os.environ.get("VGGT_TEST_RUNTIME_PYTHON", str(ROOT / ".venv" / "bin" / "python"))
BLENDER = os.environ.get("VGGT_TEST_BLENDER", "")  # "4.2" on the second Blender in CI

DRIVER_COMMON = r'''
import json, os, sys, time, traceback
from pathlib import Path
import bpy  # HOME is already the temporary one

ARGS = json.loads(sys.argv[1])
OUT = {"blender": list(bpy.app.version[:2])}

def emit():
    print("DRIVER_RESULT " + json.dumps(OUT), flush=True)

def install():
    bpy.ops.wm.read_homefile(use_empty=True)  # no default cube: every object is ours
    bpy.ops.extensions.package_install_files(filepath=ARGS["zip"], repo="user_default",
                                             enable_on_install=True)
    pkg = "bl_ext.user_default.vggt_blender"
    assert pkg in bpy.context.preferences.addons, "extension not enabled after install"
    return pkg

def prefs(pkg):
    return bpy.context.preferences.addons[pkg].preferences

def use_test_runtime(p):
    """Point the preferences at the test runtime, the tiny checkpoint and its config, on the CPU."""
    p.runtime_source = "CUSTOM"
    p.python_path = ARGS["python"]
    p.weights_path = ARGS["weights"]
    p.model_config = ARGS["config"]
    p.device = "cpu"

def op_error(callable_):
    """bpy.ops raises RuntimeError carrying the operator's ERROR report; return that text."""
    try:
        result = callable_()
    except RuntimeError as exc:
        return str(exc)
    return f"no error (returned {result})"

def kinds_in(coll):
    return sorted({str(ob.get("vggt_kind", "")) for ob in coll.all_objects})
'''

DRIVER_REGISTER = r'''
import addon_utils, importlib
pkg = install()
def state():
    return {
        "panel": hasattr(bpy.types, "VGGT_PT_main"),
        "scene_prop": hasattr(bpy.types.Scene, "vggt"),
        "wm_prop": hasattr(bpy.types.WindowManager, "vggt_job"),
        "ops": sorted(n for n in ("reconstruct", "cancel_reconstruction", "add_photos", "install_runtime",
                                  "download_weights", "check_runtime") if n in dir(bpy.ops.vggt)
                      and hasattr(getattr(bpy.ops.vggt, n), "get_rna_type") and _op_exists(n)),
        "prefs": _prefs_or_none() is not None,
        "menu": any("vggt" in getattr(f, "__module__", "") for f in
                    bpy.types.TOPBAR_MT_file_import._dyn_ui_initialize()),
        "bl_idname": getattr(type(_prefs_or_none()), "bl_idname", None),
    }
def _prefs_or_none():
    addon = bpy.context.preferences.addons.get(pkg)
    return addon.preferences if addon is not None else None
def _op_exists(name):
    try:
        getattr(bpy.ops.vggt, name).get_rna_type()
        return True
    except (KeyError, AttributeError):
        return False
OUT["installed"] = state()
OUT["import_menu"] = any("vggt" in getattr(f, "__module__", "") for f in
                         bpy.types.TOPBAR_MT_file_import._dyn_ui_initialize())
def load_handlers():
    return sum(1 for h in bpy.app.handlers.load_pre if getattr(h, "__module__", "").startswith(pkg))
cycles = []
import threading
for i in range(2):
    # The task timer and a background task in progress must not outlive the add-on.
    tasks_mod = importlib.import_module(pkg + ".tasks")
    gate = threading.Event()
    task = tasks_mod.start(tasks_mod.ThreadTask(lambda t: gate.wait(30), name="download"))
    bpy.app.timers.register(tasks_mod._tick, first_interval=100)  # as start() does with a UI
    handlers_on = load_handlers()
    bpy.ops.preferences.addon_disable(module=pkg)
    off = state()
    off_extra = {"load_handlers": load_handlers(), "task_timer": bpy.app.timers.is_registered(tasks_mod._tick),
                 "task_cancelled": task.cancelled, "task_running": tasks_mod.running("download")}
    gate.set()
    bpy.ops.preferences.addon_enable(module=pkg)
    on = state()
    cycles.append({"off": off, "on": on, "handlers_on": handlers_on, "off_extra": off_extra})
OUT["cycles"] = cycles
OUT["handlers_enabled"] = load_handlers()
# Module-level register/unregister/register in one session, as Blender's reload does.
mod = importlib.import_module(pkg)
mod.unregister()
OUT["after_unregister"] = state()
mod.register()
OUT["after_register"] = state()
# A property write and a panel-draw dependency work after re-registration.
bpy.context.scene.vggt.photos.add().filepath = "//x.jpg"
OUT["photo_count"] = len(bpy.context.scene.vggt.photos)
OUT["status_line"] = importlib.import_module(pkg + ".runtime").status_line()
OUT["runtime_dir"] = str(importlib.import_module(pkg + ".runtime").runtime_venv_dir())
OUT["home"] = os.environ["HOME"]
# Output names: made safe, shortened, never reusing an earlier reconstruction's file or log.
import tempfile
unique = importlib.import_module(pkg + ".operators.reconstruct").unique_output_path
out_dir = Path(tempfile.mkdtemp())
names = [unique(out_dir, "Shot A").name]
(out_dir / names[0]).write_bytes(b"")
names.append(unique(out_dir, "Shot A").name)
(out_dir / "Shot_A_2.log").write_text("")  # a log alone (a failed run) also keeps its name taken
names.append(unique(out_dir, "Shot A").name)
names += [unique(out_dir, "../etc").name, unique(out_dir, "").name]
OUT["unique_names"] = names
OUT["long_name_bytes"] = len(unique(out_dir, "\u00e9" * 300).name.encode("utf-8"))

# Draw the panel and the preferences with a layout that checks every property and operator name they use.
import types
calls = []
class CheckLayout:
    def __getattr__(self, name):
        def call(*args, **kw):
            calls.append(name)
            if name == "prop":
                assert args[1] in args[0].bl_rna.properties.keys(), f"unknown property {args[1]}"
            elif name == "template_list":
                assert args[3] in args[2].bl_rna.properties.keys() and args[5] in args[4].bl_rna.properties.keys()
                bpy.types.UIList.bl_rna_get_subclass_py(args[0])
            elif name == "operator":
                module, fn = args[0].split(".")
                getattr(getattr(bpy.ops, module), fn).get_rna_type()  # KeyError if it does not exist
                return types.SimpleNamespace()
            elif name == "label":
                assert isinstance(kw.get("text", ""), str)
            return CheckLayout()
        return call
class PrefsProxy:
    layout = CheckLayout()
    def __getattr__(self, name):
        return getattr(prefs(pkg), name)
panel = bpy.types.VGGT_PT_main
pref_cls = type(prefs(pkg))
tasks_mod = importlib.import_module(pkg + ".tasks")
settings = bpy.context.scene.vggt
job = bpy.context.window_manager.vggt_job
drawn = 0
for state in ("empty", "photos", "running", "error"):
    if state == "photos":
        settings.photos.add().filepath = ARGS["zip"]  # an existing file stands in for a photo
        cam = bpy.data.objects.new("IMG_1", bpy.data.cameras.new("IMG_1"))
        cam["vggt_kind"] = "camera"
        bpy.context.scene.collection.objects.link(cam)
        bpy.context.view_layer.objects.active = cam  # the panel offers Look Through for it
    job.running = state == "running"
    job.progress, job.stage, job.message = 0.4, "Reconstructing", "frame 2 of 3"
    job.last_error = "broken.jpg: not an image file" if state == "error" else ""
    job.log_path = "/tmp/x.log"
    panel.draw(types.SimpleNamespace(layout=CheckLayout()), bpy.context)
    if state == "running":
        install_gate = threading.Event()
        tasks_mod.start(tasks_mod.ThreadTask(lambda t: install_gate.wait(30), name="install", label="Installing"))
    elif state == "error":
        tasks_mod.cancel("install")
        install_gate.set()
        tasks_mod.note("download", error="failed")
    prefs(pkg).runtime_source = "CUSTOM" if state == "error" else "INSTALLED"
    pref_cls.draw(PrefsProxy(), bpy.context)
    drawn += 1
OUT["drawn"] = drawn
OUT["draw_calls"] = sorted(set(calls))
# Redraws (every progress tick) do not stat() the photos again; a changed photo list does.
real_stat, stats = os.stat, []
os.stat = lambda path, *a, **k: (stats.append(str(path)), real_stat(path, *a, **k))[1]
try:
    for _ in range(5):
        panel.draw(types.SimpleNamespace(layout=CheckLayout()), bpy.context)
    OUT["stats_on_redraw"] = stats.count(ARGS["zip"])
    settings.photos.add().filepath = ARGS["zip"] + ".missing"
    panel.draw(types.SimpleNamespace(layout=CheckLayout()), bpy.context)
    OUT["stats_after_change"] = stats.count(ARGS["zip"])
finally:
    os.stat = real_stat
emit()
'''

DRIVER_RECONSTRUCT = r'''
import importlib
pkg = install()
p = prefs(pkg)
use_test_runtime(p)
p.precision = "fp32"
settings = bpy.context.scene.vggt
bpy.ops.vggt.add_photos(directory=ARGS["photos"])
OUT["photos"] = [os.path.basename(x.filepath) for x in settings.photos]
settings.plane_step = 8
objects_before = len(bpy.data.objects)
t0 = time.monotonic()
result = bpy.ops.vggt.reconstruct()
OUT["seconds"] = time.monotonic() - t0
OUT["result"] = sorted(result)
job = bpy.context.window_manager.vggt_job
coll = bpy.data.collections.get(job.last_result)
OUT["collection"] = job.last_result
OUT["kinds"] = kinds_in(coll) if coll else []
OUT["counts"] = {}
for ob in (coll.all_objects if coll else []):
    k = str(ob.get("vggt_kind", ""))
    OUT["counts"][k] = OUT["counts"].get(k, 0) + 1
OUT["new_objects"] = len(bpy.data.objects) - objects_before
OUT["outside"] = [ob.name for ob in bpy.data.objects if coll is None or ob.name not in coll.all_objects]
OUT["reconstruction"] = coll.get("vggt_reconstruction", "") if coll else ""
OUT["npz_exists"] = bool(OUT["reconstruction"]) and os.path.isfile(bpy.path.abspath(OUT["reconstruction"]))
pc = [ob for ob in (coll.all_objects if coll else []) if ob.get("vggt_kind") == "point_cloud"]
OUT["points"] = len(pc[0].data.vertices) if pc and hasattr(pc[0].data, "vertices") else -1
OUT["running_after"] = job.running
OUT["last_error"] = job.last_error
# Second run from a saved .blend: the file goes to //vggt/<name>.npz; only an animated camera this time.
blend = Path(ARGS["tmp"]) / "shot" / "scene.blend"
blend.parent.mkdir(parents=True)
bpy.ops.wm.save_as_mainfile(filepath=str(blend))
settings = bpy.context.scene.vggt
settings.name = "Shot A"
settings.create_point_cloud = False
settings.create_depth_planes = False
settings.camera_mode = "animated"
# The user is in Edit Mode when the result arrives: the build leaves it first (one undo step).
mesh_ob = bpy.data.objects.new("Editing", bpy.data.meshes.new("Editing"))
bpy.context.scene.collection.objects.link(mesh_ob)
bpy.context.view_layer.objects.active = mesh_ob
bpy.ops.object.mode_set(mode="EDIT")
OUT["mode_before"] = bpy.context.mode
t0 = time.monotonic()
OUT["result2"] = sorted(bpy.ops.vggt.reconstruct())
OUT["mode_after"] = bpy.context.mode
OUT["seconds2"] = time.monotonic() - t0
coll2 = bpy.data.collections.get(bpy.context.window_manager.vggt_job.last_result)
OUT["collection2"] = coll2.name if coll2 else ""
OUT["kinds2"] = kinds_in(coll2) if coll2 else []
OUT["reconstruction2"] = coll2.get("vggt_reconstruction", "") if coll2 else ""
OUT["reconstruction2_abs"] = bpy.path.abspath(OUT["reconstruction2"])
OUT["frame_end"] = bpy.context.scene.frame_end
# Quitting with a model kept loaded in the worker and a task (a download) still running.
tasks_mod = importlib.import_module(pkg + ".tasks")
kept = importlib.import_module(pkg + ".vggt_blender.jobs.local")._shared["process"]
OUT["worker_pid"] = kept.process.pid if kept is not None and kept.alive else None
def work(t):
    # It stops when told to, and says so.
    deadline = time.monotonic() + 60
    while not t.cancelled and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.2)  # winding down (closing a .part file) takes a moment
    Path(ARGS["marker"]).write_text("cancelled" if t.cancelled else "ran out")
tasks_mod.start(tasks_mod.ThreadTask(work, name="download"))
OUT["download_running"] = tasks_mod.running("download")
emit()
# The script ends here with the task thread running: bpy quits.
'''

DRIVER_RECONSTRUCT_SHOT = r'''
import importlib
import numpy as np
from bpy_extras.object_utils import world_to_camera_view
from mathutils import Vector
pkg = install()
p = prefs(pkg)
use_test_runtime(p)
p.precision = "fp32"
settings = bpy.context.scene.vggt
bpy.ops.vggt.add_photos(directory=ARGS["photos"])  # a shot, once chosen, wins over the photo list
bpy.ops.vggt.choose_shot(filepath=ARGS["video"])
settings.shot_every, settings.shot_start, settings.shot_end = 5, 3, 20
settings.create_point_cloud = False
settings.create_depth_planes = False
recon = importlib.import_module(pkg + ".operators.reconstruct")
run = recon.ReconstructionRun(bpy.context)
OUT["request"] = {k: run.request.get(k) for k in ("images", "every", "start", "end", "max_frames", "refine")}
OUT["result"] = sorted(bpy.ops.vggt.reconstruct())
job = bpy.context.window_manager.vggt_job
OUT["last_error"] = job.last_error
coll = bpy.data.collections.get(job.last_result)
OUT["kinds"] = kinds_in(coll) if coll else []
scene = bpy.context.scene
OUT["fps"] = [scene.render.fps, scene.render.fps_base]
OUT["range"] = [scene.frame_start, scene.frame_end]
OUT["resolution"] = [scene.render.resolution_x, scene.render.resolution_y]
cams = [ob for ob in coll.all_objects if ob.get("vggt_kind") == "animated_camera"] if coll else []
OUT["cameras"] = len(cams)
if cams:
    ob = cams[0]
    OUT["keys"] = sorted({round(k.co.x) for fc in ob.animation_data.action.fcurves if fc.data_path == "location"
                          for k in fc.keyframe_points}) if hasattr(ob.animation_data.action, "fcurves") else None
    bg = ob.data.background_images[0].clip if len(ob.data.background_images) else None
    OUT["clip"] = bpy.path.abspath(bg.filepath) if bg else ""
    # Numbers: at each key the camera sits at the file camera's centre (through the file's alignment) and
    # looks along its optical axis (the random-weight model's focal lengths are arbitrary, its poses are not).
    recfile = importlib.import_module(pkg + ".vggt_blender.io.reconstruction")
    bcam = importlib.import_module(pkg + ".vggt_blender.geometry.blender_camera")
    rec = recfile.load_reconstruction(bpy.path.abspath(coll["vggt_reconstruction"]))
    OUT["frame_numbers"] = [int(n) for n in rec.extra["frame_numbers"]]
    errors = []
    for i, n in enumerate(OUT["frame_numbers"]):
        scene.frame_set(1 + n)
        R, t = rec.extrinsics[i, :, :3], rec.extrinsics[i, :, 3]
        centre, ahead = -R.T @ t, -R.T @ t + R.T @ np.array([0.0, 0.0, 1.0])
        want = bcam.opencv_to_blender_points(np.stack([centre, ahead]), 1.0, rec.alignment)
        M = np.array(ob.matrix_world)
        axis = -M[:3, 2]  # a Blender camera looks down its -Z
        errors.append([float(np.linalg.norm(M[:3, 3] - want[0])),
                       float(np.degrees(np.arccos(np.clip(axis @ (want[1] - want[0]) /
                                                          np.linalg.norm(want[1] - want[0]), -1, 1))))])
    OUT["pose_errors"] = errors
emit()
'''


DRIVER_CANCEL = r'''
import importlib, types
pkg = install()
p = prefs(pkg)
use_test_runtime(p)
bpy.ops.vggt.add_photos(directory=ARGS["photos"])
recon = importlib.import_module(pkg + ".operators.reconstruct")
tasks_mod = importlib.import_module(pkg + ".tasks")
job = bpy.context.window_manager.vggt_job

def counts():
    return (len(bpy.data.objects), len(bpy.data.collections), len(bpy.data.meshes))

# bpy as a module has no window, so Blender would run execute(); drive the UI's modal path as Blender does:
# invoke() with a window, then modal() on every event, while the task timer ticks.
class WindowManager:
    def __init__(self, real):
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

class UIOperator:  # the operator's own methods, on a stand-in for the instance Blender makes
    _run = None
    _timer = None
    def __init__(self):
        self.reports = []
    def report(self, level, text):
        self.reports.append([sorted(level)[0], text])
for name in ("invoke", "modal", "cancel", "execute", "_begin", "_report_end", "_remove_timer"):
    setattr(UIOperator, name, getattr(recon.VGGT_OT_reconstruct, name))

def ui_context():
    return types.SimpleNamespace(scene=bpy.context.scene, preferences=bpy.context.preferences, window=object(),
                                 window_manager=WindowManager(bpy.context.window_manager), workspace=None)

TIMER, ESC, MOUSE = (types.SimpleNamespace(type=t) for t in ("TIMER", "ESC", "MOUSEMOVE"))

def drive(op, ctx, until=lambda: False, timeout=120):
    # One timer tick of the task registry and one TIMER event for the modal operator per step; Esc and mouse
    # moves in between pass through (Esc never cancels).
    t0, seen = time.monotonic(), []
    while time.monotonic() - t0 < timeout:
        tasks_mod._tick()
        for event in (ESC, MOUSE):
            assert op.modal(ctx, event) == {"PASS_THROUGH"}
        result = op.modal(ctx, TIMER)
        seen.append((job.stage, job.progress))
        if result != {"PASS_THROUGH"}:
            return result, seen
        if until():
            return None, seen
        time.sleep(0.02)
    return "timeout", seen

# 1. From the click to the built scene (the worker is kept alive).
op, ctx = UIOperator(), ui_context()
OUT["invoke"] = sorted(op.invoke(ctx, MOUSE))
OUT["modal_handlers"] = len(ctx.window_manager.handlers)
run1 = recon.active_run()
OUT["poll_while_running"] = bpy.ops.vggt.reconstruct.poll()
result, seen = drive(op, ctx)
OUT["modal_result"] = sorted(result)
OUT["reports"] = op.reports
OUT["timers_left"] = ctx.window_manager.timers
OUT["stages_seen"] = [s for i, (s, _f) in enumerate(seen) if i == 0 or seen[i - 1][0] != s]
fractions = [f for _s, f in seen]
OUT["monotonic"] = all(b >= a for a, b in zip(fractions, fractions[1:])) and 0 <= fractions[-1] <= 1
coll = bpy.data.collections.get(job.last_result)
OUT["built"] = kinds_in(coll) if coll else []
OUT["running_after_build"] = job.running
OUT["first_output"] = run1.output.name
worker = run1.job.worker
# 2. Cancel mid-run with the panel's ✕: nothing is built, the kept worker survives with its model.
before = counts()
op, ctx = UIOperator(), ui_context()
op.invoke(ctx, MOUSE)
run = recon.active_run()
drive(op, ctx, until=lambda: run.stage in ("loading", "inference"))
OUT["stage_at_cancel"] = run.stage
OUT["poll_before"] = bpy.ops.vggt.cancel_reconstruction.poll()
bpy.ops.vggt.cancel_reconstruction()
OUT["cancelled"] = run.cancelled
OUT["running_after_cancel"] = job.running  # reset by Cancel itself, not by the modal operator
OUT["active_after_cancel"] = recon.active_run() is not None
result, _seen = drive(op, ctx)
OUT["cancel_result"] = sorted(result)
OUT["cancel_report"] = op.reports[-1]
OUT["job_stopped"] = run.job.wait(60) if run.job.join(60) else "still running"
OUT["same_worker_alive"] = run.job.worker is worker and worker.alive
OUT["after"], OUT["before"] = counts(), before
OUT["output_left"] = run.output.exists()
OUT["outputs_in_folder"] = sorted(x.name for x in run.output.parent.glob("*.npz"))
# 3. The next run reuses the loaded model.
OUT["third"] = sorted(bpy.ops.vggt.reconstruct())
OUT["third_cached"] = '"cached model"' in Path(job.log_path).read_text()
# 4. Without the kept worker, opening another file while a run is active stops its own worker: load_pre,
# then Blender drops the modal handler (cancel()).
p.keep_worker = False
op, ctx = UIOperator(), ui_context()
op.invoke(ctx, MOUSE)
run3 = recon.active_run()
drive(op, ctx, until=lambda: run3.stage == "loading")
bpy.ops.wm.read_homefile(use_empty=True)
op.cancel(ctx)
OUT["load_joined"] = run3.job.join(60)
OUT["load_exit"] = run3.job.returncode
OUT["load_active"] = recon.active_run() is not None
OUT["load_message"] = run3.message  # the window manager of the new file shows no run
OUT["load_timers"] = ctx.window_manager.timers
job = bpy.context.window_manager.vggt_job
bpy.ops.vggt.add_photos(directory=ARGS["photos"])
# 5. Disabling the add-on while a kept-alive run is active stops it and ends the kept worker.
p.keep_worker = True
op, ctx = UIOperator(), ui_context()
op.invoke(ctx, MOUSE)
run2 = recon.active_run()
drive(op, ctx, until=lambda: run2.stage == "inference")
bpy.ops.preferences.addon_disable(module=pkg)
OUT["disable_joined"] = run2.job.join(60) and run2.job.worker.join(60) is not None
OUT["disable_left"] = run2.output.exists()
emit()
'''

DRIVER_ERRORS = r'''
import importlib
pkg = install()
p = prefs(pkg)
settings = bpy.context.scene.vggt
bpy.ops.vggt.add_photos(directory=ARGS["photos"])
# 1. No runtime at all (private runtime not installed).
p.runtime_source = "INSTALLED"
OUT["no_runtime"] = op_error(lambda: bpy.ops.vggt.reconstruct())
OUT["no_runtime_code"] = bpy.context.window_manager.vggt_job.last_error_code
# 2. A runtime path that does not exist.
p.runtime_source = "CUSTOM"
p.python_path = "/nonexistent/bin/python"
OUT["missing_python"] = op_error(lambda: bpy.ops.vggt.reconstruct())
OUT["missing_python_code"] = bpy.context.window_manager.vggt_job.last_error_code
# 3. A photo that is not an image (the worker reports bad_image).
p.python_path = ARGS["python"]
p.weights_path = ARGS["weights"]
p.model_config = ARGS["config"]
p.device = "cpu"
settings.photos.add().filepath = ARGS["bad_photo"]
OUT["bad_image"] = op_error(lambda: bpy.ops.vggt.reconstruct())
OUT["bad_image_code"] = bpy.context.window_manager.vggt_job.last_error_code
job = bpy.context.window_manager.vggt_job
OUT["panel_error"] = job.last_error
OUT["log_path"] = job.log_path
OUT["log_exists"] = os.path.isfile(job.log_path)
OUT["objects"] = len(bpy.data.objects)
# 4. Missing weights: a path that does not exist.
settings.photos.remove(len(settings.photos) - 1)
p.weights_path = ARGS["weights"] + ".missing"
OUT["no_weights"] = op_error(lambda: bpy.ops.vggt.reconstruct())
OUT["no_weights_code"] = bpy.context.window_manager.vggt_job.last_error_code
# 5. A Python without the runtime packages (a bare venv).
p.weights_path = ARGS["weights"]
import subprocess
bare = Path(ARGS["tmp"]) / "bare"
subprocess.run([ARGS["python"], "-m", "venv", "--without-pip", str(bare)], check=True)
p.python_path = str(bare / "bin" / "python")
OUT["bare_python"] = op_error(lambda: bpy.ops.vggt.reconstruct())
OUT["bare_python_code"] = bpy.context.window_manager.vggt_job.last_error_code
# 6. Out of GPU memory in the worker (its fault-injection hook).
p.python_path = ARGS["python"]
os.environ["VGGT_TEST_FAULT"] = "oom"  # a new environment: a new worker, with the fault
os.environ["PYTHONPATH"] = ARGS["hooks"]
OUT["oom"] = op_error(lambda: bpy.ops.vggt.reconstruct())
OUT["oom_code"] = job.last_error_code
del os.environ["VGGT_TEST_FAULT"]
OUT["objects_end"] = len(bpy.data.objects)
# 7. The output folder cannot be created (a file named "vggt" lies beside the saved .blend).
blocked = Path(ARGS["tmp"]) / "blocked"
blocked.mkdir()
(blocked / "vggt").write_text("in the way")
bpy.ops.wm.save_as_mainfile(filepath=str(blocked / "scene.blend"))
OUT["no_folder"] = op_error(lambda: bpy.ops.vggt.reconstruct())
OUT["no_folder_code"] = bpy.context.window_manager.vggt_job.last_error_code
emit()
'''

DRIVER_RUNTIME_OPS = r'''
import hashlib, http.server, importlib, threading
pkg = install()
p = prefs(pkg)
runtime_ops = importlib.import_module(pkg + ".operators.runtime")
runtime_mod = importlib.import_module(pkg + ".runtime")
tasks_mod = importlib.import_module(pkg + ".tasks")
# Online access is off by default: installing and downloading must refuse before touching the network.
OUT["online_default"] = bpy.app.online_access
OUT["install_offline"] = op_error(lambda: bpy.ops.vggt.install_runtime())
OUT["install_task_error"] = tasks_mod.last("install").error
OUT["download_offline"] = op_error(lambda: bpy.ops.vggt.download_weights("EXEC_DEFAULT"))
# Download through the operator from a local server (the registry entry is pointed at it).
payload = b"PK\x03\x04" + os.urandom(300_000)  # starts like a torch.save zip: the downloader checks
class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)
    def log_message(self, *a):
        pass
server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
threading.Thread(target=server.serve_forever, daemon=True).start()
dest = Path(ARGS["tmp"]) / "cache" / "vggt-1b" / "model.pt"
real_info = runtime_ops.checkpoint_info("vggt-1b")
OUT["licence"] = real_info["licence"]
OUT["real_url"] = real_info["url"]
runtime_ops.checkpoint_info = lambda name: dict(real_info, url=f"http://127.0.0.1:{server.server_port}/model.pt",
                                                dest=dest)
bpy.context.preferences.system.use_online_access = True
OUT["online_now"] = bpy.app.online_access
OUT["download"] = sorted(bpy.ops.vggt.download_weights("EXEC_DEFAULT"))
OUT["weights_path"] = p.weights_path
OUT["same_bytes"] = dest.is_file() and dest.read_bytes() == payload
OUT["download_message"] = tasks_mod.last("download").message
# The status probe (a real subprocess of the runtime Python) sees torch and those weights.
p.runtime_source = "CUSTOM"
p.python_path = ARGS["python"]
bpy.ops.vggt.check_runtime()
OUT["status_line"] = runtime_mod.status_line()
server.shutdown()
# Install: the Python check runs in the task (not in the operator's call), and its error reaches the UI.
runtime_ops.runtime_setup.blender_python = lambda: "/nonexistent/python3"
OUT["install_bad_python"] = op_error(lambda: bpy.ops.vggt.install_runtime())
OUT["install_running_after"] = tasks_mod.running("install")
OUT["install_error_code"] = tasks_mod.last("install").error_code
# The one timer callback (Blender with a UI): polls while the task works, then finishes it once.
gate = threading.Event()
finished = []
task = tasks_mod.start(tasks_mod.ThreadTask(lambda t: gate.wait(30), lambda t: finished.append(1), name="download"))
OUT["tick_while_running"] = tasks_mod._tick()
OUT["finished_while_running"] = list(finished)
gate.set()
task.join()
OUT["tick_after"] = tasks_mod._tick()
OUT["tick_finished"] = finished
OUT["tick_state"] = [tasks_mod.running("download"), tasks_mod.get("download") is not None, task.finished]
emit()
'''


def run_driver(body: str, args: dict, home: Path, timeout: float = 300, env: dict | None = None) -> dict:
    home.mkdir(parents=True, exist_ok=True)
    script = home / "driver.py"
    script.write_text(textwrap.dedent(DRIVER_COMMON) + "\n" + textwrap.dedent(body))
    env = dict(os.environ, HOME=str(home), XDG_CONFIG_HOME=str(home / ".config"),
               XDG_CACHE_HOME=str(home / ".cache"), **(env or {}))
    env.pop("VGGT_WEIGHTS", None)
    out = subprocess.run([sys.executable, str(script), json.dumps(args)], capture_output=True, text=True,
                         timeout=timeout, env=env, cwd=str(home))
    lines = [ln for ln in out.stdout.splitlines() if ln.startswith("DRIVER_RESULT ")]
    assert out.returncode == 0 and lines, f"driver failed ({out.returncode}):\n{out.stdout[-3000:]}\n" \
                                          f"{out.stderr[-5000:]}"
    result = json.loads(lines[-1][len("DRIVER_RESULT "):])
    if BLENDER:
        assert ".".join(map(str, result["blender"])) == BLENDER, "tests did not run on the Blender asked for"
    return result


@pytest.fixture(scope="module")
def extension_zip(tmp_path_factory) -> str:
    out_dir = tmp_path_factory.mktemp("dist")
    out = subprocess.run(["bash", str(ROOT / "scripts" / "build_extension.sh"), str(out_dir)], cwd=ROOT,
                         capture_output=True, text=True, timeout=120,
                         env=dict(os.environ, PYTHON=sys.executable))
    assert out.returncode == 0, out.stdout + out.stderr
    return str(next(out_dir.glob("vggt_blender-*.zip")))


@pytest.fixture(scope="module")
def job_inputs(tmp_path_factory) -> dict:
    """A tiny random-weight checkpoint and three textured photos, written by the runtime Python."""
    if not Path(RUNTIME_PYTHON).is_file():
        pytest.skip("no runtime Python with torch (.venv/bin/python)")
    folder = tmp_path_factory.mktemp("job")
    code = textwrap.dedent(r'''
        import sys, numpy as np, torch
        from PIL import Image
        from vggt_blender.model import VGGT, VGGTConfig
        folder, config = sys.argv[1], sys.argv[2]
        torch.manual_seed(0)
        model = VGGT(VGGTConfig.load(config))
        torch.save(model.state_dict(), f"{folder}/model.pt")
        rng = np.random.default_rng(1)
        import os
        os.makedirs(f"{folder}/photos")
        base = rng.integers(0, 255, (120, 200, 3), dtype=np.uint8)
        for i in range(3):
            img = np.roll(base, 6 * i, axis=1)[:, :160]
            Image.fromarray(img).save(f"{folder}/photos/frame_{i + 1}.png")
        with open(f"{folder}/photos/notes.txt", "w") as fh:
            fh.write("not a photo")
        with open(f"{folder}/broken.jpg", "wb") as fh:
            fh.write(b"this is not a jpeg at all")
    ''')
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    out = subprocess.run([RUNTIME_PYTHON, "-c", code, str(folder), str(TINY_CONFIG)], capture_output=True,
                         text=True, timeout=300, env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    return {"python": RUNTIME_PYTHON, "weights": str(folder / "model.pt"), "config": str(TINY_CONFIG),
            "photos": str(folder / "photos"), "bad_photo": str(folder / "broken.jpg")}


def test_install_enable_and_register_cycles(extension_zip, tmp_path):
    r = run_driver(DRIVER_REGISTER, {"zip": extension_zip}, tmp_path / "home")
    full = {"menu": True, "panel": True, "scene_prop": True, "wm_prop": True, "prefs": True,
            "ops": ["add_photos", "cancel_reconstruction", "check_runtime", "download_weights",
                    "install_runtime", "reconstruct"],
            "bl_idname": "bl_ext.user_default.vggt_blender"}
    assert r["installed"] == full
    for cycle in r["cycles"]:
        assert cycle["off"] == {"menu": False, "panel": False, "scene_prop": False, "wm_prop": False, "prefs": False,
                                "ops": [], "bl_idname": None}
        assert cycle["on"] == full
        # One load_pre handler while enabled; none, and no timers, once disabled; the running task was stopped.
        assert cycle["handlers_on"] == 1
        assert cycle["off_extra"] == {"load_handlers": 0, "task_timer": False, "task_cancelled": True,
                                      "task_running": False}
    assert r["handlers_enabled"] == 1
    assert r["after_unregister"]["menu"] is False
    assert r["after_unregister"]["panel"] is False and r["after_unregister"]["ops"] == []
    assert r["after_unregister"]["scene_prop"] is False and r["after_unregister"]["wm_prop"] is False
    assert r["after_register"] == full
    assert r["photo_count"] == 1
    assert r["status_line"].startswith("No inference runtime")
    # Per-user data lives under the temporary HOME, never in the add-on folder.
    assert r["runtime_dir"].startswith(r["home"]) and "extensions" in r["runtime_dir"]
    assert r["unique_names"] == ["Shot_A.npz", "Shot_A_2.npz", "Shot_A_3.npz", "etc.npz", "vggt.npz"]
    assert 200 <= r["long_name_bytes"] <= 204  # 200 bytes of name + ".npz": within the protocol's limit
    assert r["import_menu"] is True  # File > Import entry of the import operator
    assert r["drawn"] == 4 and {"prop", "operator", "template_list", "label"} <= set(r["draw_calls"])
    assert r["stats_on_redraw"] == 0 and r["stats_after_change"] == 1


def test_reconstruct_end_to_end(extension_zip, job_inputs, tmp_path):
    marker = tmp_path / "stopped.txt"
    r = run_driver(DRIVER_RECONSTRUCT, dict(job_inputs, zip=extension_zip, tmp=str(tmp_path), marker=str(marker)),
                   tmp_path / "home")
    assert r["photos"] == ["frame_1.png", "frame_2.png", "frame_3.png"]  # notes.txt skipped
    assert r["result"] == ["FINISHED"], r
    assert r["last_error"] == "" and r["running_after"] is False
    assert r["kinds"] == ["camera", "depth_plane", "point_cloud"]
    assert r["counts"]["camera"] == 3 and r["counts"]["depth_plane"] == 3 and r["counts"]["point_cloud"] == 1
    assert r["outside"] == []  # everything went into the one new collection
    assert r["npz_exists"]
    assert r["points"] > 0
    print(f"reconstruct end to end: {r['seconds']:.1f} s, again from a saved .blend: {r['seconds2']:.1f} s "
          f"(Blender {r['blender']})")
    # Saved .blend: the reconstruction lands beside it; options reach the builders.
    assert r["result2"] == ["FINISHED"]
    assert r["collection2"].startswith("Shot A")
    assert r["kinds2"] == ["animated_camera"]
    # Under the saved .blend's folder the path is stored relative, so the project folder can move.
    assert r["reconstruction2"] == "//vggt/Shot_A.npz"
    assert Path(r["reconstruction2_abs"]) == tmp_path / "shot" / "vggt" / "Shot_A.npz"
    assert (r["mode_before"], r["mode_after"]) == ("EDIT_MESH", "OBJECT")
    assert r["frame_end"] >= 3
    # Quitting (the script's end) with a task running and the model kept loaded: the driver exited 0 (a thread
    # still running while bpy frees Blender crashes the exit on 4.2 and hangs it on 4.5), the task was told
    # to stop, and the kept worker ended before Blender did, so no orphan process holds the GPU.
    assert r["worker_pid"] and r["download_running"] is True
    assert marker.read_text() == "cancelled"
    with pytest.raises(ProcessLookupError):
        os.kill(r["worker_pid"], 0)


def test_reconstruct_a_chosen_shot_from_the_panel(extension_zip, job_inputs, tmp_path):
    """The panel with a video chosen: Reconstruct sends the shot fields to the worker and builds one
    animated camera keyed on the selected source frames, on its Movie Clip."""
    pytest.importorskip("av")
    from tests.video_helpers import write_video

    video = write_video(tmp_path / "plate.mp4", count=24)
    r = run_driver(DRIVER_RECONSTRUCT_SHOT, dict(job_inputs, zip=extension_zip, video=str(video)),
                   tmp_path / "home")
    # Refine and Track is on by default: one lens for the shot (random weights: it keeps the model's cameras).
    assert r["request"] == {"images": [str(video)], "every": 5, "start": 3, "end": 20, "max_frames": None,
                            "refine": {"shared_intrinsics": True}}
    assert r["result"] == ["FINISHED"] and r["last_error"] == "", r
    assert r["kinds"] == ["animated_camera"] and r["cameras"] == 1
    assert r["frame_numbers"] == [3, 8, 13, 18]
    if r["keys"] is not None:  # Blender 5's layered actions keep fcurves elsewhere
        assert r["keys"] == [4, 9, 14, 19]
    assert r["fps"][0] / r["fps"][1] == pytest.approx(24000 / 1001, rel=1e-6)
    assert r["range"] == [4, 19] and r["resolution"] == [160, 120]
    assert Path(r["clip"]).resolve() == video.resolve()
    for centre, angle in r["pose_errors"]:
        assert centre < 1e-4 and angle < 0.05, r["pose_errors"]  # degrees; arccos near 1 in float32


def test_modal_run_and_cancel_through_the_task_timer(extension_zip, job_inputs, tmp_path):
    # Faults and delays come from the test-only sitecustomize on the worker's PYTHONPATH.
    r = run_driver(DRIVER_CANCEL, dict(job_inputs, zip=extension_zip), tmp_path / "home",
                   env={"PYTHONPATH": str(HOOKS), "VGGT_TEST_DELAY": "0.3"})
    print(f"cancel: stages seen {r['stages_seen']}, cancelled at {r['stage_at_cancel']}, "
          f"one-shot worker exit {r['load_exit']}")
    assert r["invoke"] == ["RUNNING_MODAL"] and r["modal_handlers"] == 1 and r["poll_while_running"] is False
    assert r["modal_result"] == ["FINISHED"] and r["timers_left"] == []
    assert r["reports"] == [["INFO", "VGGT: created collection photos from 3 photos"]]
    assert r["stages_seen"][0] in ("Starting", "Preparing photos") and r["stages_seen"][-1] == "Building scene"
    assert r["monotonic"] is True
    assert r["built"] == ["camera", "depth_plane", "point_cloud"] and r["running_after_build"] is False
    assert r["poll_before"] is True and r["cancelled"] is True
    assert r["cancel_result"] == ["CANCELLED"] and r["cancel_report"] == ["WARNING", "VGGT: reconstruction cancelled"]
    assert r["job_stopped"] == "cancelled" and r["same_worker_alive"] is True
    assert r["after"] == r["before"]
    assert r["output_left"] is False and r["outputs_in_folder"] == [r["first_output"]]
    assert r["running_after_cancel"] is False and r["active_after_cancel"] is False
    assert r["third"] == ["FINISHED"] and r["third_cached"] is True
    # A one-shot worker cancelled while loading the model exits cleanly with 130 (never SIGABRT).
    assert r["load_joined"] is True and r["load_exit"] == 130 and r["load_active"] is False
    assert r["load_message"] == "Cancelled: another file was opened" and r["load_timers"] == []
    assert r["disable_joined"] is True and r["disable_left"] is False


def test_readable_errors(extension_zip, job_inputs, tmp_path):
    r = run_driver(DRIVER_ERRORS, dict(job_inputs, zip=extension_zip, tmp=str(tmp_path), hooks=str(HOOKS)),
                   tmp_path / "home")
    keys = ("no_runtime", "missing_python", "bad_image", "no_weights", "bare_python", "oom", "no_folder")
    for key in keys:
        print(f"{key}: {r[key]}")
    for key in keys:
        assert "Traceback" not in r[key] and "File \"" not in r[key], (key, r[key])
        assert len(r[key].splitlines()) == 1, (key, r[key])
    assert "No inference runtime" in r["no_runtime"]
    assert "/nonexistent/bin/python" in r["missing_python"] and "does not exist" in r["missing_python"]
    assert "broken.jpg" in r["bad_image"] and "full log:" in r["bad_image"]
    assert "broken.jpg" in r["panel_error"]
    assert r["log_exists"] and r["log_path"] in r["bad_image"]
    assert r["objects"] == 0
    assert "model.pt.missing" in r["no_weights"]
    # Checked in Blender before the worker starts, in Blender's words (not the command line's --weights).
    assert "Weights path of the add-on preferences" in r["no_weights"] and "--weights" not in r["no_weights"]
    assert "the inference runtime has no" in r["bare_python"] and "bare/bin/python" in r["bare_python"]
    assert "memory" in r["oom"].lower() and "full log:" in r["oom"]
    assert r["objects_end"] == 0
    assert "cannot create the output folder" in r["no_folder"] and "blocked/vggt" in r["no_folder"]
    # Each error reaches Blender with its code.
    assert {key: r[f"{key}_code"] for key in keys} == {
        "no_runtime": "no_runtime", "missing_python": "no_runtime", "bad_image": "bad_image",
        "no_weights": "no_weights", "bare_python": "no_runtime", "oom": "out_of_memory", "no_folder": "bad_request"}


def test_runtime_operators(extension_zip, tmp_path):
    if not Path(RUNTIME_PYTHON).is_file():
        pytest.skip("no runtime Python with torch")
    r = run_driver(DRIVER_RUNTIME_OPS, {"zip": extension_zip, "tmp": str(tmp_path), "python": RUNTIME_PYTHON},
                   tmp_path / "home")
    assert r["online_default"] is False
    assert "Online access is disabled" in r["install_offline"]
    assert "Online access is disabled" in r["install_task_error"]
    assert "Online access is disabled" in r["download_offline"]
    assert r["real_url"] == "https://huggingface.co/facebook/VGGT-1B/resolve/main/model.pt"
    assert "CC BY-NC 4.0" in r["licence"]
    assert r["online_now"] is True
    assert r["download"] == ["FINISHED"] and r["same_bytes"] is True
    assert r["weights_path"] == str(tmp_path / "cache" / "vggt-1b" / "model.pt")
    assert r["download_message"].startswith("Weights saved to")
    print("status line:", r["status_line"])
    assert r["status_line"].startswith("torch ") and r["status_line"].endswith("weights found")
    assert "/nonexistent/python3" in r["install_bad_python"] and "does not exist" in r["install_bad_python"]
    assert r["install_running_after"] is False and r["install_error_code"] == "no_runtime"
    assert r["tick_while_running"] == pytest.approx(0.1) and r["finished_while_running"] == []
    assert r["tick_after"] is None and r["tick_finished"] == [1] and r["tick_state"] == [False, False, True]
