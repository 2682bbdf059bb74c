"""Start the worker subprocess, collect its JSON lines without blocking, cancel it (stdlib only).

Used by the Blender operator from a modal timer: `start()`, then `poll()` on every tick, and `cancel()`
from the panel's cancel button.
"""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO, Any

from ..io.atomic import TEMP_PREFIX  # stdlib only: this client stays import-light

# The folder that holds the `vggt_blender` package (the extension folder): put on the worker's PYTHONPATH.
PACKAGE_PARENT = str(Path(__file__).resolve().parents[2])
CANCELLED_EXIT_CODE = 130
# No console window for the worker on Windows (runtime_setup uses the same flags).
NO_WINDOW_FLAGS = getattr(subprocess, "CREATE_NO_WINDOW", 0) if sys.platform == "win32" else 0


class WorkerJob:
    """One run of `python -m vggt_blender.jobs.worker` with `request` (a dict, see docs/WORKER_PROTOCOL.md).

    stdout lines are parsed as JSON (a line that is not JSON becomes a "log" message); stdout and stderr are
    both copied to `log_path`. After the process ends, `returncode` and `done` are set.
    """

    def __init__(self, python_exe: str, request: dict, log_path: str | os.PathLike,
                 env: dict[str, str] | None = None) -> None:
        self.python_exe = str(python_exe)
        self.request = dict(request)
        self.log_path = Path(log_path)
        self.extra_env = dict(env or {})
        self.process: subprocess.Popen | None = None
        self.cancelled = False
        self._messages: queue.Queue[dict] = queue.Queue()
        self._log_lock = threading.Lock()
        self._log: IO[str] | None = None
        self._threads: list[threading.Thread] = []
        self._output: Path | None = None
        self._temps_before: set[str] = set()
        self._images_existed = True
        self.cleaned_up: list[str] = []
        self._canceller: threading.Thread | None = None

    # -------------------------------------------------------------------------------------------- start

    def environment(self) -> dict[str, str]:
        env = dict(os.environ)
        # Blender's own Python settings must not leak into the runtime Python.
        env.pop("PYTHONHOME", None)
        existing = env.get("PYTHONPATH")
        env["PYTHONPATH"] = PACKAGE_PARENT + (os.pathsep + existing if existing else "")
        env["PYTHONUNBUFFERED"] = "1"
        env["PYTHONIOENCODING"] = "utf-8"
        env.update(self.extra_env)
        return env

    def start(self) -> None:
        if self.process is not None:
            raise RuntimeError("this job was already started")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "w", encoding="utf-8")
        self._write_log(f"# {time.strftime('%Y-%m-%d %H:%M:%S')} request: {json.dumps(self.request)}\n")
        self._note_output_state()
        kwargs: dict[str, Any] = {}
        if NO_WINDOW_FLAGS:
            kwargs["creationflags"] = NO_WINDOW_FLAGS
        try:
            # --cancel-on-eof: stdin stays open for the whole run; if Blender dies, the worker sees end of
            # input and cancels itself instead of running on as an orphan.
            self.process = subprocess.Popen(
                [self.python_exe, "-m", "vggt_blender.jobs.worker", "--cancel-on-eof"], stdin=subprocess.PIPE,
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=self.environment(), **kwargs)
        except OSError as exc:
            self._write_log(f"# cannot start {self.python_exe}: {exc}\n")
            self._close_log()
            raise
        for target, stream in ((self._read_stdout, self.process.stdout), (self._read_stderr, self.process.stderr)):
            thread = threading.Thread(target=target, args=(stream,), daemon=True)
            thread.start()
            self._threads.append(thread)
        try:
            self.process.stdin.write(json.dumps(self.request).encode("utf-8") + b"\n")
            self.process.stdin.flush()  # kept open: closing it would cancel the run
        except OSError:
            pass  # the worker died at once; its stderr (in the log) says why

    def _note_output_state(self) -> None:
        """Remember what the output folder holds now, to clean up after a hard kill."""
        output = self.request.get("output")
        if not isinstance(output, str) or not output:
            return
        self._output = Path(output).expanduser().resolve()
        folder = self._output.parent
        try:
            self._temps_before = {p.name for p in folder.glob(TEMP_PREFIX + "*")}
        except OSError:
            self._temps_before = set()
        self._images_existed = self._images_folder().exists()

    def _images_folder(self) -> Path:
        assert self._output is not None
        return self._output.with_name(f"{self._output.stem}_images")

    def _clean_after_kill(self) -> None:
        """A killed worker could not clean up: remove the temporary files that appeared in the output folder
        since start, and the upright-copies folder if this run created it."""
        if self._output is None:
            return
        import shutil

        try:
            temps = [p for p in self._output.parent.glob(TEMP_PREFIX + "*") if p.name not in self._temps_before]
        except OSError:
            temps = []
        for path in temps:
            try:
                path.unlink()
                self.cleaned_up.append(str(path))
            except OSError:
                pass
        images = self._images_folder()
        if not self._images_existed and images.is_dir():
            shutil.rmtree(images, ignore_errors=True)
            self.cleaned_up.append(str(images))
        if self.cleaned_up:
            self._write_log(f"# removed after the kill: {', '.join(self.cleaned_up)}\n")

    # ------------------------------------------------------------------------------------------ readers

    def _write_log(self, text: str) -> None:
        with self._log_lock:
            if self._log is not None:
                self._log.write(text)
                self._log.flush()

    def _close_log(self) -> None:
        with self._log_lock:
            if self._log is not None:
                self._log.close()
                self._log = None

    def _read_stdout(self, stream: IO[bytes]) -> None:
        for raw in iter(stream.readline, b""):
            line = raw.decode("utf-8", errors="replace").rstrip("\r\n")
            self._write_log(line + "\n")
            if not line.strip():
                continue
            try:
                message = json.loads(line)
            except ValueError:
                message = None
            if not isinstance(message, dict) or "type" not in message:
                message = {"type": "log", "message": line}
            self._messages.put(message)
        stream.close()

    def _read_stderr(self, stream: IO[bytes]) -> None:
        for raw in iter(stream.readline, b""):
            self._write_log("[stderr] " + raw.decode("utf-8", errors="replace").rstrip("\r\n") + "\n")
        stream.close()

    # ------------------------------------------------------------------------------------------- status

    def poll(self) -> list[dict]:
        """Messages received since the last call (never blocks)."""
        out: list[dict] = []
        while True:
            try:
                out.append(self._messages.get_nowait())
            except queue.Empty:
                break
        self._finish_if_exited()
        return out

    def _finish_if_exited(self) -> None:
        if self.process is None or self.process.poll() is None:
            return
        if all(not t.is_alive() for t in self._threads) and self._log is not None:
            self._close_stdin()
            self._write_log(f"# exit code {self.process.returncode}\n")
            self._close_log()

    @property
    def returncode(self) -> int | None:
        return None if self.process is None else self.process.poll()

    @property
    def done(self) -> bool:
        """True once the process has exited and all of its output has been read (poll() may still hold some)."""
        if self.process is None or self.process.poll() is None:
            return False
        return all(not t.is_alive() for t in self._threads)

    def wait(self, timeout: float | None = None) -> int | None:
        """Block until the process exits and its output is read (for scripts and tests)."""
        if self.process is None:
            return None
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            return None
        for thread in self._threads:
            thread.join(timeout)
        if self._canceller is not None:
            self._canceller.join(timeout)  # its cleanup after a kill finishes before wait() returns
        self._finish_if_exited()
        return self.process.returncode

    # ------------------------------------------------------------------------------------------- cancel

    def cancel(self, kill_after: float = 5.0) -> None:
        """Ask the worker to stop: SIGTERM on POSIX, closing its stdin on Windows (where terminate() would be
        a hard kill); either way it removes what it created and exits 130. If it has not exited after
        `kill_after` seconds it is killed and the client removes its leftovers. Returns at once; the waiting
        happens on a background thread, which also closes the log once the process has ended."""
        if self.process is None or self.process.poll() is not None:
            return
        self.cancelled = True
        self._write_log("# cancel requested\n")
        process = self.process
        try:
            if sys.platform == "win32":
                process.stdin.close()  # --cancel-on-eof: the worker cancels itself cleanly
            else:
                process.terminate()
        except OSError:
            pass

        def finish_later() -> None:
            killed = False
            try:
                process.wait(kill_after)
            except subprocess.TimeoutExpired:
                try:
                    process.kill()
                    killed = True
                except OSError:
                    pass
                process.wait()
            for thread in self._threads:
                thread.join(5.0)
            if killed:
                self._clean_after_kill()
            self._close_stdin()
            self._finish_if_exited()

        thread = threading.Thread(target=finish_later, daemon=True)
        thread.start()
        self._canceller = thread

    def _close_stdin(self) -> None:
        if self.process is not None and self.process.stdin is not None:
            try:
                self.process.stdin.close()
            except OSError:
                pass
