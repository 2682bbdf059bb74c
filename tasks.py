"""The extension's background tasks: one registry, polled by one `bpy.app.timers` callback on the main thread.

A task (a reconstruction, the runtime install, the weights download, the runtime probe) says how far it is
(`label`, `fraction`, `message`), advances in `poll()` without blocking, stops on `cancel()`, and does its
main-thread work once in `finish()`. The timer is not tied to a window: closing the Preferences window does not
stop an install. Headless (scripts, tests) nothing drives timers: `run_blocking()` and `step()` do the ticks.
"""

from __future__ import annotations

import atexit
import threading
import time
from typing import Callable

import bpy

POLL_SECONDS = 0.1
# Quitting waits this long for the extension's threads (all named "vggt-..."): a thread still running while
# Blender frees itself crashes (bpy 4.2: segfault) or hangs (bpy 4.5) the exit.
EXIT_JOIN_SECONDS = 5.0
THREAD_PREFIX = "vggt-"


def one_line(text: object, limit: int = 300) -> str:
    """A message fit for a status bar: one line, no traceback text (of a traceback, its last line)."""
    text = str(text)
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    if "Traceback (most recent call last)" in text:
        lines = [ln for ln in lines if not ln.startswith(("Traceback", "File \"", "^"))][-1:]
    return " ".join(lines[:1]).strip()[:limit] or "unknown error"


class Task:
    """Base class. Subclasses implement `poll()` (True once over) and may override `cancel()`/`finish()`."""

    name = "task"
    cancel_on_load = False  # opening another .blend file stops it (its result would land in another file)

    def __init__(self) -> None:
        self.label = ""
        self.fraction = 0.0
        self.message = ""
        self.error = ""  # one line for the user
        self.error_code = ""  # the VGGTError code behind `error` (never recovered from the text)
        self.log_path = ""
        self.cancelled = False
        self.over = False  # poll() said so; finish() has not necessarily run
        self.finished = False  # finish() ran (or the task was dropped)
        self.owner = None  # a modal operator that finishes the task itself (for its undo step and reports)
        self.on_finish: list[Callable[["Task"], None]] = []

    def poll(self) -> bool:
        raise NotImplementedError

    def cancel(self) -> None:
        self.cancelled = True

    def finish(self) -> None:
        """Main-thread work once the task is over (build the scene, point the preferences at a file)."""

    @property
    def running(self) -> bool:
        return not self.over


class ThreadTask(Task):
    """`work()` on a thread, then `finish()` on the main thread. `work` reads `self.cancelled` to stop."""

    def __init__(self, work: Callable[["ThreadTask"], None], finish: Callable[["ThreadTask"], None] | None = None,
                 name: str = "task", label: str = "") -> None:
        super().__init__()
        self.name = name
        self.label = label
        self._work = work
        self._finish = finish
        self._thread = threading.Thread(target=self._run, name=f"{THREAD_PREFIX}{name}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self._work(self)
        except Exception as exc:  # noqa: BLE001 - a bug in the work: one line, never a dead task
            self.error = one_line(f"{type(exc).__name__}: {exc}")

    def poll(self) -> bool:
        return not self._thread.is_alive()

    def join(self, timeout: float | None = None) -> None:
        self._thread.join(timeout)

    def finish(self) -> None:
        if self._finish is not None:
            self._finish(self)


_TASKS: dict[str, Task] = {}


def get(name: str) -> Task | None:
    return _TASKS.get(name)


def running(name: str) -> bool:
    task = _TASKS.get(name)
    return task is not None and not task.over


def last(name: str) -> Task | None:
    """The running task of that name, or the last one that ended (the preferences show its outcome)."""
    return _TASKS.get(name) or _LAST.get(name)


_LAST: dict[str, Task] = {}


def start(task: Task) -> Task:
    """Register a started task (one per name: a second one of the same name is refused) and make sure the
    timer runs (with a UI)."""
    if running(task.name):
        raise RuntimeError(f"a {task.name} task is already running")
    _TASKS[task.name] = task
    if not bpy.app.background and not bpy.app.timers.is_registered(_tick):
        bpy.app.timers.register(_tick, first_interval=POLL_SECONDS, persistent=True)
    return task


def conclude(task: Task) -> None:
    """Finish an over task once, on the main thread, and drop it from the registry."""
    if task.finished:
        return
    task.finished = True
    if _TASKS.get(task.name) is task:
        del _TASKS[task.name]
    _LAST[task.name] = task
    if not task.cancelled:
        try:
            task.finish()
        except Exception as exc:  # noqa: BLE001 - keep Blender alive; the task says what went wrong
            task.error = one_line(f"{type(exc).__name__}: {exc}")
    for callback in task.on_finish:
        callback(task)


def step() -> bool:
    """One tick: poll every task, conclude those that are over (unless their modal operator does it).
    True while tasks remain."""
    from . import runtime

    for task in list(_TASKS.values()):
        if not task.over:
            try:
                task.over = bool(task.poll())
            except Exception as exc:  # noqa: BLE001 - a bug in a task: it ends with one line, Blender lives
                task.error = one_line(f"{type(exc).__name__}: {exc}")
                task.over = True
        if task.over and task.owner is None:
            conclude(task)
    runtime.tag_redraw_all()
    return bool(_TASKS)


def _tick() -> float | None:
    return POLL_SECONDS if step() else None


def run_blocking(task: Task, interval: float = 0.05, timeout: float | None = None) -> Task:
    """Headless: tick until `task` is over, then conclude it (scripts, tests, background mode)."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while not task.finished:
        step()
        if task.over and not task.finished:
            conclude(task)
        if task.finished:
            break
        if deadline is not None and time.monotonic() > deadline:
            cancel(task.name)
            break
        time.sleep(interval)
    return task


def note(name: str, error: str = "", message: str = "") -> Task:
    """An outcome without a task (refused before it started, e.g. offline): shown where its outcome would be."""
    task = Task()
    task.name, task.error, task.message = name, error, message
    task.over = task.finished = True
    _LAST[name] = task
    return task


def request_cancel(name: str) -> None:
    """Ask a task to stop (the ✕ button); it stays registered until it has stopped, then ends as cancelled."""
    task = _TASKS.get(name)
    if task is not None and not task.over:
        task.cancel()


def cancel(name: str, message: str = "Cancelled") -> Task | None:
    """Stop a task now; nothing of it finishes. Returns it (or None)."""
    task = _TASKS.pop(name, None)
    if task is None:
        return None
    task.cancel()
    task.cancelled = True
    task.over = task.finished = True
    task.message = message
    _LAST[name] = task
    for callback in task.on_finish:
        callback(task)
    return task


def cancel_where(predicate: Callable[[Task], bool], message: str) -> None:
    for name, task in list(_TASKS.items()):
        if predicate(task):
            cancel(name, message)


def stop_all(message: str = "Stopped: the add-on was disabled") -> None:
    """The add-on is being disabled: cancel every task and remove the timer (nothing finishes in a UI that is
    going away)."""
    cancel_where(lambda _task: True, message)
    if bpy.app.timers.is_registered(_tick):
        bpy.app.timers.unregister(_tick)
    _LAST.clear()


def join_threads(timeout: float) -> list[str]:
    """Wait for the extension's threads (tasks told to stop, job readers, worker reapers), `timeout` seconds in
    all. Returns the names of those still running."""
    deadline = time.monotonic() + timeout
    me = threading.current_thread()
    ours = [t for t in threading.enumerate() if t.name.startswith(THREAD_PREFIX) and t is not me]
    for thread in ours:
        thread.join(max(0.0, deadline - time.monotonic()))
    return [thread.name for thread in ours if thread.is_alive()]


_EXIT_STEPS: list[Callable[[], None]] = []


def on_exit(step: Callable[[], None]) -> None:
    """Run `step` when Blender quits or the add-on is disabled, after the tasks are cancelled and before their
    threads are waited for (e.g. end the kept worker, so its reader threads end too)."""
    if step not in _EXIT_STEPS:
        _EXIT_STEPS.append(step)


def _run_exit_steps() -> None:
    for step in _EXIT_STEPS:
        try:
            step()
        except Exception:  # noqa: BLE001 - quitting goes on whatever one step says
            pass


def _at_exit() -> None:
    """Blender (or a script using bpy) is quitting: stop everything of ours and let its threads end first."""
    cancel_where(lambda _task: True, "Stopped: Blender is quitting")
    _run_exit_steps()
    join_threads(EXIT_JOIN_SECONDS)


@bpy.app.handlers.persistent
def _cancel_on_load(*_args) -> None:
    """load_pre: opening another file stops the tasks whose result belongs to the current one."""
    cancel_where(lambda task: task.cancel_on_load, "Cancelled: another file was opened")


def register() -> None:
    # atexit runs last-registered first, so this runs before bpy's own exit handler frees Blender.
    atexit.unregister(_at_exit)  # once, however often the add-on is enabled
    atexit.register(_at_exit)
    if _cancel_on_load not in bpy.app.handlers.load_pre:
        bpy.app.handlers.load_pre.append(_cancel_on_load)


def unregister() -> None:
    stop_all()
    _run_exit_steps()  # before the wait: the kept worker's reader threads end with the worker
    _EXIT_STEPS.clear()
    # A thread that outlives a short wait keeps the exit hook, so quitting later still waits for it.
    if not join_threads(1.0):
        atexit.unregister(_at_exit)
    # Compare by name too: a reloaded module has a new function object.
    for handler in list(bpy.app.handlers.load_pre):
        same = (getattr(handler, "__name__", "") == _cancel_on_load.__name__
                and getattr(handler, "__module__", "") == __name__)
        if handler is _cancel_on_load or same:
            bpy.app.handlers.load_pre.remove(handler)
