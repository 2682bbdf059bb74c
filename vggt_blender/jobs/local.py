"""`LocalJob`: the `Job` interface (jobs/interface.py) run by a worker subprocess on this machine (stdlib only).

    job = LocalJob(python_exe, request, log_path, keep_alive=True)
    job.start()          # checks the Python and the weights first: a missing one fails the job with its code
    job.poll()           # new messages; job.state / job.progress / job.error_code follow them
    job.cancel()         # a {"type": "cancel"} line; SIGTERM after `cancel_timeout`, a kill after `kill_timeout`
    job.fetch(folder)    # the files the worker reported in its result message

With `keep_alive` the job runs on the one shared worker process (`shared_worker()`), which stays alive between
jobs with its model loaded; `close_shared_worker()` ends it. Without, each job has a process of its own.
"""

from __future__ import annotations

import json
import os
import queue
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO, Any

from . import protocol
from .interface import Job
from ..io.atomic import own_temp_prefix  # stdlib only: this client stays import-light
from ..io.output_paths import display_folder_for, run_marker
from ..runtime_setup import RuntimeSetupError

# The folder that holds the `vggt_blender` package (the extension folder): put on the worker's PYTHONPATH.
PACKAGE_PARENT = str(Path(__file__).resolve().parents[2])
# No console window for the worker on Windows (runtime_setup uses the same flags).
NO_WINDOW_FLAGS = getattr(subprocess, "CREATE_NO_WINDOW", 0) if sys.platform == "win32" else 0
_FINAL = (protocol.RESULT, protocol.ERROR)


def worker_environment(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    # Blender's own Python settings must not leak into the runtime Python.
    env.pop("PYTHONHOME", None)
    existing = env.get("PYTHONPATH")
    env["PYTHONPATH"] = PACKAGE_PARENT + (os.pathsep + existing if existing else "")
    env["PYTHONUNBUFFERED"] = "1"
    env["PYTHONIOENCODING"] = "utf-8"
    env.update(extra or {})
    return env


class WorkerProcess:
    """One `python -m vggt_blender.jobs.worker --cancel-on-eof` process. Its stdout lines become protocol
    messages on `messages` (a line that is not one becomes a `log` message); stdout and stderr are copied to
    the log of the job it currently serves. stdin stays open: its end (Blender gone) cancels the run."""

    def __init__(self, python_exe: str, env: dict[str, str]) -> None:
        self.python_exe = python_exe
        self.env = env
        self.messages: queue.Queue[dict] = queue.Queue()
        self._log: IO[str] | None = None
        self._log_lock = threading.Lock()
        self._send_lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self.busy = False
        self.on_final: Any = None  # called with a result or error line, on the reader thread
        kwargs: dict[str, Any] = {"creationflags": NO_WINDOW_FLAGS} if NO_WINDOW_FLAGS else {}
        self.process = subprocess.Popen([python_exe, "-m", "vggt_blender.jobs.worker", "--cancel-on-eof"],
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                        env=env, **kwargs)
        for target, stream in ((self._read_stdout, self.process.stdout), (self._read_stderr, self.process.stderr)):
            thread = threading.Thread(target=target, args=(stream,), daemon=True, name="vggt-worker-reader")
            thread.start()
            self._threads.append(thread)

    # ---- the log of the job being served ----

    def attach_log(self, log: IO[str] | None) -> None:
        with self._log_lock:
            self._log = log

    def write_log(self, text: str) -> None:
        with self._log_lock:
            if self._log is not None and not self._log.closed:
                self._log.write(text)
                self._log.flush()

    # ---- streams ----

    def _read_stdout(self, stream: IO[bytes]) -> None:
        for raw in iter(stream.readline, b""):
            self.write_log(raw.decode("utf-8", errors="replace").rstrip("\r\n") + "\n")
            if raw.strip():
                message = protocol.decode_event(raw)
                self.messages.put(message)
                callback = self.on_final
                if message.get("type") in _FINAL and callback is not None:
                    callback(message)
        stream.close()

    def _read_stderr(self, stream: IO[bytes]) -> None:
        for raw in iter(stream.readline, b""):
            self.write_log("[stderr] " + raw.decode("utf-8", errors="replace").rstrip("\r\n") + "\n")
        stream.close()

    def send(self, message: dict) -> bool:
        """One line on the worker's stdin; False when it can no longer be written (the worker has exited)."""
        with self._send_lock:
            try:
                self.process.stdin.write(protocol.encode(message).encode("ascii"))
                self.process.stdin.flush()
                return True
            except (OSError, ValueError):
                return False

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    @property
    def drained(self) -> bool:
        """Exited, and every line it wrote has been read."""
        return not self.alive and all(not t.is_alive() for t in self._threads)

    def join(self, timeout: float | None = None) -> int | None:
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            return None
        for thread in self._threads:
            thread.join(timeout)
        return self.process.returncode

    def close_stdin(self) -> None:
        with self._send_lock:
            try:
                self.process.stdin.close()
            except OSError:
                pass

    def stop(self) -> None:
        """SIGTERM on POSIX (the worker cancels cleanly); on Windows, where terminate() is a hard kill, the end
        of stdin does the same through --cancel-on-eof."""
        try:
            if sys.platform == "win32":
                self.close_stdin()
            else:
                self.process.terminate()
        except OSError:
            pass

    def kill(self) -> None:
        try:
            self.process.kill()
        except OSError:
            pass


# ---- the one shared keep-alive worker ---------------------------------------------------------------------

_shared_lock = threading.Lock()
_shared: dict[str, Any] = {"process": None, "key": None}


def shared_worker(python_exe: str, env: dict[str, str]) -> WorkerProcess:
    """The idle keep-alive worker for this Python and environment, started if there is none (a worker for
    another Python or environment is ended first: it cannot serve this request)."""
    key = (python_exe, tuple(sorted(env.items())))
    with _shared_lock:
        process: WorkerProcess | None = _shared["process"]
        if process is not None and process.alive and _shared["key"] == key and not process.busy:
            return process
        if process is not None and process.alive and process.busy:
            return WorkerProcess(python_exe, env)  # the shared one is serving another job: one of its own
        if process is not None:
            _end_later(process)
        process = WorkerProcess(python_exe, env)
        _shared.update(process=process, key=key)
        return process


def _forget_shared(process: WorkerProcess) -> None:
    with _shared_lock:
        if _shared["process"] is process:
            _shared.update(process=None, key=None)


def close_shared_worker(timeout: float = 5.0) -> None:
    """End the keep-alive worker (the add-on is disabled): its stdin closes, which ends the session (and cancels
    a running request); it is killed if it has not exited after `timeout`. Returns at once."""
    with _shared_lock:
        process = _shared["process"]
        _shared.update(process=None, key=None)
    if process is not None:
        _end_later(process, timeout)


def _end_later(process: WorkerProcess, timeout: float = 5.0) -> None:
    process.close_stdin()

    def reap() -> None:
        if process.join(timeout) is None:
            process.kill()
            process.join(timeout)

    threading.Thread(target=reap, daemon=True, name="vggt-worker-reaper").start()


# ---- the job --------------------------------------------------------------------------------------------

class LocalJob(Job):
    """One request run by a worker subprocess. `env`: extra variables for the worker; `caller` words a
    missing-weights error ("cli" or "blender"); `keep_alive`: run on the shared worker (model kept loaded)."""

    def __init__(self, python_exe: str | os.PathLike[str] | None, request: dict, log_path: str | os.PathLike[str],
                 env: dict[str, str] | None = None, *, keep_alive: bool = False, caller: str = "cli",
                 cancel_timeout: float = 5.0, kill_timeout: float = 5.0) -> None:
        super().__init__(request)
        self.python_exe = str(python_exe) if python_exe else None
        self.log_path = Path(log_path)
        self.extra_env = dict(env or {})
        self.keep_alive = keep_alive
        self.caller = caller
        self.cancel_timeout = cancel_timeout
        self.kill_timeout = kill_timeout
        self.worker: WorkerProcess | None = None
        self.cleaned_up: list[str] = []
        self._log: IO[str] | None = None
        self._final_seen = threading.Event()  # the worker wrote this job's result or error line
        self._final_taken = False  # poll() has returned it (what follows belongs to the next job)
        self._escalator: threading.Thread | None = None
        self._released = threading.Event()
        self._before: set[str] = set()
        self._watcher: threading.Thread | None = None

    # ---- Job ----

    def _begin(self) -> None:
        self._check_runtime()
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "w", encoding="utf-8")
        self._log.write(f"# {time.strftime('%Y-%m-%d %H:%M:%S')} request: {json.dumps(self.request)}\n")
        self._log.flush()
        self._note_output_folder()
        request = dict(self.request, keep_alive=self.keep_alive)
        env = worker_environment(self.extra_env)
        try:
            self.worker = shared_worker(self.python_exe, env) if self.keep_alive else \
                WorkerProcess(self.python_exe, env)
        except OSError as exc:
            self._close_log(f"# cannot start {self.python_exe}: {exc}\n")
            raise RuntimeSetupError(f"{self.python_exe}: cannot start the inference runtime ({exc.strerror or exc})",
                                    file=self.python_exe) from None
        self.worker.busy = True
        self.worker.on_final = self._on_final
        self.worker.attach_log(self._log)
        self.worker.send(request)  # if the worker died at once, its stderr (in the log) says why
        self._watcher = threading.Thread(target=self._watch, daemon=True, name="vggt-job-watcher")
        self._watcher.start()

    def _check_runtime(self) -> None:
        """What a local run needs before a process starts: a Python, and the checkpoint it names."""
        if not self.python_exe:
            raise RuntimeSetupError("no inference runtime: install it, or choose a Python with torch")
        if not Path(self.python_exe).is_file():
            raise RuntimeSetupError(f"{self.python_exe}: the runtime Python does not exist", file=self.python_exe)
        # A refine request reads a reconstruction file: no model, so no checkpoint to find.
        if not self.request.get("download") and not protocol.is_refine_request(self.request):
            from ..weights.discovery import resolve_weights  # torch-free
            from ..weights.registry import DEFAULT_CHECKPOINT

            # The chosen model's checkpoint (and only its family's stand-ins), as the worker will look for it.
            resolve_weights(self.request.get("weights"), self.request.get("model") or DEFAULT_CHECKPOINT,
                            caller=self.caller)

    def _receive(self) -> list[dict]:
        out: list[dict] = []
        worker = self.worker
        if worker is None or self._final_taken:
            return out
        while True:
            try:
                message = worker.messages.get_nowait()
            except queue.Empty:
                break
            out.append(message)
            if message.get("type") in _FINAL:
                self._final_taken = True
                break  # in a keep-alive session, what follows belongs to the next job
        return out

    def _ended(self) -> tuple[str, str, str | None] | None:
        worker = self.worker
        if worker is None or not worker.drained or not worker.messages.empty():
            return None
        code = worker.process.returncode
        if code == protocol.EXIT_CANCELLED:
            return ("cancelled", "cancelled", None)
        return ("internal", f"the inference worker stopped unexpectedly (exit code {code})"
                if code else "the inference worker ended without a result", None)

    def _request_cancel(self) -> None:
        self._write_log("# cancel requested\n")
        worker = self.worker
        if worker is None:
            return
        worker.send(protocol.cancel())
        self._escalator = threading.Thread(target=self._escalate, args=(worker,), daemon=True,
                                           name="vggt-job-cancel")
        self._escalator.start()

    def _fetch(self, dest_folder: Path) -> list[Path]:
        files = [Path(f) for f in self.result.get("files") or [self.result["path"]]]
        home = Path(self.result["path"]).parent
        dest_folder.mkdir(parents=True, exist_ok=True)
        out = []
        for path in files:
            # A run's folder of copies keeps its place beside the file (`<stem>_images/<run id>`).
            target = dest_folder / (path.relative_to(home) if path.is_relative_to(home) else path.name)
            target.parent.mkdir(parents=True, exist_ok=True)
            if path.resolve() != target.resolve():
                # Note: a copied reconstruction file still names the upright copies where the worker wrote them.
                if path.is_dir():
                    shutil.copytree(path, target, dirs_exist_ok=True)
                else:
                    shutil.copy2(path, target)
            out.append(target)
        return out

    def _discard_result(self) -> None:
        remove_paths([Path(f) for f in self.result.get("files") or []])

    def _on_final(self, message: dict) -> None:
        """On the reader thread: the job's last line. A result that comes after a cancel is removed at once,
        whether or not anyone still polls this job (Blender drops a cancelled run)."""
        if self._cancel_requested and message.get("type") == protocol.RESULT:
            remove_paths([Path(f) for f in message.get("files") or []])
        self._final_seen.set()

    # ---- for scripts and tests ----

    @property
    def returncode(self) -> int | None:
        return None if self.worker is None else self.worker.process.poll()

    def join(self, timeout: float | None = None) -> bool:
        """Block until this job's part of the worker is over and its log closed (True), or `timeout`."""
        if self._watcher is None:
            return True
        self._watcher.join(timeout)
        return not self._watcher.is_alive()

    # ---- background ----

    def _watch(self) -> None:
        """Close the log when the job is over, even if nobody polls: at its final line (keep-alive) or when
        its own process has exited."""
        worker = self.worker
        assert worker is not None
        while not (self.keep_alive and self._final_seen.is_set()):
            if worker.join(0.1) is not None:
                break
        self._release(worker)

    def _release(self, worker: WorkerProcess) -> None:
        if self._released.is_set():
            return
        escalator = self._escalator
        if not worker.alive and escalator is not None and escalator is not threading.current_thread():
            escalator.join()  # its clean-up after a kill goes into the log before it closes
        if not worker.alive:
            worker.join(5.0)
            self._close_log(f"# exit code {worker.process.returncode}\n")
            _forget_shared(worker)
        else:
            self._close_log("# request finished (the worker stays for the next one)\n")
        worker.attach_log(None)
        worker.on_final = None
        worker.busy = False
        self._released.set()

    def _escalate(self, worker: WorkerProcess) -> None:
        """After a cancel message: SIGTERM if nothing ended the job in time, then a kill and a clean-up."""
        deadline = time.monotonic() + self.cancel_timeout
        while time.monotonic() < deadline:
            if self._final_seen.is_set() or not worker.alive:
                return
            time.sleep(0.05)
        self._write_log("# no answer to the cancel: stopping the worker\n")
        _forget_shared(worker)
        worker.stop()
        if worker.join(self.kill_timeout) is None:
            worker.kill()
            worker.join(self.kill_timeout)
            self._clean_after_kill()

    # ---- after a hard kill ----

    def _output(self) -> Path | None:
        output = self.request.get("output")
        return Path(output).expanduser().resolve() if isinstance(output, str) and output else None

    def _note_output_folder(self) -> None:
        """Remember what the output folder holds, to remove what a killed worker leaves (it could not)."""
        output = self._output()
        try:
            self._before = {p.name for p in output.parent.iterdir()} if output is not None else set()
        except OSError:
            self._before = set()

    def _clean_after_kill(self) -> None:
        """What the killed worker made and could not remove: its own temporary files (named with its process
        id) beside the output and in the output's folder of upright copies, its run folders there, and the
        output file when it did not exist at the start. Other processes' files in the same folders stay."""
        output = self._output()
        worker = self.worker
        if output is None or worker is None:
            return
        pid = worker.process.pid
        images = display_folder_for(output)
        new: list[Path] = []
        try:
            new += [p for p in output.parent.iterdir() if p.name.startswith(own_temp_prefix(pid))]
            if output.exists() and output.name not in self._before:
                new.append(output)
            if images.is_dir():
                new += [p for p in images.iterdir()
                        if p.name.startswith(own_temp_prefix(pid)) or run_marker(pid) in p.name]
        except OSError:
            pass
        remove_paths(new)
        self.cleaned_up = [str(p) for p in new]
        if new:
            self._write_log(f"# removed after the kill: {', '.join(self.cleaned_up)}\n")

    # ---- the log ----

    def _write_log(self, text: str) -> None:
        if self.worker is not None:
            self.worker.write_log(text)
        elif self._log is not None and not self._log.closed:
            self._log.write(text)

    def _close_log(self, last: str) -> None:
        log = self._log
        if log is None:
            return
        if self.worker is not None:
            self.worker.attach_log(None)
        if not log.closed:
            log.write(last)
            log.close()


def remove_paths(paths: list[Path]) -> None:
    """Remove files and folders; what is already gone (or cannot be removed) is skipped. A run's folder of
    upright copies goes with the `<stem>_images` folder holding it when that is left empty."""
    for path in paths:
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
            if path.parent.name.endswith("_images"):
                try:
                    path.parent.rmdir()  # refuses while another run's folder is in it
                except OSError:
                    pass
        else:
            try:
                path.unlink()
            except OSError:
                pass
