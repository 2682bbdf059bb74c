"""A runner's own long-lived worker (jobs/local.py's `WorkerProcess`) in keep-alive mode: the model stays
loaded between jobs, and a crash, a hard kill or a leak in torch ends the worker, never the server (the next
job starts a fresh one). The worker reads stdin with --cancel-on-eof, so a server that dies (even by SIGKILL)
takes its worker's run down with it instead of leaving it on the GPU.

Each runner keeps its own process rather than LocalJob's one shared worker: a server with several devices
runs one model on each at the same time.
"""

from __future__ import annotations

import queue
import time
from pathlib import Path
from typing import Callable

from ..jobs import protocol
from ..jobs.local import WorkerProcess, worker_environment

FINAL_TYPES = (protocol.RESULT, protocol.ERROR)


class WorkerGone(Exception):
    """The worker process ended without finishing the request; `returncode` and the log's tail say why."""

    def __init__(self, returncode: int | None, log_tail: str) -> None:
        self.returncode = returncode
        self.log_tail = log_tail
        super().__init__(f"the worker process stopped (exit code {returncode})")


class WorkerSession:
    def __init__(self, python: str, env: dict[str, str] | None = None) -> None:
        self.python = python
        self.extra_env = dict(env or {})
        self.process: WorkerProcess | None = None

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.alive

    def run(self, request: dict, log_path: Path, on_message: Callable[[dict], None],
            should_cancel: Callable[[], bool], tick: Callable[[], None] = lambda: None,
            cancel_grace: float = 10.0) -> dict:
        """Run one request (its worker lines go to `log_path`); return its final message, or raise WorkerGone.
        `should_cancel` is asked several times a second; once it is true a cancel message goes out, a SIGTERM
        after `cancel_grace` seconds without an answer, a kill after twice that."""
        if not self.alive:
            self.process = WorkerProcess(self.python, worker_environment(self.extra_env))
        worker = self.process
        assert worker is not None
        with open(log_path, "a", encoding="utf-8") as log:
            worker.attach_log(log)
            try:
                worker.send({**request, "keep_alive": True})
                return self._follow(worker, log_path, on_message, should_cancel, tick, cancel_grace)
            finally:
                worker.attach_log(None)

    def _follow(self, worker: WorkerProcess, log_path: Path, on_message: Callable[[dict], None],
                should_cancel: Callable[[], bool], tick: Callable[[], None], cancel_grace: float) -> dict:
        cancel_at: float | None = None
        escalated = 0
        while True:
            try:
                message = worker.messages.get(timeout=0.2)
            except queue.Empty:
                if worker.drained and worker.messages.empty():
                    worker.join(5.0)
                    raise WorkerGone(worker.process.returncode, _tail(log_path))
                tick()
                if cancel_at is None:
                    if should_cancel():
                        cancel_at = time.monotonic()
                        worker.send(protocol.cancel())
                elif escalated == 0 and time.monotonic() - cancel_at > cancel_grace:
                    escalated = 1
                    worker.stop()
                elif escalated == 1 and time.monotonic() - cancel_at > 2 * cancel_grace:
                    escalated = 2
                    worker.kill()
                continue
            if message.get("type") in FINAL_TYPES:
                return message
            on_message(message)

    def close(self, timeout: float = 10.0) -> None:
        """End the session: closing stdin ends the worker (cancelling a run); a kill if it lingers."""
        worker = self.process
        if worker is None:
            return
        worker.close_stdin()
        if worker.join(timeout) is None:
            worker.kill()
            worker.join(timeout)


def _tail(log_path: Path, lines: int = 5) -> str:
    try:
        text = log_path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
    return "\n".join(line.removeprefix("[stderr] ") for line in text.splitlines()[-lines:])
