"""Start the worker subprocess, collect its JSON lines without blocking, cancel it (stdlib only).

Used by the Blender operator from a modal timer: `start()`, then `poll()` on every tick, `cancel()` on Esc.
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

# The folder that holds the `vggt_blender` package (the extension folder): put on the worker's PYTHONPATH.
PACKAGE_PARENT = str(Path(__file__).resolve().parent.parent)
CANCELLED_EXIT_CODE = 130


class WorkerJob:
    """One run of `python -m vggt_blender.worker` with `request` (a dict, see docs/WORKER_PROTOCOL.md).

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
        kwargs: dict[str, Any] = {}
        if sys.platform == "win32":
            kwargs["creationflags"] = subprocess.CREATE_NO_WINDOW  # no console window pops up
        try:
            self.process = subprocess.Popen(
                [self.python_exe, "-m", "vggt_blender.worker"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                stderr=subprocess.PIPE, env=self.environment(), **kwargs)
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
            self.process.stdin.close()
        except OSError:
            pass  # the worker died at once; its stderr (in the log) says why

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
        self._finish_if_exited()
        return self.process.returncode

    # ------------------------------------------------------------------------------------------- cancel

    def cancel(self, kill_after: float = 5.0) -> None:
        """Ask the worker to stop (SIGTERM: it removes what it created and exits 130); kill it if it has not
        exited after `kill_after` seconds. Returns at once; the kill happens on a background thread."""
        if self.process is None or self.process.poll() is not None:
            return
        self.cancelled = True
        self._write_log("# cancel requested\n")
        try:
            self.process.terminate()
        except OSError:
            return
        process = self.process

        def kill_later() -> None:
            try:
                process.wait(kill_after)
            except subprocess.TimeoutExpired:
                try:
                    process.kill()
                except OSError:
                    pass

        threading.Thread(target=kill_later, daemon=True).start()
