"""`vggt.reconstruct`: photos -> worker subprocess (inference runtime) -> reconstruction file -> scene.

The model runs in another Python (`python -m vggt_blender.jobs.worker`), so Blender stays responsive and a crash or
out-of-memory there cannot take Blender down. Invoked from the UI the operator is modal (a timer polls the
worker); `execute()` runs the same job blocking (scripts, tests). Cancel (the panel's ✕ button, opening another
file, disabling the add-on) terminates the worker and leaves the scene unchanged.
"""

from __future__ import annotations

import re
import threading
import time
from pathlib import Path

import bpy

from .. import runtime
from ..vggt_blender.errors import VGGTError
from ..vggt_blender.weights.discovery import resolve_weights  # torch-free: weights.py imports torch only to load
from ..vggt_blender.jobs.local import WorkerJob

STAGE_LABELS = {
    "starting": "Starting",
    "loading": "Loading model",
    "preprocessing": "Preparing photos",
    "inference": "Reconstructing",
    "writing": "Writing",
    "building": "Building scene",
}
# Rough share of the wall time per stage (in the worker's order), for one progress bar across stages.
_STAGE_SPAN = {
    "starting": (0.0, 0.03),
    "preprocessing": (0.03, 0.1),
    "loading": (0.1, 0.3),
    "inference": (0.3, 0.92),
    "writing": (0.92, 0.96),
    "building": (0.96, 1.0),
}


def one_line(text: object, limit: int = 300) -> str:
    """A message fit for a status bar: one line, no traceback text (of a traceback, its last line)."""
    text = str(text)
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    if "Traceback (most recent call last)" in text:
        lines = [ln for ln in lines if not ln.startswith(("Traceback", "File \"", "^"))][-1:]
    return " ".join(lines[:1]).strip()[:limit] or "unknown error"


_MISSING_MODULE = re.compile(r"No module named '([\w.]+)'")


def explain_worker_error(message: str, python: str) -> str:
    """Worker messages that mean "this runtime is incomplete" get a sentence saying what to do."""
    missing = _MISSING_MODULE.search(message)
    if missing:
        return (f"{python}: the inference runtime has no {missing.group(1).split('.')[0]} module; reinstall "
                "the runtime, or choose a Python with torch, numpy, pillow and safetensors")
    return message


def unique_output_path(folder: Path, name: str) -> Path:
    """`folder/name.npz`, or `name_2.npz`, ... so an earlier reconstruction (still used by a scene) survives."""
    safe = "".join(c if (c.isalnum() or c in "-_.") else "_" for c in name).strip("._") or "vggt"
    path = folder / f"{safe}.npz"
    n = 2
    while path.exists() or path.with_suffix(".log").exists():
        path = folder / f"{safe}_{n}.npz"
        n += 1
    return path


class ReconstructionRun:
    """One reconstruction: start the worker, follow its progress, then build the scene (or clean up).

    Used by the operator (modal and blocking) and directly by tests; it never blocks except in `wait()`.
    """

    def __init__(self, context: bpy.types.Context) -> None:
        prefs = runtime.get_prefs(context)
        settings = context.scene.vggt
        self.scene = context.scene
        self.name = settings.reconstruction_name()
        self.options = settings.scene_options()
        from .shot import shot_request_fields

        shot = shot_request_fields(settings)  # a chosen shot wins over the photo list
        self.photos = shot.get("images") or settings.photo_paths()
        if not self.photos:
            raise VGGTError("No photos chosen: add photos or a folder in the VGGT panel first")
        missing = [p for p in self.photos if not Path(p).is_file() and "#" not in Path(p).name]
        if missing:
            raise VGGTError(f"{missing[0]}: the photo does not exist", file=missing[0])
        python = runtime.runtime_python(prefs)
        if python is None:
            raise VGGTError("No inference runtime: install it (or choose a Python with torch) in "
                            "Preferences > Add-ons > VGGT Reconstruction")
        if not Path(python).is_file():
            raise VGGTError(f"{python}: the runtime Python does not exist; install the runtime or fix "
                            "the path in the add-on preferences", file=python)
        # The worker would find missing weights too, but only after starting, and in command-line words.
        resolve_weights(runtime.weights_argument(prefs), caller="blender")
        folder = runtime.default_output_dir()
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise VGGTError(f"{folder}: cannot create the output folder ({exc.strerror or exc})",
                            file=str(folder)) from None
        self.output = unique_output_path(folder, self.name)
        self.log_path = self.output.with_suffix(".log")
        self.request = {
            "images": self.photos,
            "output": str(self.output),
            "weights": runtime.weights_argument(prefs),
            "device": prefs.device if prefs else "auto",
            "precision": prefs.precision if prefs else "auto",
            "mode": settings.mode,
            "config": (prefs.model_config.strip() or "vggt-1b") if prefs else "vggt-1b",
            "download": False,
            **shot,
        }
        self.python = python
        self.job: WorkerJob | None = None
        self.stage = "starting"
        self.stage_fraction = 0.0
        self._high = 0.0
        self.message = "Starting the inference runtime"
        self.error: str | None = None
        self.result_path: str | None = None
        self.collection = None
        self.cancelled = False
        self.finished = False
        self._cleanup: threading.Thread | None = None

    # ---- progress ----

    @property
    def fraction(self) -> float:
        """Overall progress 0..1; never moves backwards (stages may come in another order)."""
        lo, hi = _STAGE_SPAN.get(self.stage, (self._high, self._high))
        self._high = max(self._high, lo + (hi - lo) * min(max(self.stage_fraction, 0.0), 1.0))
        return self._high

    @property
    def label(self) -> str:
        return STAGE_LABELS.get(self.stage, self.stage.capitalize())

    def start(self) -> None:
        self.job = WorkerJob(self.python, self.request, str(self.log_path))
        self.job.start()

    def step(self) -> bool:
        """Read what the worker said so far; True once the run is over (result, error or cancel)."""
        if self.finished:
            if self.cancelled and self.job is not None and self.job.done:
                self._remove_output()
            return True
        for event in self.job.poll():
            self._handle(event)
        if self.job.done and not self.finished:
            for event in self.job.poll():  # lines that arrived just before the exit
                self._handle(event)
            self._conclude()
        return self.finished

    def _handle(self, event: dict) -> None:
        kind = event.get("type")
        if kind == "progress":
            self.stage = str(event.get("stage", self.stage))
            self.stage_fraction = float(event.get("fraction", 0.0) or 0.0)
            self.message = str(event.get("message", ""))
        elif kind == "error" and self.error is None:
            message = one_line(event.get("message") or event.get("code") or "the worker failed")
            self.error = explain_worker_error(message, self.python)
            file = event.get("file")
            if file and file not in self.error:
                self.error = f"{file}: {self.error}"
        elif kind == "result":
            self.result_path = str(event.get("path") or self.output)

    def _conclude(self) -> None:
        self.finished = True
        if self.cancelled:
            return
        code = self.job.returncode
        if self.error is None and (code != 0 or self.result_path is None):
            self.error = (f"the inference worker stopped unexpectedly (exit code {code})" if code
                          else "the inference worker ended without a result")
        if self.error is not None:
            return
        self.stage, self.stage_fraction, self.message = "building", 0.0, "Building the scene"
        try:
            self.collection = self._build_scene(self.result_path)
        except VGGTError as exc:
            self.error = one_line(exc)
        except Exception as exc:  # a builder bug: keep Blender alive, say where the details are
            self.error = one_line(f"building the scene failed: {type(exc).__name__}: {exc}")
            self._append_log(exc)

    def _build_scene(self, path: str):
        from ..scene.build import build_scene
        from ..vggt_blender.io.reconstruction import load_reconstruction

        rec = load_reconstruction(path)
        leave_edit_modes(bpy.context)
        # source_path: the collection remembers its reconstruction file ("vggt_reconstruction").
        return build_scene(rec, self.options, self.name, context=bpy.context, source_path=path)

    def _append_log(self, exc: BaseException) -> None:
        import traceback

        try:
            with open(self.log_path, "a", encoding="utf-8") as log:
                log.write("\n[blender] " + "".join(traceback.format_exception(exc)))
        except OSError:
            pass

    def cancel(self) -> None:
        """Stop the worker; nothing reaches the scene and no output file is left.

        Returns at once. The worker may still be renaming its finished file into place (os.replace) as the
        cancel arrives, so the output is removed again once the worker has exited (a background thread).
        """
        if self.finished and self.cancelled:
            return
        self.cancelled = True
        self.finished = True
        self._remove_output()
        job = self.job
        if job is not None and not job.done:
            job.cancel()
            self._cleanup = threading.Thread(target=self._remove_output_after_exit, args=(job,),
                                             name="vggt-cancel-cleanup", daemon=True)
            self._cleanup.start()

    def _remove_output_after_exit(self, job: WorkerJob) -> None:
        job.wait(60)  # the worker client kills it after a few seconds if SIGTERM is ignored
        self._remove_output()

    def _remove_output(self) -> None:
        try:
            self.output.unlink()
        except OSError:
            pass

    def wait(self, interval: float = 0.05, timeout: float | None = None) -> None:
        """Block until the run is over, still reading progress (headless use)."""
        start = time.monotonic()
        while not self.step():
            if timeout is not None and time.monotonic() - start > timeout:
                self.cancel()
                self.error = f"the inference worker did not finish within {timeout:.0f} s"
                return
            time.sleep(interval)

    def error_message(self) -> str:
        return f"VGGT: {self.error} (full log: {self.log_path})"


# The run the panel shows and the Cancel button stops (one at a time).
ACTIVE: dict[str, ReconstructionRun | None] = {"run": None}


def leave_edit_modes(context: bpy.types.Context) -> None:
    """Back to Object mode before the scene is built: in Edit (or a paint) mode the new objects would not
    be one undo step."""
    if context.mode == "OBJECT":
        return
    try:
        bpy.ops.object.mode_set(mode="OBJECT")
    except RuntimeError:
        pass  # no active object to leave the mode of: nothing to do


def _reset_job_state() -> None:
    """The panel and the status bar no longer show a run."""
    wm = bpy.context.window_manager
    job = getattr(wm, "vggt_job", None) if wm is not None else None
    if job is not None:
        job.running = False
    runtime.clear_status_text()
    runtime.tag_redraw_all()


def cancel_active(message: str = "Cancelled") -> None:
    """Stop a running worker (Cancel, another file being opened, the add-on disabled) and reset the panel."""
    run = ACTIVE["run"]
    ACTIVE["run"] = None
    if run is None or run.finished:
        return
    run.cancel()
    wm = bpy.context.window_manager
    job = getattr(wm, "vggt_job", None) if wm is not None else None
    if job is not None:
        job.message = message
    _reset_job_state()


@bpy.app.handlers.persistent
def cancel_on_load(*_args) -> None:
    """load_pre: opening another file drops the modal operator; its worker must not keep running."""
    cancel_active()


def register_handlers() -> None:
    if cancel_on_load not in bpy.app.handlers.load_pre:
        bpy.app.handlers.load_pre.append(cancel_on_load)


def unregister_handlers() -> None:
    # Compare by name too: a reloaded module has a new function object.
    for handler in list(bpy.app.handlers.load_pre):
        same = (getattr(handler, "__name__", "") == cancel_on_load.__name__
                and getattr(handler, "__module__", "") == __name__)
        if handler is cancel_on_load or same:
            bpy.app.handlers.load_pre.remove(handler)


def _publish(context: bpy.types.Context, run: ReconstructionRun) -> None:
    """Mirror the run's state into the window manager (the panel draws it) and the status bar."""
    job = context.window_manager.vggt_job
    job.running = not run.finished
    job.stage = run.label
    job.progress = run.fraction
    job.message = run.message[:200]
    job.log_path = str(run.log_path)
    workspace = getattr(context, "workspace", None)
    if workspace is not None and context.window is not None:
        workspace.status_text_set(None if run.finished else f"VGGT: {run.label} {run.fraction * 100:.0f}%")
    runtime.tag_redraw_all()


class VGGT_OT_reconstruct(bpy.types.Operator):
    """Reconstruct cameras, points and depth planes from the chosen photos with VGGT"""

    bl_idname = "vggt.reconstruct"
    bl_label = "Reconstruct"
    # No REGISTER: a redo panel (or Shift+R) would run the whole reconstruction again, blocking.
    bl_options = {"UNDO"}

    _run: ReconstructionRun | None = None
    _timer = None

    @classmethod
    def poll(cls, context: bpy.types.Context) -> bool:
        run = ACTIVE["run"]
        return context.scene is not None and (run is None or run.finished)

    def _begin(self, context: bpy.types.Context) -> bool:
        job = context.window_manager.vggt_job
        job.last_error = ""
        try:
            self._run = ReconstructionRun(context)
            self._run.start()
        except VGGTError as exc:
            job.last_error = one_line(exc)
            self.report({"ERROR"}, f"VGGT: {job.last_error}")
            return False
        except OSError as exc:  # e.g. the runtime Python is not executable
            job.last_error = one_line(f"cannot start the inference runtime: {exc}")
            self.report({"ERROR"}, f"VGGT: {job.last_error}")
            return False
        ACTIVE["run"] = self._run
        _publish(context, self._run)
        return True

    def _end(self, context: bpy.types.Context) -> set[str]:
        run = self._run
        if ACTIVE["run"] is run:
            ACTIVE["run"] = None
        _publish(context, run)
        job = context.window_manager.vggt_job
        job.running = False
        if run.cancelled:
            job.message = "Cancelled"
            self.report({"WARNING"}, "VGGT: reconstruction cancelled")
            return {"CANCELLED"}
        if run.error is not None:
            job.last_error = run.error
            self.report({"ERROR"}, run.error_message())
            return {"CANCELLED"}
        job.last_result = run.collection.name if run.collection is not None else ""
        job.message = f"Created {job.last_result}"
        self.report({"INFO"}, f"VGGT: created collection {job.last_result} from {len(run.photos)} photos")
        return {"FINISHED"}

    def _remove_timer(self, context: bpy.types.Context) -> None:
        if self._timer is not None:
            try:
                context.window_manager.event_timer_remove(self._timer)
            except (ReferenceError, RuntimeError, AttributeError):
                pass  # its window is already gone (Blender dropped the handler while closing it)
            self._timer = None

    def invoke(self, context: bpy.types.Context, event: bpy.types.Event) -> set[str]:
        if context.window is None:
            return self.execute(context)
        if not self._begin(context):
            return {"CANCELLED"}
        wm = context.window_manager
        self._timer = wm.event_timer_add(0.1, window=context.window)
        wm.modal_handler_add(self)
        return {"RUNNING_MODAL"}

    def modal(self, context: bpy.types.Context, event: bpy.types.Event) -> set[str]:
        # Cancel is the panel's ✕ button only: Esc anywhere in the window would be too easy to hit.
        if event.type != "TIMER":
            return {"PASS_THROUGH"}
        run = self._run
        if not run.finished:
            run.step()
        _publish(context, run)
        if not run.finished:
            return {"PASS_THROUGH"}
        self._remove_timer(context)
        return self._end(context)

    def cancel(self, context: bpy.types.Context) -> None:
        """Blender drops the modal handler (a file is opened, the window closes): stop the run with it."""
        self._remove_timer(context)
        run = self._run
        if run is not None and not run.finished:
            run.cancel()
        if ACTIVE["run"] is run:
            ACTIVE["run"] = None
        _reset_job_state()

    def execute(self, context: bpy.types.Context) -> set[str]:
        if not self._begin(context):
            return {"CANCELLED"}
        run = self._run
        while not run.step():
            _publish(context, run)
            time.sleep(0.05)
        return self._end(context)


class VGGT_OT_cancel_reconstruction(bpy.types.Operator):
    """Stop the running reconstruction; the scene is left unchanged"""

    bl_idname = "vggt.cancel_reconstruction"
    bl_label = "Cancel"

    @classmethod
    def poll(cls, context: bpy.types.Context) -> bool:
        run = ACTIVE["run"]
        return run is not None and not run.finished

    def execute(self, context: bpy.types.Context) -> set[str]:
        # Resets the panel itself: the modal operator may be gone already (it then never ticks again).
        cancel_active()
        self.report({"WARNING"}, "VGGT: reconstruction cancelled")
        return {"FINISHED"}


classes = (VGGT_OT_reconstruct, VGGT_OT_cancel_reconstruction)


def register() -> None:
    register_handlers()


def unregister() -> None:
    """Disabling the add-on mid-run: stop the worker and clear the panel/status bar."""
    unregister_handlers()
    cancel_active()
