"""Blender-side runtime discovery: where the inference runtime and per-user files live, and its cached status.

The model never runs inside Blender: a separate Python with torch (installed privately by the add-on, or one
the user points to) runs `python -m vggt_blender.jobs.worker`. This module finds that Python and remembers what a
small probe subprocess reported about it (torch version, GPU, weights), without blocking the UI.
"""

from __future__ import annotations

import os
import tempfile
import threading  # the status cache is written by the probe task's thread
from pathlib import Path
from typing import Any

import bpy

from .vggt_blender import runtime_setup

# Installed as an extension this is "bl_ext.<repo>.vggt_blender": the key of our AddonPreferences.
ADDON_PACKAGE = __package__


def extension_root() -> Path:
    """The folder holding this extension; the worker gets it on PYTHONPATH to import `vggt_blender`."""
    return Path(__file__).resolve().parent


def get_prefs(context: bpy.types.Context | None = None):
    context = context or bpy.context
    addon = context.preferences.addons.get(ADDON_PACKAGE)
    return addon.preferences if addon is not None else None


def user_dir(sub: str) -> Path:
    """A per-user folder for this extension (never inside the add-on folder)."""
    try:
        return Path(bpy.utils.extension_path_user(ADDON_PACKAGE, path=sub, create=True))
    except (ValueError, AttributeError):
        # Not loaded as an extension (e.g. imported under a temporary name by tests).
        path = Path(tempfile.gettempdir()) / "vggt_blender" / sub
        path.mkdir(parents=True, exist_ok=True)
        return path


def runtime_venv_dir() -> Path:
    return user_dir("runtime") / "venv"


def install_log_path() -> Path:
    return user_dir("runtime") / "install.log"


def installed_runtime_python() -> Path:
    return runtime_setup.venv_python(runtime_venv_dir())


def runtime_python(prefs=None) -> str | None:
    """The Python that runs the worker: the user's path, or the private runtime when it exists."""
    prefs = prefs if prefs is not None else get_prefs()
    if prefs is not None and prefs.runtime_source == "CUSTOM":
        path = bpy.path.abspath(prefs.python_path).strip()
        return path or None
    python = installed_runtime_python()
    return str(python) if python.is_file() else None


def uses_server(prefs=None) -> bool:
    """True when the preferences send jobs to a reconstruction server (no local runtime needed)."""
    prefs = prefs if prefs is not None else get_prefs()
    return prefs is not None and getattr(prefs, "inference_source", "LOCAL") == "SERVER"


def weights_argument(prefs=None) -> str | None:
    prefs = prefs if prefs is not None else get_prefs()
    if prefs is None or not prefs.weights_path.strip():
        return None
    return bpy.path.abspath(prefs.weights_path.strip())


def selected_model(prefs=None) -> str | None:
    """The registry model a reconstruction asks for: the preference's choice, or None when a weights file is
    set (the worker then recognises the family from the file's keys)."""
    prefs = prefs if prefs is not None else get_prefs()
    if prefs is None:
        return None
    if prefs.weights_path.strip():
        return None
    return prefs.checkpoint


def selected_model_label(prefs=None) -> str:
    """What the panel shows as the model: the choice's label, or the weights file's name."""
    from .vggt_blender.options import CHECKPOINT_ITEMS, DEFAULT_CHECKPOINT

    prefs = prefs if prefs is not None else get_prefs()
    labels = {value: label for value, label, _ in CHECKPOINT_ITEMS}
    if prefs is None:
        return labels[DEFAULT_CHECKPOINT]
    if prefs.weights_path.strip():
        return f"{Path(prefs.weights_path.strip()).name} (family from the file)"
    return labels.get(prefs.checkpoint, prefs.checkpoint)


def selected_family(prefs=None) -> str | None:
    """"vggt" / "vggt-omega" for the chosen registry model; None when a weights file decides."""
    from .vggt_blender.weights.registry import CHECKPOINTS

    name = selected_model(prefs)
    if name is None:
        return None if (prefs if prefs is not None else get_prefs()) is not None else "vggt"
    entry = CHECKPOINTS.get(name)
    return entry.family if entry else None


# ---- cached status of the runtime (probe runs in a thread; the UI only reads the cache) ----

_status_lock = threading.Lock()
_status: dict[str, Any] = {"key": None, "info": None, "running": False}


def _status_key(prefs) -> tuple:
    checkpoint = prefs.checkpoint if prefs is not None else "vggt-1b"
    return (runtime_python(prefs), weights_argument(prefs), checkpoint)


def status_info() -> dict[str, Any] | None:
    with _status_lock:
        return _status["info"]


def status_running() -> bool:
    with _status_lock:
        return bool(_status["running"])


def status_line(prefs=None) -> str:
    """One line for the preferences and the panel."""
    prefs = prefs if prefs is not None else get_prefs()
    python = runtime_python(prefs)
    if python is None:
        return "No inference runtime: install it or choose a Python with torch"
    with _status_lock:
        key, info, running = _status["key"], _status["info"], _status["running"]
    if running:
        return "Checking the runtime…"
    if info is None or key != _status_key(prefs):
        return "Runtime not checked yet (press Check)"
    return runtime_setup.probe_summary(info)


def current_status_info(prefs=None) -> dict[str, Any] | None:
    """The probe result, only if it was made for the current preferences (same Python, weights, checkpoint)."""
    prefs = prefs if prefs is not None else get_prefs()
    with _status_lock:
        key, info = _status["key"], _status["info"]
    return info if info is not None and key == _status_key(prefs) else None


def refresh_status(prefs=None, wait: bool = False) -> None:
    """Probe the runtime in the background (a torch import takes seconds): a task of the registry whose
    result lands in the cache; `wait` blocks until it is there (headless callers)."""
    from . import tasks

    prefs = prefs if prefs is not None else get_prefs()
    key = _status_key(prefs)
    python, weights, checkpoint = key
    with _status_lock:
        if _status["running"]:
            return
        _status["running"] = True

    def work(_task) -> None:
        try:
            info = (runtime_setup.probe_runtime(python, extension_root(), weights, checkpoint)
                    if python else {"error": "No inference runtime"})
        except Exception as exc:  # noqa: BLE001 - the status line says it, the UI keeps working
            info = {"error": f"the runtime check failed: {type(exc).__name__}: {exc}"}
        with _status_lock:
            _status.update(key=key, info=info, running=False)

    task = tasks.ThreadTask(work, name="probe", label="Checking the runtime")
    tasks.start(task)
    if wait:
        task.join()
        tasks.run_blocking(task)


def clear_status() -> None:
    with _status_lock:
        _status.update(key=None, info=None)


def tag_redraw_all() -> None:
    """Redraw the preferences and the sidebars of 3D views so progress shows (no-op headless).

    Only the sidebar region of a 3D view: redrawing the whole viewport would redraw millions of points.
    """
    wm = bpy.context.window_manager
    if wm is None:
        return
    for window in wm.windows:
        for area in window.screen.areas:
            if area.type == "PREFERENCES":
                area.tag_redraw()
            elif area.type == "VIEW_3D":
                for region in area.regions:
                    if region.type == "UI":
                        region.tag_redraw()


def clear_status_text() -> None:
    """Remove our text from the status bar of every window (the run ended or was dropped)."""
    wm = bpy.context.window_manager
    if wm is None:
        return
    for window in wm.windows:
        workspace = window.workspace
        if workspace is None:
            continue
        try:
            # status_text_set acts on the context's window: give it each window in turn.
            with bpy.context.temp_override(window=window):
                workspace.status_text_set(None)
        except (RuntimeError, TypeError, AttributeError):
            pass


def default_output_dir() -> Path:
    """Reconstructions go beside the .blend (`//vggt/`), or, for an unsaved file, into a folder that
    uninstalling the extension keeps; saving the file moves them beside it (scene/project_files.py)."""
    from .scene.project_files import reconstruction_output_dir

    return reconstruction_output_dir()


def env_without_blender_python() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("PYTHONHOME", None)
    return env
