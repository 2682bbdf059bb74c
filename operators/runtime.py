"""Runtime set-up operators: install the private inference runtime, check it, download the weights.

Long work (pip, a 5 GB download) is a thread task of the extension's task registry (tasks.py): its timer is not
tied to any window (users close the Preferences window while pip works), the preferences draw the task's
progress, and its finishing work runs on Blender's main thread.
"""

from __future__ import annotations

import time

import bpy
from bpy.props import StringProperty

from .. import runtime, tasks
from ..tasks import one_line
from ..vggt_blender import runtime_setup
from ..vggt_blender.errors import VGGTError

TASK_NAMES = ("install", "download")


def draw_task(layout: bpy.types.UILayout, name: str) -> None:
    """Progress (or the last outcome) of a background task, drawn inside the preferences."""
    task = tasks.last(name)
    if task is None:
        return
    if not task.over:
        row = layout.row(align=True)
        text = f"{task.label} {task.fraction * 100:.0f}%"
        if hasattr(row, "progress"):  # UILayout.progress exists since Blender 4.0
            row.progress(factor=task.fraction, type="BAR", text=text)
        else:
            row.label(text=text)
        row.operator("vggt.cancel_runtime_task", text="", icon="CANCEL").task = name
        if task.message:
            layout.label(text=task.message[:120])
    elif task.error:
        layout.label(text=task.error[:200], icon="ERROR")
        if task.log_path:
            layout.label(text=f"Log: {task.log_path}")
    elif task.message:
        layout.label(text=task.message[:200], icon="INFO")


def run_task(task: tasks.ThreadTask) -> tasks.ThreadTask:
    """Register a started thread task; headless (scripts, tests) this blocks until it has finished."""
    tasks.start(task)
    if bpy.app.background:
        task.join()
        tasks.run_blocking(task)
    return task


def stop_tasks() -> None:
    """The add-on is being disabled: every task is told to stop (pip is terminated, the download keeps its
    .part file) and the timer goes; nothing finishes in a UI that is gone."""
    tasks.stop_all()


class VGGT_OT_check_runtime(bpy.types.Operator):
    """Check the inference runtime: torch version, GPU and weights"""

    bl_idname = "vggt.check_runtime"
    bl_label = "Check Runtime"

    def execute(self, context: bpy.types.Context) -> set[str]:
        runtime.clear_status()
        # Headless callers (scripts, tests) get the answer before this returns.
        runtime.refresh_status(runtime.get_prefs(context), wait=bpy.app.background)
        return {"FINISHED"}


class VGGT_OT_cancel_runtime_task(bpy.types.Operator):
    """Stop the runtime installation or the weights download"""

    bl_idname = "vggt.cancel_runtime_task"
    bl_label = "Cancel"

    task: StringProperty(default="install")

    def execute(self, context: bpy.types.Context) -> set[str]:
        if self.task in TASK_NAMES:
            tasks.request_cancel(self.task)
        return {"FINISHED"}


class VGGT_OT_install_runtime(bpy.types.Operator):
    """Create a private Python environment and install torch, numpy, pillow and safetensors into it
    (downloads about 0.2 GB for the CPU build, several GB for the CUDA build)"""

    bl_idname = "vggt.install_runtime"
    bl_label = "Install Inference Runtime"

    @classmethod
    def poll(cls, context: bpy.types.Context) -> bool:
        return not tasks.running("install")

    def execute(self, context: bpy.types.Context) -> set[str]:
        if not bpy.app.online_access:
            error = ("Online access is disabled: enable it in Preferences > System > Network, "
                     "or choose an existing Python with torch")
            tasks.note("install", error=error)
            self.report({"ERROR"}, error)
            return {"CANCELLED"}
        log_path = runtime.install_log_path()
        # Everything that can take seconds (running Python, nvidia-smi) happens on the task's thread.
        args = (runtime_setup.blender_python(), runtime.runtime_venv_dir(), log_path,
                runtime.env_without_blender_python())
        task = tasks.ThreadTask(lambda t: _install_work(t, *args), _install_finish, name="install",
                                label="Checking Python")
        task.log_path = str(log_path)
        run_task(task)
        if bpy.app.background and task.error:
            self.report({"ERROR"}, task.error)
            return {"CANCELLED"}
        return {"FINISHED"}


def _install_work(task: tasks.ThreadTask, base_python: str, venv_dir, log_path, env: dict[str, str]) -> None:
    """On the task thread: check Blender's Python, pick the torch build, run the pip steps."""
    try:
        runtime_setup.check_python_version(base_python)
        task.label = "Looking for an NVIDIA GPU"
        index_url = runtime_setup.torch_index_url()
        steps = runtime_setup.install_commands(base_python, venv_dir, index_url)
        job = runtime_setup.CommandSequence(steps, log_path, env=env)
        job.start()
    except VGGTError as exc:
        task.error, task.error_code = one_line(exc), exc.code
        return
    except Exception as exc:  # e.g. the log folder cannot be written: say so instead of "installed"
        task.error = one_line(f"cannot start the installation: {type(exc).__name__}: {exc}")
        return
    cancel_sent = False
    while not job.done:
        if task.cancelled and not cancel_sent:
            job.cancel()
            cancel_sent = True
        task.label, task.fraction, task.message = job.label, job.fraction, job.last_line
        time.sleep(0.1)
    task.label, task.fraction, task.message = job.label, job.fraction, job.last_line
    if job.returncode == 0:
        task.message = "Runtime installed"
    elif task.cancelled:
        task.message, task.error = "", "Installation cancelled"
    else:
        task.error = one_line(job.error or f"installation failed (exit code {job.returncode})")
        task.error += f" (log: {job.log_path})"


def _install_finish(task: tasks.ThreadTask) -> None:
    """On the main thread: the new runtime's status is probed (the panel shows it)."""
    if not task.error:
        runtime.clear_status()
        runtime.refresh_status(wait=bpy.app.background)


# ---- weights download ----

# How the shared downloader tells a Blender user to give a token for a gated checkpoint.
BLENDER_TOKEN_HINT = "in these add-on preferences (Hugging Face Token) or as HF_TOKEN"


def checkpoint_info(name: str) -> dict:
    """The registry entry as plain values for the confirm dialog and the download."""
    from ..vggt_blender.weights.registry import get_checkpoint
    from ..vggt_blender.weights.discovery import default_weights_path  # torch-free: imports torch only to load

    ckpt = get_checkpoint(name)
    return {
        "name": ckpt.name,
        "url": ckpt.url,
        "licence": ckpt.licence,
        "licence_url": ckpt.licence_url,
        "size": ckpt.approx_bytes,
        "gated": ckpt.gated,
        "page_url": ckpt.page_url,
        # The shared cache folder: the command line and the worker find the file there without a path.
        "dest": default_weights_path(name),
    }


class VGGT_OT_download_weights(bpy.types.Operator):
    """Download the official checkpoint (about 5 GB); an interrupted download resumes"""

    bl_idname = "vggt.download_weights"
    bl_label = "Download Weights"

    @classmethod
    def poll(cls, context: bpy.types.Context) -> bool:
        return not tasks.running("download")

    def _offline(self) -> bool:
        if bpy.app.online_access:
            return False
        error = ("Online access is disabled: enable it in Preferences > System > Network, "
                 "or download the weights yourself and set their path")
        tasks.note("download", error=error)
        self.report({"ERROR"}, error)
        return True

    def invoke(self, context: bpy.types.Context, event: bpy.types.Event) -> set[str]:
        if self._offline():
            return {"CANCELLED"}
        try:
            checkpoint_info(runtime.get_prefs(context).checkpoint)
        except Exception as exc:  # registry missing or unknown name
            self.report({"ERROR"}, f"Unknown checkpoint: {one_line(exc)}")
            return {"CANCELLED"}
        # The licence is shown before anything starts: the confirm dialog draws it.
        return context.window_manager.invoke_props_dialog(self, width=560, confirm_text="Accept and Download")

    def draw(self, context: bpy.types.Context) -> None:
        info = checkpoint_info(runtime.get_prefs(context).checkpoint)
        col = self.layout.column()
        col.label(text=f"Checkpoint: {info['name']}")
        col.label(text=f"Licence: {info['licence']}")
        if info["licence_url"]:
            col.label(text=info["licence_url"])
        col.label(text=f"From: {info['url']}")
        if info["size"]:
            col.label(text=f"Size: {float(info['size']) / 1e9:.2f} GB")
        col.label(text=f"To: {info['dest']}")
        if info["gated"]:
            col.label(text=f"Gated: accept the licence at {info['page_url']} first,")
            col.label(text="and set a Hugging Face read token in the preferences (or HF_TOKEN)")
        col.label(text="By downloading you accept this licence.")

    def execute(self, context: bpy.types.Context) -> set[str]:
        if self._offline():
            return {"CANCELLED"}
        prefs = runtime.get_prefs(context)
        info = checkpoint_info(prefs.checkpoint)
        result: dict = {}
        token = prefs.hf_token.strip() or None
        task = run_task(tasks.ThreadTask(lambda t: _download_work(t, info, token, result),
                                         lambda t: _download_finish(t, result), name="download",
                                         label=f"Downloading {info['name']}"))
        if bpy.app.background:
            if task.error:
                self.report({"ERROR"}, task.error)
                return {"CANCELLED"}
            self.report({"INFO"}, task.message)
        return {"FINISHED"}


def _download_work(task: tasks.ThreadTask, info: dict, token: str | None, result: dict) -> None:
    # The shared downloader: keeps a finished file, checks the gated token, resumes the .part file.
    from ..vggt_blender.weights.download import download_named_checkpoint

    def progress(fraction: float, message: str) -> None:
        task.fraction, task.message = fraction, message

    try:
        # Cancel keeps the .part file: the next download resumes where this one stopped.
        result["path"] = str(download_named_checkpoint(
            info["name"], info["dest"], token=token, progress=progress,
            should_cancel=lambda: task.cancelled, url=info["url"], token_hint=BLENDER_TOKEN_HINT))
    except VGGTError as exc:
        if exc.code == "cancelled" or task.cancelled:
            task.error, task.error_code = "Download cancelled (it resumes where it stopped next time)", "cancelled"
        else:
            task.error, task.error_code = one_line(exc), exc.code
    except Exception as exc:  # network errors the downloader did not translate
        task.error, task.error_code = one_line(f"{info['url']}: download failed ({type(exc).__name__}: {exc})"), \
            "download_failed"


def _download_finish(task: tasks.ThreadTask, result: dict) -> None:
    """On the main thread: point the preferences at the new file and re-check the runtime status."""
    if "path" not in result:
        task.error = task.error or "download failed"
        return
    prefs = runtime.get_prefs()
    if prefs is not None:
        prefs.weights_path = result["path"]
    task.message = f"Weights saved to {result['path']}"
    runtime.clear_status()
    if runtime.runtime_python(prefs) is not None:
        runtime.refresh_status(prefs, wait=bpy.app.background)


classes = (
    VGGT_OT_check_runtime,
    VGGT_OT_cancel_runtime_task,
    VGGT_OT_install_runtime,
    VGGT_OT_download_weights,
)


def register() -> None:
    tasks.register()


def unregister() -> None:
    stop_tasks()
