"""Runtime set-up operators: install the private inference runtime, check it, download the weights.

Long work (pip, a 5 GB download) runs in a background thread or subprocess; a modal timer copies its progress
into a small module-level task record that the preferences draw, so Blender stays responsive.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import bpy
from bpy.props import StringProperty

from .. import runtime
from ..vggt_blender import runtime_setup
from ..vggt_blender.errors import VGGTError


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


def _one_line(text: str) -> str:
    return " ".join(str(text).split())[:300]


def _poll_modally(operator: bpy.types.Operator, context: bpy.types.Context) -> set[str]:
    """Run `operator.modal()` four times a second while its background task works."""
    wm = context.window_manager
    operator._timer = wm.event_timer_add(0.25, window=context.window)
    wm.modal_handler_add(operator)
    return {"RUNNING_MODAL"}


def _task_event(name: str, event: bpy.types.Event) -> bool:
    """ESC asks the task to stop; True for the events that advance a modal task (timer ticks and ESC)."""
    if event.type == "ESC":
        TASKS[name].cancel_requested = True
    return event.type in {"TIMER", "ESC"}


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

    _timer = None
    _job: runtime_setup.CommandSequence | None = None

    @classmethod
    def poll(cls, context: bpy.types.Context) -> bool:
        return not TASKS["install"].running

    def _start(self, context: bpy.types.Context) -> bool:
        task = TASKS["install"]
        task.error = task.message = ""
        if not bpy.app.online_access:
            task.error = ("Online access is disabled: enable it in Preferences > System > Network, "
                          "or choose an existing Python with torch")
            self.report({"ERROR"}, task.error)
            return False
        base_python = runtime_setup.blender_python()
        try:
            runtime_setup.check_python_version(base_python)
        except VGGTError as exc:
            task.error = str(exc)
            self.report({"ERROR"}, task.error)
            return False
        index_url = runtime_setup.torch_index_url()
        steps = runtime_setup.install_commands(base_python, runtime.runtime_venv_dir(), index_url)
        log_path = runtime.install_log_path()
        self._job = runtime_setup.CommandSequence(steps, log_path, env=runtime.env_without_blender_python())
        self._job.start()
        task.running, task.cancel_requested = True, False
        task.label, task.fraction, task.log_path = steps[0][0], 0.0, str(log_path)
        return True

    def _update(self) -> bool:
        """Copy progress into the task record; True when the job has ended."""
        task, job = TASKS["install"], self._job
        if task.cancel_requested and not job.done:
            job.cancel()
        task.label, task.fraction, task.message = job.label, job.fraction, job.last_line
        if not job.done:
            return False
        task.running = False
        if job.returncode == 0:
            task.message = "Runtime installed"
            task.error = ""
            runtime.clear_status()
            runtime.refresh_status(wait=bpy.app.background)
        else:
            task.error = _one_line(job.error or f"installation failed (exit code {job.returncode})")
            task.error += f" (log: {job.log_path})"
        return True

    def invoke(self, context: bpy.types.Context, event: bpy.types.Event) -> set[str]:
        if not self._start(context):
            return {"CANCELLED"}
        return _poll_modally(self, context)

    def modal(self, context: bpy.types.Context, event: bpy.types.Event) -> set[str]:
        if not _task_event("install", event):
            return {"PASS_THROUGH"}
        ended = self._update()
        runtime.tag_redraw_all()
        if not ended:
            return {"RUNNING_MODAL"}
        context.window_manager.event_timer_remove(self._timer)
        task = TASKS["install"]
        if task.error:
            self.report({"ERROR"}, task.error)
            return {"CANCELLED"}
        self.report({"INFO"}, "VGGT inference runtime installed")
        return {"FINISHED"}

    def execute(self, context: bpy.types.Context) -> set[str]:
        # Blocking variant for scripts.
        if not self._start(context):
            return {"CANCELLED"}
        self._job.wait()
        self._update()
        if TASKS["install"].error:
            self.report({"ERROR"}, TASKS["install"].error)
            return {"CANCELLED"}
        return {"FINISHED"}


# ---- weights download ----

# How the shared downloader tells a Blender user to give a token for a gated checkpoint.
BLENDER_TOKEN_HINT = "in these add-on preferences (Hugging Face Token) or as HF_TOKEN"


def checkpoint_info(name: str) -> dict:
    """The registry entry as plain values for the confirm dialog and the download."""
    from ..vggt_blender.checkpoints import get_checkpoint
    from ..vggt_blender.weights import default_weights_path  # torch-free: imports torch only to load

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

    _timer = None
    _thread: threading.Thread | None = None
    _result: dict | None = None

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
            self.report({"ERROR"}, f"Unknown checkpoint: {_one_line(exc)}")
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
        self._result = {}
        self._thread = threading.Thread(
            target=self._work, args=(info, prefs.hf_token.strip() or None, self._result), daemon=True)
        self._thread.start()
        if bpy.app.background:
            self._thread.join()
            return self._finish(context)
        return _poll_modally(self, context)

    @staticmethod
    def _work(info: dict, token: str | None, result: dict) -> None:
        # The shared downloader: keeps a finished file, checks the gated token, resumes the .part file.
        from ..vggt_blender.download import download_named_checkpoint

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
                result["error"] = _one_line(exc)
        except Exception as exc:  # network errors the downloader did not translate
            result["error"] = _one_line(f"{info['url']}: download failed ({type(exc).__name__}: {exc})")

    def _finish(self, context: bpy.types.Context) -> set[str]:
        task = TASKS["download"]
        task.running = False
        if "path" in self._result:
            prefs = runtime.get_prefs(context)
            prefs.weights_path = self._result["path"]
            task.message = f"Weights saved to {self._result['path']}"
            runtime.clear_status()
            self.report({"INFO"}, task.message)
            return {"FINISHED"}
        task.error = self._result.get("error", "download failed")
        self.report({"ERROR"}, task.error)
        return {"CANCELLED"}

    def modal(self, context: bpy.types.Context, event: bpy.types.Event) -> set[str]:
        if not _task_event("download", event):
            return {"PASS_THROUGH"}
        runtime.tag_redraw_all()
        if self._thread.is_alive():
            return {"RUNNING_MODAL"}
        context.window_manager.event_timer_remove(self._timer)
        return self._finish(context)


classes = (
    VGGT_OT_check_runtime,
    VGGT_OT_cancel_runtime_task,
    VGGT_OT_install_runtime,
    VGGT_OT_download_weights,
)
