"""A long-lived worker subprocess in keep-alive mode: the model stays loaded between jobs, and a crash, a hard
kill or a leak in torch ends the worker, never the server (which starts a fresh one for the next job)."""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO, Callable

# The folder that holds the `vggt_blender` package: put on the worker's PYTHONPATH.
PACKAGE_PARENT = str(Path(__file__).resolve().parents[2])
FINAL_TYPES = ("result", "error")
PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """In the child before exec (Linux): SIGKILL it when the server dies, so that a killed server never leaves
    a worker running on (holding the GPU, writing into a job that recovery has already failed)."""
    import ctypes

    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        pass


class WorkerGone(Exception):
    """The worker process ended without finishing the request; `returncode` and the stderr tail say why."""

    def __init__(self, returncode: int | None, stderr_tail: str) -> None:
        self.returncode = returncode
        self.stderr_tail = stderr_tail
        super().__init__(f"the worker process stopped (exit code {returncode})")


class WorkerSession:
    """One `python -m vggt_blender.jobs.worker` kept running; `run()` sends a request and blocks until its
    final line (result or error), handing every other line to `on_message`."""

    def __init__(self, python: str, env: dict[str, str] | None = None, log_path: Path | None = None) -> None:
        self.python = python
        self.extra_env = dict(env or {})
        self.log_path = log_path
        self.process: subprocess.Popen | None = None
        self._lines: queue.Queue[dict | None] = queue.Queue()
        self._stderr: list[str] = []
        self._lock = threading.Lock()

    def environment(self) -> dict[str, str]:
        env = dict(os.environ)
        env.pop("PYTHONHOME", None)
        existing = env.get("PYTHONPATH")
        env["PYTHONPATH"] = PACKAGE_PARENT + (os.pathsep + existing if existing else "")
        env["PYTHONUNBUFFERED"] = "1"
        env["PYTHONIOENCODING"] = "utf-8"
        env.update(self.extra_env)
        return env

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def _start(self) -> None:
        self._lines = queue.Queue()
        self._stderr = []
        self.process = subprocess.Popen([self.python, "-m", "vggt_blender.jobs.worker"], stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=self.environment(),
                                        preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None)
        threading.Thread(target=self._read_stdout, args=(self.process.stdout, self._lines), daemon=True).start()
        threading.Thread(target=self._read_stderr, args=(self.process.stderr, self._stderr), daemon=True).start()

    def _read_stdout(self, stream: IO[bytes], lines: "queue.Queue[dict | None]") -> None:
        for raw in iter(stream.readline, b""):
            text = raw.decode("utf-8", errors="replace").strip()
            if not text:
                continue
            try:
                message = json.loads(text)
            except ValueError:
                message = None
            if not isinstance(message, dict) or "type" not in message:
                message = {"type": "log", "message": text}
            lines.put(message)
        lines.put(None)  # end of output: the process has ended (or closed stdout)

    def _read_stderr(self, stream: IO[bytes], tail: list[str]) -> None:
        log = open(self.log_path, "a", encoding="utf-8") if self.log_path else None
        try:
            for raw in iter(stream.readline, b""):
                line = raw.decode("utf-8", errors="replace").rstrip("\r\n")
                tail.append(line)
                del tail[:-40]
                if log is not None:
                    log.write(line + "\n")
                    log.flush()
        finally:
            if log is not None:
                log.close()

    def run(self, request: dict, on_message: Callable[[dict], None],
            should_cancel: Callable[[], bool], tick: Callable[[], None] = lambda: None,
            cancel_grace: float = 10.0) -> dict:
        """Run one request; returns its final message. Raises WorkerGone if the process dies first.
        `should_cancel` is asked several times a second; once true, a cancel line is sent, then after
        `cancel_grace` seconds a SIGTERM, then a kill."""
        with self._lock:
            if not self.alive:
                self._start()
            assert self.process is not None and self.process.stdin is not None
            line = json.dumps({**request, "keep_alive": True}, ensure_ascii=True) + "\n"
            try:
                self.process.stdin.write(line.encode("ascii"))
                self.process.stdin.flush()
            except OSError:
                pass  # the worker died at once: its end of output comes below
            cancel_at: float | None = None
            escalated = 0
            while True:
                try:
                    message = self._lines.get(timeout=0.2)
                except queue.Empty:
                    tick()
                    if cancel_at is None and should_cancel():
                        cancel_at = time.monotonic()
                        self._send_cancel()
                    elif cancel_at is not None:
                        waited = time.monotonic() - cancel_at
                        if escalated == 0 and waited > cancel_grace:
                            escalated = 1
                            self._signal(signal.SIGTERM)
                        elif escalated == 1 and waited > 2 * cancel_grace:
                            escalated = 2
                            self._signal(signal.SIGKILL)
                    continue
                if message is None:
                    code = self.process.wait()
                    raise WorkerGone(code, "\n".join(self._stderr[-10:]))
                if message.get("type") in FINAL_TYPES:
                    return message
                on_message(message)

    def _send_cancel(self) -> None:
        try:
            assert self.process is not None and self.process.stdin is not None
            self.process.stdin.write(b'{"type": "cancel"}\n')
            self.process.stdin.flush()
        except (OSError, AssertionError):
            pass

    def _signal(self, sig: int) -> None:
        if self.process is not None and self.process.poll() is None:
            try:
                self.process.send_signal(sig)
            except OSError:
                pass

    def close(self, timeout: float = 10.0) -> None:
        """End the session: close stdin (the worker exits after its current request), kill if it lingers."""
        process = self.process
        if process is None:
            return
        try:
            if process.stdin is not None:
                process.stdin.close()
        except OSError:
            pass
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
