"""Runtime set-up operators: install the private inference runtime, check it, download the weights.

Long work (pip, a 5 GB download) runs in a background thread; a `bpy.app.timers` function (not tied to any
window: users close the Preferences window while pip works) copies its progress into a small module-level task
record that the preferences draw, and does the finishing work on Blender's main thread.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Callable

import bpy
from bpy.props import StringProperty

from .. import runtime
from ..vggt_blender import runtime_setup
from ..vggt_blender.errors import VGGTError
from .reconstruct import one_line


@dataclass
class TaskState:
    running: bool = False
    label: str = ""
    fraction: float = 0.0
    message: str = ""
    error: str = ""
    log_path: str = ""
    cancel_requested: bool = False


TASKS: dict[str, TaskState] = {"install": TaskState(), "download": TaskState()}
# The timer function of each task in progress (to remove it when the add-on is disabled).
_TIMERS: dict[str, Callable[[], float | None]] = {}
_POLL_SECONDS = 0.25


def draw_task(layout: bpy.types.UILayout, name: str) -> None:
    """Progress (or the last error) of a background task, drawn inside the preferences."""
    task = TASKS[name]
    if task.running:
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


def run_task(name: str, work: Callable[[], None], finish: Callable[[], None]) -> None:
    """Run `work()` on a thread; when it ends, `finish()` runs on Blender's main thread.

    Headless (scripts, tests) this blocks until both are done; with a UI a timer polls the thread.
    """
    thread = threading.Thread(target=work, name=f"vggt-{name}", daemon=True)
    thread.start()
    if bpy.app.background:
        thread.join()
        finish()
        return
    tick = task_timer(name, thread, finish)
    _TIMERS[name] = tick
    bpy.app.timers.register(tick, first_interval=_POLL_SECONDS)


def task_timer(name: str, thread: threading.Thread, finish: Callable[[], None]) -> Callable[[], float | None]:
    """The `bpy.app.timers` function that follows `thread`: redraws the progress while it runs, then calls
    `finish()` once and unregisters itself (returns None)."""
    def tick() -> float | None:
        runtime.tag_redraw_all()
        if thread.is_alive():
            return _POLL_SECONDS
        _TIMERS.pop(name, None)
        try:
            finish()
        finally:
            TASKS[name].running = False
            runtime.tag_redraw_all()
        return None

    return tick


def stop_tasks() -> None:
    """The add-on is being disabled: ask the threads to stop (pip is terminated, the download keeps its
    .part file) and remove the timers; nothing finishes in a UI that is gone."""
    for name, task in TASKS.items():
        if task.running:
            task.cancel_requested = True
            task.running = False
            task.message = "Stopped: the add-on was disabled"
    for tick in _TIMERS.values():
        if bpy.app.timers.is_registered(tick):
            bpy.app.timers.unregister(tick)
    _TIMERS.clear()
    runtime.stop_timers()


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
        if self.task in TASKS:
            TASKS[self.task].cancel_requested = True
        return {"FINISHED"}


class VGGT_OT_install_runtime(bpy.types.Operator):
    """Create a private Python environment and install torch, numpy, pillow and safetensors into it
    (downloads about 0.2 GB for the CPU build, several GB for the CUDA build)"""

    bl_idname = "vggt.install_runtime"
    bl_label = "Install Inference Runtime"

    @classmethod
    def poll(cls, context: bpy.types.Context) -> bool:
        return not TASKS["install"].running

    def execute(self, context: bpy.types.Context) -> set[str]:
        task = TASKS["install"]
        task.error = task.message = ""
        if not bpy.app.online_access:
            task.error = ("Online access is disabled: enable it in Preferences > System > Network, "
                          "or choose an existing Python with torch")
            self.report({"ERROR"}, task.error)
            return {"CANCELLED"}
        log_path = runtime.install_log_path()
        task.running, task.cancel_requested = True, False
        task.label, task.fraction, task.log_path = "Checking Python", 0.0, str(log_path)
        # Everything that can take seconds (running Python, nvidia-smi) happens on the task's thread.
        args = (runtime_setup.blender_python(), runtime.runtime_venv_dir(), log_path,
                runtime.env_without_blender_python())
        run_task("install", lambda: _install_work(*args), _install_finish)
        if bpy.app.background and task.error:
            self.report({"ERROR"}, task.error)
            return {"CANCELLED"}
        return {"FINISHED"}


def _install_work(base_python: str, venv_dir, log_path, env: dict[str, str]) -> None:
    """On the task thread: check Blender's Python, pick the torch build, run the pip steps."""
    task = TASKS["install"]
    try:
        runtime_setup.check_python_version(base_python)
        task.label = "Looking for an NVIDIA GPU"
        index_url = runtime_setup.torch_index_url()
        steps = runtime_setup.install_commands(base_python, venv_dir, index_url)
        job = runtime_setup.CommandSequence(steps, log_path, env=env)
        job.start()
    except VGGTError as exc:
        task.error = one_line(exc)
        return
    except Exception as exc:  # e.g. the log folder cannot be written: say so instead of "installed"
        task.error = one_line(f"cannot start the installation: {type(exc).__name__}: {exc}")
        return
    cancel_sent = False
    while not job.done:
        if task.cancel_requested and not cancel_sent:
            job.cancel()
            cancel_sent = True
        task.label, task.fraction, task.message = job.label, job.fraction, job.last_line
        time.sleep(0.1)
    task.label, task.fraction, task.message = job.label, job.fraction, job.last_line
    if job.returncode == 0:
        task.message = "Runtime installed"
    elif task.cancel_requested:
        task.message, task.error = "", "Installation cancelled"
    else:
        task.error = one_line(job.error or f"installation failed (exit code {job.returncode})")
        task.error += f" (log: {job.log_path})"


def _install_finish() -> None:
    """On the main thread: the new runtime's status is probed (the panel shows it)."""
    TASKS["install"].running = False
    if not TASKS["install"].error:
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
        return not TASKS["download"].running

    def _offline(self) -> bool:
        if bpy.app.online_access:
            return False
        TASKS["download"].error = ("Online access is disabled: enable it in Preferences > System > Network, "
                                   "or download the weights yourself and set their path")
        self.report({"ERROR"}, TASKS["download"].error)
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
        task = TASKS["download"]
        task.running, task.cancel_requested, task.error, task.message = True, False, "", ""
        task.label, task.fraction, task.log_path = f"Downloading {info['name']}", 0.0, ""
        result: dict = {}
        token = prefs.hf_token.strip() or None
        run_task("download", lambda: _download_work(info, token, result), lambda: _download_finish(result))
        if bpy.app.background:
            if task.error:
                self.report({"ERROR"}, task.error)
                return {"CANCELLED"}
            self.report({"INFO"}, task.message)
        return {"FINISHED"}


def _download_work(info: dict, token: str | None, result: dict) -> None:
    # The shared downloader: keeps a finished file, checks the gated token, resumes the .part file.
    from ..vggt_blender.weights.download import download_named_checkpoint

    task = TASKS["download"]

    def progress(fraction: float, message: str) -> None:
        task.fraction, task.message = fraction, message

    try:
        # Cancel keeps the .part file: the next download resumes where this one stopped.
        result["path"] = str(download_named_checkpoint(
            info["name"], info["dest"], token=token, progress=progress,
            should_cancel=lambda: task.cancel_requested, url=info["url"], token_hint=BLENDER_TOKEN_HINT))
    except VGGTError as exc:
        if getattr(exc, "code", "") == "cancelled" or task.cancel_requested:
            result["error"] = "Download cancelled (it resumes where it stopped next time)"
        else:
            result["error"] = one_line(exc)
    except Exception as exc:  # network errors the downloader did not translate
        result["error"] = one_line(f"{info['url']}: download failed ({type(exc).__name__}: {exc})")


def _download_finish(result: dict) -> None:
    """On the main thread: point the preferences at the new file and re-check the runtime status."""
    task = TASKS["download"]
    task.running = False
    if "path" not in result:
        task.error = result.get("error", "download failed")
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
    pass


def unregister() -> None:
    stop_tasks()
