"""`vggt.reconstruct`: photos -> a reconstruction job (jobs/local.py) -> reconstruction file -> scene.

The model runs in another Python (`python -m vggt_blender.jobs.worker`), so Blender stays responsive and a crash or
out-of-memory there cannot take Blender down. The run is a task of the extension's one task registry (tasks.py),
whose timer reads the job's progress. Invoked from the UI the operator is modal only to finish the run itself
(the scene is built inside the operator: one undo step, one report); `execute()` runs the same task blocking
(scripts, tests). Cancel (the panel's ✕ button, opening another file, disabling the add-on) stops the job and
leaves the scene unchanged. By default one worker stays alive between runs (the model stays loaded).
"""

from __future__ import annotations

import time
from pathlib import Path

import bpy

from .. import runtime, tasks
from ..tasks import one_line  # noqa: F401 - the operators' shared one-line helper
from ..vggt_blender.errors import RequestError, VGGTError
from ..vggt_blender.jobs.interface import CANCELLED, DONE, FAILED
from ..vggt_blender.jobs.local import LocalJob

TASK = "reconstruct"
STAGE_LABELS = {
    "starting": "Starting",
    "loading": "Loading model",
    "preprocessing": "Preparing photos",
    "inference": "Reconstructing",
    "writing": "Writing",
    "building": "Building scene",
    "connecting": "Connecting",  # a server's stages (jobs/remote.py)
    "uploading": "Uploading photos",
    "queued": "Waiting for the server",
    "downloading": "Downloading",
}
# Rough share of the wall time per stage (in the worker's order), for one progress bar across stages.
_STAGE_SPAN = {
    "starting": (0.0, 0.03),
    "preprocessing": (0.03, 0.1),
    "loading": (0.1, 0.3),
    "inference": (0.3, 0.92),
    "writing": (0.92, 0.96),
    "building": (0.96, 1.0),
    "connecting": (0.0, 0.01),
    "uploading": (0.01, 0.03),
    "queued": (0.03, 0.03),
    "downloading": (0.92, 0.96),
}
# What a Blender user does about an error, by its code (the job's messages say what happened, not where to click).
_BLENDER_HINTS = {
    "no_runtime": "install the runtime, or choose a Python with torch, in Preferences > Add-ons > VGGT Reconstruction",
}


_MAX_NAME_BYTES = 200


def unique_output_path(folder: Path, name: str) -> Path:
    """`folder/name.npz`, or `name_2.npz`, ... so an earlier reconstruction (still used by a scene) survives."""
    safe = "".join(c if (c.isalnum() or c in "-_.") else "_" for c in name).strip("._") or "vggt"
    while len(safe.encode("utf-8")) > _MAX_NAME_BYTES:  # room for "_N.npz" within the protocol's limit
        safe = safe[:-1]
    path = folder / f"{safe}.npz"
    n = 2
    while path.exists() or path.with_suffix(".log").exists():
        path = folder / f"{safe}_{n}.npz"
        n += 1
    return path


class ReconstructionRun(tasks.Task):
    """One reconstruction: start the job, follow its progress, then build the scene (or leave it unchanged).

    A task of the registry: `poll()` never blocks, `finish()` builds the scene on the main thread.
    """

    name = TASK
    cancel_on_load = True  # its scene would be built in the file just opened

    def __init__(self, context: bpy.types.Context) -> None:
        super().__init__()
        prefs = runtime.get_prefs(context)
        settings = context.scene.vggt
        self.scene = context.scene
        self.name_text = settings.reconstruction_name()
        self.options = settings.scene_options()
        self.photos = settings.photo_paths()
        if not self.photos:
            raise VGGTError("No photos chosen: add photos or a folder in the VGGT panel first")
        missing = [p for p in self.photos if not Path(p).is_file()]
        if missing:
            raise VGGTError(f"{missing[0]}: the photo does not exist", file=missing[0])
        folder = runtime.default_output_dir()
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise RequestError(f"{folder}: cannot create the output folder ({exc.strerror or exc})",
                            file=str(folder)) from None
        self.output = unique_output_path(folder, self.name_text)
        self.log_path = str(self.output.with_suffix(".log"))
        self.request = {
            "images": self.photos,
            "output": str(self.output),
            "weights": runtime.weights_argument(prefs),
            "device": prefs.device if prefs else "auto",
            "precision": prefs.precision if prefs else "auto",
            "mode": settings.mode,
            "config": (prefs.model_config.strip() or "vggt-1b") if prefs else "vggt-1b",
            "download": False,
        }
        # The job checks the runtime Python and the weights itself, and fails with their error code.
        self.python = runtime.runtime_python(prefs)
        if prefs is not None and prefs.inference_source == "SERVER":
            from .server import remote_job

            self.job = remote_job(prefs, self.request, self.log_path)
        else:
            self.job = LocalJob(self.python, self.request, self.log_path, caller="blender",
                                keep_alive=bool(getattr(prefs, "keep_worker", True)))
        self.stage = "starting"
        self.message = "Starting the inference runtime"
        self.collection = None
        self.result_path: str | None = None

    # ---- progress ----

    def _advance(self, stage: str, fraction: float) -> None:
        """Overall progress 0..1 across stages; never moves backwards (stages may come in another order)."""
        self.stage = stage
        lo, hi = _STAGE_SPAN.get(stage, (self.fraction, self.fraction))
        self.fraction = max(self.fraction, lo + (hi - lo) * min(max(fraction, 0.0), 1.0))
        self.label = STAGE_LABELS.get(stage, stage.capitalize())

    def start(self) -> None:
        """Start the job; a job that cannot start leaves the run over with its error."""
        self.label = STAGE_LABELS["starting"]
        self.job.start()
        if self.job.finished:
            self._take_outcome()

    def poll(self) -> bool:
        self.job.poll()
        progress = self.job.progress
        if progress.stage != "starting":
            self._advance(progress.stage, progress.fraction)
            self.message = progress.message
        if self.job.finished:
            self._take_outcome()
        _publish(bpy.context, self)
        return self.over

    def _take_outcome(self) -> None:
        job = self.job
        self.over = True
        if job.state == CANCELLED:
            self.cancelled = True
        elif job.state == FAILED:
            self.error_code = job.error_code or "internal"
            text = one_line(job.error_message or self.error_code)
            if job.error_file and job.error_file not in text:
                text = f"{job.error_file}: {text}"
            if self.error_code == "no_runtime" and not self.python:
                text = "No inference runtime"
            hint = _BLENDER_HINTS.get(self.error_code)
            self.error = f"{text}; {hint}" if hint else text
        elif job.state == DONE:
            self.result_path = job.result["path"]

    def finish(self) -> None:
        """On the main thread: bring the result files beside the .blend's reconstructions and build the scene."""
        if self.error or self.result_path is None:
            return
        self._advance("building", 0.0)
        self.message = "Building the scene"
        try:
            path = str(self.job.fetch(self.output.parent)[0])
            self.collection = self._build_scene(path)
        except VGGTError as exc:
            self.error, self.error_code = one_line(exc), exc.code
        except Exception as exc:  # a builder bug: keep Blender alive, say where the details are
            self.error, self.error_code = one_line(f"building the scene failed: {type(exc).__name__}: {exc}"), \
                "internal"
            self._append_log(exc)
        self._advance("building", 1.0)

    def _build_scene(self, path: str):
        from ..scene.build import build_scene
        from ..vggt_blender.io.reconstruction import load_reconstruction

        rec = load_reconstruction(path)
        leave_edit_modes(bpy.context)
        # source_path: the collection remembers its reconstruction file ("vggt_reconstruction").
        return build_scene(rec, self.options, self.name_text, context=bpy.context, source_path=path)

    def _append_log(self, exc: BaseException) -> None:
        import traceback

        try:
            with open(self.log_path, "a", encoding="utf-8") as log:
                log.write("\n[blender] " + "".join(traceback.format_exception(exc)))
        except OSError:
            pass

    def cancel(self) -> None:
        """Stop the job (a cancel message to the worker); nothing reaches the scene and no output file is left
        (the job removes a result that arrives anyway). Returns at once."""
        self.cancelled = True
        self.job.cancel()

    def error_message(self) -> str:
        return f"VGGT: {self.error} (full log: {self.log_path})"


def active_run() -> ReconstructionRun | None:
    """The run the panel shows and the Cancel button stops (one at a time)."""
    task = tasks.get(TASK)
    return task if isinstance(task, ReconstructionRun) and not task.finished else None


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
    """Stop a running reconstruction (Cancel, another file being opened, the add-on disabled)."""
    tasks.cancel(TASK, message)


def _publish(context: bpy.types.Context, run: ReconstructionRun) -> None:
    """Mirror the run's state into the window manager (the panel draws it) and the status bar."""
    wm = context.window_manager
    job = getattr(wm, "vggt_job", None) if wm is not None else None
    if job is None:
        return
    job.running = not run.finished
    job.stage = run.label
    job.progress = run.fraction
    job.message = run.message[:200]
    job.log_path = str(run.log_path)
    workspace = getattr(context, "workspace", None)
    if workspace is not None and context.window is not None:
        workspace.status_text_set(None if run.over else f"VGGT: {run.label} {run.fraction * 100:.0f}%")


def _conclude_run(run: ReconstructionRun) -> tuple[str, str]:
    """The run has ended (finished, failed or cancelled): the panel shows the outcome; returns the report."""
    wm = bpy.context.window_manager
    job = getattr(wm, "vggt_job", None) if wm is not None else None
    if job is not None:
        job.running = False
        job.last_error_code = run.error_code
    _reset_job_state()
    if run.cancelled:
        if job is not None:
            job.message = run.message if run.message.startswith("Cancelled") else "Cancelled"
        return "WARNING", "VGGT: reconstruction cancelled"
    if run.error:
        if job is not None:
            job.last_error = run.error
        return "ERROR", run.error_message()
    name = run.collection.name if run.collection is not None else ""
    if job is not None:
        job.last_result = name
        job.message = f"Created {name}"
    return "INFO", f"VGGT: created collection {name} from {len(run.photos)} photos"


def _on_run_finished(run: tasks.Task) -> None:
    assert isinstance(run, ReconstructionRun)
    _publish(bpy.context, run)
    run.report = _conclude_run(run)


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
        return context.scene is not None and not tasks.running(TASK)

    def _begin(self, context: bpy.types.Context) -> ReconstructionRun | None:
        job = context.window_manager.vggt_job
        job.last_error = job.last_error_code = ""
        try:
            run = ReconstructionRun(context)
            run.start()
        except VGGTError as exc:
            job.last_error, job.last_error_code = one_line(exc), exc.code
            self.report({"ERROR"}, f"VGGT: {job.last_error}")
            return None
        if run.over:  # the job could not start (no runtime, no weights): its coded error, nothing running
            job.last_error, job.last_error_code = run.error, run.error_code
            job.log_path = run.log_path
            self.report({"ERROR"}, f"VGGT: {run.error}")
            return None
        run.on_finish.append(_on_run_finished)
        tasks.start(run)
        _publish(context, run)
        return run

    def _report_end(self, run: ReconstructionRun) -> set[str]:
        level, text = getattr(run, "report", None) or _conclude_run(run)
        self.report({level}, text)
        return {"FINISHED"} if level == "INFO" else {"CANCELLED"}

    def _remove_timer(self, context: bpy.types.Context) -> None:
        if self._timer is not None:
            try:
                context.window_manager.event_timer_remove(self._timer)
            except (ReferenceError, RuntimeError, AttributeError):
                pass  # its window is already gone (Blender dropped the handler while closing it)
            self._timer = None

    def invoke(self, context: bpy.types.Context, event: bpy.types.Event) -> set[str]:
        if context.window is None:
            return self.execute(context)  # no window to be modal in (background Blender)
        run = self._begin(context)
        if run is None:
            return {"CANCELLED"}
        self._run = run
        run.owner = self  # the registry polls it; this operator builds the scene (one undo step) and reports
        wm = context.window_manager
        self._timer = wm.event_timer_add(0.1, window=context.window)
        wm.modal_handler_add(self)
        return {"RUNNING_MODAL"}

    def modal(self, context: bpy.types.Context, event: bpy.types.Event) -> set[str]:
        # Cancel is the panel's ✕ button only: Esc anywhere in the window would be too easy to hit.
        if event.type != "TIMER":
            return {"PASS_THROUGH"}
        run = self._run
        if run is None or not (run.over or run.finished):
            if run is not None:
                _publish(context, run)  # with this window's context: the status bar too
            return {"PASS_THROUGH"}
        tasks.conclude(run)
        self._remove_timer(context)
        return self._report_end(run)

    def cancel(self, context: bpy.types.Context) -> None:
        """Blender drops the modal handler (a file is opened, the window closes): stop the run with it."""
        self._remove_timer(context)
        run = self._run
        if run is not None and not run.finished:
            tasks.cancel(TASK)

    def execute(self, context: bpy.types.Context) -> set[str]:
        run = self._begin(context)
        if run is None:
            return {"CANCELLED"}
        tasks.run_blocking(run)
        return self._report_end(run)


class VGGT_OT_cancel_reconstruction(bpy.types.Operator):
    """Stop the running reconstruction; the scene is left unchanged"""

    bl_idname = "vggt.cancel_reconstruction"
    bl_label = "Cancel"

    @classmethod
    def poll(cls, context: bpy.types.Context) -> bool:
        return active_run() is not None

    def execute(self, context: bpy.types.Context) -> set[str]:
        # Resets the panel itself: the modal operator may be gone already (it then never ticks again).
        cancel_active()
        self.report({"WARNING"}, "VGGT: reconstruction cancelled")
        return {"FINISHED"}


classes = (VGGT_OT_reconstruct, VGGT_OT_cancel_reconstruction)


def register() -> None:
    tasks.register()


def unregister() -> None:
    """Disabling the add-on mid-run: stop every task (the worker with it), end the kept worker, clear the panel."""
    tasks.unregister()
    from ..vggt_blender.jobs.local import close_shared_worker

    close_shared_worker()
