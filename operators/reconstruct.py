"""`vggt.reconstruct`: photos -> a reconstruction job (jobs/local.py) -> reconstruction file -> scene.

The model runs in another Python (`python -m vggt_blender.jobs.worker`), so Blender stays responsive and a crash or
out-of-memory there cannot take Blender down. The run is a task of the extension's one task registry (tasks.py),
whose timer reads the job's progress. Invoked from the UI the operator is modal only to finish the run itself
(the scene is built inside the operator: one undo step, one report); `execute()` runs the same task blocking
(scripts, tests). Cancel (the panel's ✕ button, opening another file, disabling the add-on) stops the job and
leaves the scene unchanged. By default one worker stays alive between runs (the model stays loaded).
"""

from __future__ import annotations

from pathlib import Path

import bpy

from .. import runtime, tasks
from ..properties import set_job_warnings
from ..tasks import one_line  # noqa: F401 - the operators' shared one-line helper
from ..vggt_blender.errors import RequestError, VGGTError
from ..vggt_blender.jobs.interface import CANCELLED, DONE, FAILED
from ..vggt_blender.io.output_paths import display_folder_for
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
    """`folder/name.npz`, or `name_2.npz`, ... so an earlier reconstruction (still used by a scene) survives:
    its file, its log and its folder of upright photo copies."""
    safe = "".join(c if (c.isalnum() or c in "-_.") else "_" for c in name).strip("._") or "vggt"
    while len(safe.encode("utf-8")) > _MAX_NAME_BYTES:  # room for "_N.npz" within the protocol's limit
        safe = safe[:-1]
    path = folder / f"{safe}.npz"
    n = 2
    while path.exists() or path.with_suffix(".log").exists() or display_folder_for(path).exists():
        path = folder / f"{safe}_{n}.npz"
        n += 1
    return path


class WorkerRun(tasks.Task):
    """A job (jobs/interface.py) followed as a task: start it, mirror its progress across stages, take its
    outcome; subclasses make `self.job` and build the scene in `finish()` (or leave it unchanged).

    A task of the registry: `poll()` never blocks, `finish()` runs on the main thread.
    """

    cancel_on_load = True  # its scene would be built in the file just opened
    stage_labels = STAGE_LABELS
    stage_span = _STAGE_SPAN
    what = "reconstruction"  # for the reports ("VGGT: reconstruction cancelled")
    done_verb = "Created"  # the panel's line after a run: "Created <collection>"

    def __init__(self) -> None:
        super().__init__()
        self.job = None
        self.stage = "starting"
        self.message = "Starting the inference runtime"
        self.collection = None
        self.result_path: str | None = None

    # ---- progress ----

    def _advance(self, stage: str, fraction: float) -> None:
        """Overall progress 0..1 across stages; never moves backwards (stages may come in another order)."""
        self.stage = stage
        lo, hi = self.stage_span.get(stage, (self.fraction, self.fraction))
        self.fraction = max(self.fraction, lo + (hi - lo) * min(max(fraction, 0.0), 1.0))
        self.label = self.stage_labels.get(stage, stage.capitalize())

    def start(self) -> None:
        """Start the job; a job that cannot start leaves the run over with its error."""
        self.label = self.stage_labels["starting"]
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
        """On the main thread: bring the result files to `self.output`'s folder and build the scene from them."""
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

    def _build_scene(self, path: str) -> bpy.types.Collection:  # pragma: no cover - overridden
        """The collection made from the result file `path` (raise VGGTError; never leave a half-built scene)."""
        raise NotImplementedError

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

    def done_report(self) -> str:
        """The INFO report of a run that built its collection."""
        raise NotImplementedError


class ReconstructionRun(WorkerRun):
    """One reconstruction: photos -> the worker's reconstruction file -> a new collection."""

    name = TASK

    def __init__(self, context: bpy.types.Context) -> None:
        super().__init__()
        prefs = runtime.get_prefs(context)
        settings = context.scene.vggt
        self.scene = context.scene
        self.name_text = settings.reconstruction_name()
        self.options = settings.scene_options()
        from .shot import shot_request_fields

        shot = shot_request_fields(settings)  # a chosen shot (video or image sequence) wins over the photo list
        self.photos = shot.get("images") or settings.photo_paths()
        if not self.photos:
            raise VGGTError("No photos chosen: add photos or a folder in the VGGT panel first")
        missing = [p for p in self.photos if not Path(p).is_file() and "#" not in Path(p).name]
        if missing:
            raise VGGTError(f"{missing[0]}: the {'shot' if shot else 'photo'} does not exist", file=missing[0])
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
            "model": runtime.selected_model(prefs),  # None with a weights file: its keys decide the family
            "config": (prefs.model_config.strip() or None) if prefs else None,
            "download": False,
            "fast_path": getattr(prefs, "fast_path", "auto") if prefs else "auto",
            # Photos: bundle adjustment after the model when asked (a shot brings its own choice).
            "refine": bool(settings.refine_cameras) and not shot,
            **shot,
        }
        # The job checks the runtime Python and the weights itself, and fails with their error code.
        self.python = runtime.runtime_python(prefs)
        if runtime.uses_server(prefs):
            from .server import remote_job

            self.job = remote_job(prefs, self.request, self.log_path)
        else:
            self.job = LocalJob(self.python, self.request, self.log_path, caller="blender",
                                keep_alive=bool(getattr(prefs, "keep_worker", True)))

    def _build_scene(self, path: str):
        from ..scene.build import build_scene
        from ..vggt_blender.io.reconstruction import load_reconstruction

        rec = load_reconstruction(path)
        leave_edit_modes(bpy.context)
        # source_path: the collection remembers its reconstruction file ("vggt_reconstruction").
        return build_scene(rec, self.options, self.name_text, context=bpy.context, source_path=path)

    def done_report(self) -> str:
        name = self.collection.name if self.collection is not None else ""
        if "every" in self.request:  # a shot: one video file or image sequence
            return f"VGGT: created collection {name} from the shot {Path(self.photos[0]).name}"
        return f"VGGT: created collection {name} from {len(self.photos)} photos"


# The tasks that run a job and share the panel's progress bar and Cancel button (one at a time): a
# reconstruction, and a camera refinement (operators/refine.py).
REFINE_TASK = "refine"
WORKER_TASKS = (TASK, REFINE_TASK)


def active_run() -> WorkerRun | None:
    """The run the panel shows and the Cancel button stops (one at a time)."""
    for name in WORKER_TASKS:
        task = tasks.get(name)
        if isinstance(task, WorkerRun) and not task.finished:
            return task
    return None


def worker_task_running() -> bool:
    return any(tasks.running(name) for name in WORKER_TASKS)


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
    """Stop a running reconstruction or refinement (Cancel, another file being opened, the add-on disabled)."""
    for name in WORKER_TASKS:
        tasks.cancel(name, message)


def _publish(context: bpy.types.Context, run: WorkerRun) -> None:
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


def _conclude_run(run: WorkerRun) -> tuple[str, str]:
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
        return "WARNING", f"VGGT: {run.what} cancelled"
    if run.error:
        if job is not None:
            job.last_error = run.error
        return "ERROR", run.error_message()
    name = run.collection.name if run.collection is not None else ""
    if job is not None:
        job.last_result = name
        job.message = f"{run.done_verb} {name}"
        # What the artist should know about the result: the worker's warnings (cropped or padded photos)
        # and the builder's (implausible lenses).
        built = list(run.collection.get("vggt_warnings", [])) if run.collection is not None else []
        set_job_warnings(job, list(run.job.warnings) + [str(line) for line in built])
    return "INFO", run.done_report()


def _on_run_finished(run: tasks.Task) -> None:
    assert isinstance(run, WorkerRun)
    _publish(bpy.context, run)
    run.report = _conclude_run(run)


class JobOperator:
    """What the Reconstruct and Refine Cameras operators share: `_begin(context)` (each its own) starts a
    WorkerRun; invoked from the UI the operator is modal only to finish the run (its scene is built inside the
    operator: one undo step, one report); `execute()` runs the same task blocking (scripts, tests)."""

    _run: WorkerRun | None = None
    _timer = None

    def _begin(self, context: bpy.types.Context) -> WorkerRun | None:  # pragma: no cover - overridden
        raise NotImplementedError

    def _report_end(self, run: WorkerRun) -> set[str]:
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
            tasks.cancel(run.name)

    def execute(self, context: bpy.types.Context) -> set[str]:
        run = self._begin(context)
        if run is None:
            return {"CANCELLED"}
        tasks.run_blocking(run)
        return self._report_end(run)


def begin_run(op: JobOperator, context: bpy.types.Context, make_run) -> WorkerRun | None:
    """Start `make_run(context)` as a task, the panel's last outcome cleared; None (with the operator's ERROR
    report) when it cannot start."""
    job = context.window_manager.vggt_job
    job.last_error = job.last_error_code = ""
    set_job_warnings(job, [])
    try:
        run = make_run(context)
        run.start()
    except VGGTError as exc:
        job.last_error, job.last_error_code = one_line(exc), exc.code
        op.report({"ERROR"}, f"VGGT: {job.last_error}")
        return None
    if run.over:  # the job could not start (no runtime, no weights): its coded error, nothing running
        job.last_error, job.last_error_code = run.error, run.error_code
        job.log_path = run.log_path
        op.report({"ERROR"}, f"VGGT: {run.error}")
        return None
    run.on_finish.append(_on_run_finished)
    tasks.start(run)
    _publish(context, run)
    return run


class VGGT_OT_reconstruct(JobOperator, bpy.types.Operator):
    """Reconstruct cameras, points and depth planes from the chosen photos with VGGT"""

    bl_idname = "vggt.reconstruct"
    bl_label = "Reconstruct"
    # No REGISTER: a redo panel (or Shift+R) would run the whole reconstruction again, blocking.
    bl_options = {"UNDO"}

    @classmethod
    def poll(cls, context: bpy.types.Context) -> bool:
        return context.scene is not None and not worker_task_running()

    def _begin(self, context: bpy.types.Context) -> WorkerRun | None:
        return begin_run(self, context, ReconstructionRun)


class VGGT_OT_cancel_reconstruction(bpy.types.Operator):
    """Stop the running reconstruction; the scene is left unchanged"""

    bl_idname = "vggt.cancel_reconstruction"
    bl_label = "Cancel"

    @classmethod
    def poll(cls, context: bpy.types.Context) -> bool:
        return active_run() is not None

    def execute(self, context: bpy.types.Context) -> set[str]:
        # Resets the panel itself: the modal operator may be gone already (it then never ticks again).
        run = active_run()
        what = run.what if run is not None else "reconstruction"
        cancel_active()
        self.report({"WARNING"}, f"VGGT: {what} cancelled")
        return {"FINISHED"}


classes = (VGGT_OT_reconstruct, VGGT_OT_cancel_reconstruction)


def _end_kept_worker_on_quit() -> None:
    from ..vggt_blender.jobs.local import close_shared_worker

    close_shared_worker(timeout=2.0)  # killed after 2 s: quitting waits at most tasks.EXIT_JOIN_SECONDS


def register() -> None:
    tasks.register()
    tasks.on_exit(_end_kept_worker_on_quit)


def unregister() -> None:
    """Disabling the add-on mid-run: stop every task (the worker with it), end the kept worker (the exit step
    registered above, which tasks.unregister runs too), clear the panel."""
    tasks.unregister()
