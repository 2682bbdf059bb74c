"""`Job`: what the extension needs from a reconstruction job, wherever it runs (stdlib only).

An implementation supplies the transport: `_begin()` starts the work, `_receive()` returns the protocol messages
(jobs/protocol.py) that arrived since the last call, `_request_cancel()` asks the work to stop, `_fetch()` brings
the result files over. This base class turns those messages into the state, the progress, the error and the
result that the UI reads, so the local worker (jobs/local.py) and a remote server behave alike.

    job.start()                      # never raises for a job that cannot run: it fails with a coded error
    while not job.finished:
        for event in job.poll(): ...  # new messages; never blocks
    job.state                        # "queued", "running", "done", "failed" or "cancelled"
    job.error_code, job.error_message, job.error_file
    job.fetch(folder)                # -> the result files (reconstruction file first)
"""

from __future__ import annotations

import os
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path

from . import protocol
from ..errors import VGGTError

QUEUED, RUNNING, DONE, FAILED, CANCELLED = "queued", "running", "done", "failed", "cancelled"
STATES = (QUEUED, RUNNING, DONE, FAILED, CANCELLED)
FINAL_STATES = (DONE, FAILED, CANCELLED)


@dataclass
class Progress:
    stage: str = "starting"
    fraction: float = 0.0  # within the stage, 0..1
    message: str = ""


class Job(ABC):
    """One request, run somewhere. Not thread-safe: call it from one thread (Blender's main thread)."""

    def __init__(self, request: dict) -> None:
        self.request = dict(request)
        self.state = QUEUED
        self.progress = Progress()
        self.error_code: str | None = None
        self.error_message: str | None = None
        self.error_file: str | None = None
        self.result: dict | None = None  # the result message: "path", "files", "summary"
        self.warnings: list[str] = []
        self._cancel_requested = False
        self._unreported: list[dict] = []  # events made here (a failed start) that poll() still has to return

    # ---- what callers use ----

    def start(self) -> None:
        if self.state != QUEUED:
            raise RuntimeError("this job was already started")
        try:
            self.request = protocol.parse_request(self.request)
            self._begin()
        except VGGTError as exc:
            self._fail(exc.code, exc.message, exc.file)
            self._unreported.append(protocol.error(self.error_code, exc.message, self.error_file))
            return
        if self.state == QUEUED:
            self.state = RUNNING

    def poll(self) -> list[dict]:
        """Messages received since the last call (never blocks); the state follows them."""
        made, self._unreported = self._unreported, []
        events = self._receive() if self.state != QUEUED else []
        for event in events:
            self._apply(event)
        events = made + events
        if self.state == RUNNING:
            ended = self._ended()
            if ended is not None:
                self._conclude(ended)
        return events

    def cancel(self) -> None:
        """Ask the job to stop; returns at once. The state becomes "cancelled" when the job has stopped
        (a result that arrives anyway is discarded)."""
        if self.state in FINAL_STATES or self._cancel_requested:
            return
        self._cancel_requested = True
        self._request_cancel()

    @property
    def cancel_requested(self) -> bool:
        return self._cancel_requested

    @property
    def finished(self) -> bool:
        return self.state in FINAL_STATES

    def fetch(self, dest_folder: str | os.PathLike[str]) -> list[Path]:
        """The result files in `dest_folder` (or where they already are, when that is the same folder)."""
        if self.state != DONE or self.result is None:
            raise RuntimeError(f"no result to fetch: the job is {self.state}")
        return self._fetch(Path(dest_folder))

    def wait(self, timeout: float | None = None, interval: float = 0.05) -> str:
        """Poll until the job is over (scripts and tests); returns the state."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self.finished and (deadline is None or time.monotonic() < deadline):
            self.poll()
            if not self.finished:
                time.sleep(interval)
        return self.state

    # ---- what implementations supply ----

    @abstractmethod
    def _begin(self) -> None:
        """Start the work (raise VGGTError when it cannot start: the job fails with that code)."""

    @abstractmethod
    def _receive(self) -> list[dict]:
        """Protocol messages that arrived since the last call (never blocks)."""

    @abstractmethod
    def _ended(self) -> tuple[str, str, str | None] | None:
        """None while the job may still send messages; else how it ended without a final message, as
        (code, message, file) — ("", "", None) when its last message already said it."""

    @abstractmethod
    def _request_cancel(self) -> None:
        """Ask the work to stop (a cancel message; a harder stop later if it does not)."""

    @abstractmethod
    def _fetch(self, dest_folder: Path) -> list[Path]:
        """Bring the files of `self.result["files"]` to `dest_folder`; return their paths there."""

    def _discard_result(self) -> None:
        """A result that arrived after a cancel: remove what it wrote (override where files are remote)."""

    # ---- the state machine ----

    def _apply(self, event: dict) -> None:
        kind = event.get("type")
        if kind == protocol.PROGRESS:
            self.progress = Progress(str(event.get("stage") or self.progress.stage),
                                     float(event.get("fraction") or 0.0), str(event.get("message") or ""))
        elif kind == protocol.WARNING:
            self.warnings.append(str(event.get("message", "")))
        elif kind == protocol.ERROR and self.state in (QUEUED, RUNNING):
            code = str(event.get("code") or "internal")
            if code == "cancelled" or self._cancel_requested:
                self.state = CANCELLED
            else:
                self._fail(code, str(event.get("message") or code), event.get("file"))
        elif kind == protocol.RESULT and self.state in (QUEUED, RUNNING):
            self.result = event
            if self._cancel_requested:
                self._discard_result()
                self.state = CANCELLED
            else:
                self.state = DONE

    def _conclude(self, ended: tuple[str, str, str | None]) -> None:
        code, message, file = ended
        if self._cancel_requested:
            self.state = CANCELLED
        elif code:
            self._fail(code, message, file)
        else:
            self._fail("internal", "the job ended without a result")

    def _fail(self, code: str, message: str, file: str | None = None) -> None:
        self.state = FAILED
        self.error_code = code if code in protocol.ERROR_CODES else "internal"
        self.error_message = message
        self.error_file = file if isinstance(file, str) else None
