"""`RemoteJob`: the `Job` interface (jobs/interface.py) run by a reconstruction server (stdlib only).

    job = RemoteJob("http://gpu-box:8765", token, request)   # the same request as a LocalJob's
    job.start()     # returns at once: the upload and the polling run on a background thread
    job.poll()      # progress ("uploading", "queued", then the server's stages), warnings, the final message
    job.cancel()    # stops the upload, or cancels the job on the server
    job.fetch(folder)

A shot travels too: a video file is uploaded whole and the server picks its frames (every, start, end,
max_frames); of an image sequence only the frames the same rule picks here are uploaded, with their frame
numbers, so a plate of EXRs is not sent whole for every 4th frame.

The result files are downloaded beside the request's `output` (each through a temporary file) before the
result message is reported, so a job is "done" only with every file complete on this machine: a scene is
never built from half a download. A connection that drops while the job runs is retried (polling resumes
where it was) for `reconnect_for` seconds; only then does the job fail. An upload that breaks off fails the job
(the server discards a partial upload).
"""

from __future__ import annotations

import os
import queue
import shutil
import threading
import time
from pathlib import Path
from typing import Any, Callable

from . import protocol
from .http_client import ServiceClient, ServiceError
from .interface import FINAL_STATES, Job
from .local import LocalJob, remove_paths
from ..io.atomic import TEMP_PREFIX
from ..io.photo_paths import collect_images
from ..options import DEFAULT_CONFIG, FRAME_SELECTION_FIELDS, SHOT_REQUEST_FIELDS
from ..shot.selection import FrameSelection, select_frame_numbers, sequence_files, shot_failure, shot_input_kind

# Frame options go with a video (the server picks its frames) and are applied here for a sequence; the other
# shot fields go with either (`sequence` itself only says what the input is).
RUN_KEYS = tuple(k for k in SHOT_REQUEST_FIELDS if k not in FRAME_SELECTION_FIELDS and k != "sequence")

RETRY_STATUSES = (429, 503)  # queue full, model loading: the server asks to come back later


class RemoteJob(Job):
    def __init__(self, server_url: str, token: str | None, request: dict, *, poll_interval: float = 0.5,
                 reconnect_for: float = 300.0, timeout: float = 30.0,
                 log_path: str | os.PathLike[str] | None = None) -> None:
        super().__init__(request)
        self.log_path = Path(log_path) if log_path else None
        self.server_url = server_url
        self.token = token
        self.poll_interval = poll_interval
        self.reconnect_for = reconnect_for
        self.timeout = timeout
        self.job_id: str | None = None
        self.remote_state: str | None = None
        self._events: queue.Queue[dict] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._cancel = threading.Event()
        self._downloaded: list[Path] = []

    # ---- Job ----

    def _begin(self) -> None:
        self.client = ServiceClient(self.server_url, self.token, timeout=self.timeout)
        if self.log_path is not None:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            self.log_path.write_text(f"# {time.strftime('%Y-%m-%d %H:%M:%S')} server {self.client.url}\n",
                                     encoding="utf-8")
        self.video: str | None = None
        self.sequence: dict | None = None
        images = list(self.request["images"])
        kind = shot_input_kind(images, self.request)  # the engine's own rule
        if kind == "video":
            self.video = os.path.abspath(images[0])
            if not os.path.isfile(self.video):  # a missing file fails at once, here
                raise shot_failure(self.video, "the file does not exist")
            self.photos = []
        elif kind == "sequence":
            self.photos, self.sequence = self._sequence_frames(images[0])
        else:
            self.photos, warnings = collect_images(images)  # a missing photo fails at once, here
            for line in warnings:
                self._events.put(protocol.warning(line))
        self._thread = threading.Thread(target=self._run, daemon=True, name="vggt-remote-job")
        self._thread.start()

    def _sequence_frames(self, path: str) -> tuple[list[str], dict]:
        """The files of the frames the request picks from an image sequence, and its sequence_frames option."""
        files = sequence_files(path)
        first = files[0][0]
        numbers = [number - first for number, _ in files]
        picked = set(select_frame_numbers(numbers, FrameSelection.from_request(self.request), path))
        chosen = [(number, file) for number, (_, file) in zip(numbers, files) if number in picked]
        sequence = {"pattern": os.path.abspath(path), "numbers": [n for n, _ in chosen], "first_number": first,
                    "frame_count": len(files),
                    "selection": {k: self.request.get(k) for k in FRAME_SELECTION_FIELDS}}
        return [os.path.abspath(f) for _, f in chosen], sequence

    def _receive(self) -> list[dict]:
        out = []
        while True:
            try:
                out.append(self._events.get_nowait())
            except queue.Empty:
                return out

    def _ended(self) -> tuple[str, str, str | None] | None:
        if self._thread is None or self._thread.is_alive() or not self._events.empty():
            return None
        return ("internal", "the connection to the server ended without a result", None)

    def _request_cancel(self) -> None:
        self._cancel.set()

    # The result files are on this machine by the time the job is done: fetched like a local job's.
    _fetch = LocalJob._fetch

    def _discard_result(self) -> None:
        self._remove_downloads()

    def join(self, timeout: float | None = None) -> bool:
        """Block until the background thread is over (scripts and tests)."""
        if self._thread is not None:
            self._thread.join(timeout)
        return self._thread is None or not self._thread.is_alive()

    # ---- the background thread ----

    def _send(self, event: dict) -> None:
        self._events.put(event)
        if self.log_path is not None:  # the same lines a local worker's log holds
            try:
                with open(self.log_path, "a", encoding="utf-8") as log:
                    log.write(protocol.encode(event))
            except OSError:
                pass

    def _run(self) -> None:
        try:
            self._submit()
            if self.job_id is not None:
                self._follow()
        except ServiceError as exc:
            if self._cancel.is_set() and exc.code in ("cancelled", "server_unreachable"):
                self._send(protocol.error("cancelled", "cancelled"))
            else:
                self._send(protocol.error(exc.code, exc.message, exc.file))
        except Exception as exc:  # noqa: BLE001 - reported as the job's error, never lost on a thread
            self._send(protocol.error("internal", f"{type(exc).__name__}: {exc}"))

    def _retrying(self, what: str, call: Callable[[], Any], retry_statuses: tuple[int, ...] = ()) -> Any:
        """`call()`, retried while the connection is lost (or the server asks to wait) for `reconnect_for`
        seconds from the first failure; the waits are reported as progress messages."""
        first_failure: float | None = None
        delay = self.poll_interval
        while True:
            try:
                return call()
            except ServiceError as exc:
                if not (exc.connection_lost or exc.status in retry_statuses):
                    raise
                now = time.monotonic()
                first_failure = first_failure if first_failure is not None else now
                if now - first_failure > self.reconnect_for:
                    raise ServiceError(f"{exc.message}; gave up {what} after {self.reconnect_for:g} s",
                                       status=exc.status, code=exc.code) from None
                stage = self.progress.stage if self.progress.stage != "starting" else "connecting"
                self._send(protocol.progress(stage, self.progress.fraction,
                                             f"{exc.message}; retrying ({now - first_failure:.0f} s)"))
                if self._cancel.wait(delay) and not self.job_id:
                    raise ServiceError("cancelled", code="cancelled") from None
                delay = min(delay * 2, 5.0)

    def _options(self, health: dict) -> dict:
        request = self.request
        options = {"images": [self.video] if self.video else [os.path.abspath(p) for p in self.photos],
                   "output": str(self._output()), "precision": request["precision"], "mode": request["mode"],
                   "fast_path": request["fast_path"]}
        if request["config"] != DEFAULT_CONFIG or health.get("model") == DEFAULT_CONFIG:
            options["config"] = request["config"]  # the server refuses a model it does not run
        if request.get("refine"):
            options["refine"] = request["refine"]
        shot_keys = RUN_KEYS + FRAME_SELECTION_FIELDS if self.video else RUN_KEYS if self.sequence else ()
        options.update({key: request[key] for key in shot_keys if request.get(key) is not None})
        if self.sequence is not None:
            options["sequence_frames"] = self.sequence
        return options

    def _output(self) -> Path:
        return Path(self.request["output"]).expanduser().resolve()

    def _submit(self) -> None:
        client = self.client
        self._send(protocol.progress("connecting", 0.0, client.url))
        health = self._retrying("connecting", client.health)
        limits = health.get("limits") or {}
        what = "frames" if self.sequence else "photos"
        if limits.get("max_photos") and len(self.photos) > limits["max_photos"]:
            raise ServiceError(f"{len(self.photos)} {what}, but the server {client.url} takes at most "
                               f"{int(limits['max_photos'])} in one job", code="bad_request")
        size = sum(os.path.getsize(p) for p in self.photos or [self.video])
        if limits.get("max_upload_mb") and size > limits["max_upload_mb"] * 2**20:
            sent = f"the video is {size / 2**20:.0f} MB" if self.video else \
                f"the {what} add up to {size / 2**20:.0f} MB"
            raise ServiceError(f"{sent}, but the server {client.url} takes at most {limits['max_upload_mb']:g} MB "
                               "in one job", code="bad_request")
        options = self._options(health)

        def upload() -> dict:
            last = [0.0]

            def sent(done: int, total: int) -> None:
                now = time.monotonic()
                if now - last[0] > 0.2 or done == total:
                    last[0] = now
                    self._send(protocol.progress("uploading", done / total, f"{done / 2**20:.1f} of "
                                                                            f"{total / 2**20:.1f} MB"))

            return client.submit(self.photos, options, progress=sent, should_abort=self._cancel.is_set,
                                 video=self.video)

        if self._cancel.is_set():
            raise ServiceError("cancelled", code="cancelled")
        try:
            # Only a refusal to queue is retried: an upload cut off midway may or may not have arrived.
            accepted = self._retry_refusals(upload)
        except ServiceError as exc:
            if exc.connection_lost:
                raise ServiceError(f"{exc.message} (during the upload; nothing was started)", code=exc.code) \
                    from None
            raise
        self.job_id = accepted["id"]
        self._send(protocol.log(f"job {self.job_id} on {client.url}"))

    def _retry_refusals(self, upload: Callable[[], dict]) -> dict:
        """Upload; when the server answers 429 or 503 (queue full, model loading), wait and upload again."""
        start = time.monotonic()
        while True:
            try:
                return upload()
            except ServiceError as exc:
                if exc.status not in RETRY_STATUSES or time.monotonic() - start > self.reconnect_for:
                    raise
                self._send(protocol.progress("queued", 0.0, f"{exc.message}; trying again"))
                if self._cancel.wait(5.0):
                    raise ServiceError("cancelled", code="cancelled") from None

    def _follow(self) -> None:
        client = self.client
        job_id = self.job_id
        seen_messages = 0
        cancel_sent = False
        last_progress: tuple | None = None
        while True:
            if self._cancel.is_set() and not cancel_sent:
                self._retrying("cancelling", lambda: client.cancel(job_id))
                cancel_sent = True
            status = self._retrying("following the job", lambda: client.status(job_id))
            self.remote_state = status["state"]
            for message in status.get("messages") or []:
                if message.get("seq", 0) <= seen_messages:
                    continue
                seen_messages = message.get("seq", seen_messages)
                if message.get("type") in (protocol.LOG, protocol.WARNING):
                    self._send({"type": message["type"], "message": message.get("message", "")})
            if status["state"] == "queued":
                position = status.get("position")
                text = "waiting in the server's queue" + (f" (position {position + 1})" if position is not None
                                                           else "")
                progress = ("queued", 0.0, text)
            else:
                progress = (status.get("stage") or "running", float(status.get("progress") or 0.0),
                            status.get("message") or "")
            if progress != last_progress and status["state"] not in FINAL_STATES:
                last_progress = progress
                self._send(protocol.progress(*progress))
            if status["state"] == "done":
                self._download(status["result"])
                return
            if status["state"] in ("failed", "cancelled"):
                error = status.get("error") or {}
                code = "cancelled" if status["state"] == "cancelled" else str(error.get("code") or "internal")
                self._send(protocol.error(code, str(error.get("message") or code), error.get("file")))
                return
            self._cancel.wait(self.poll_interval) if not cancel_sent else time.sleep(self.poll_interval)

    def _download(self, result: dict) -> None:
        """Every file to a hidden temporary name first, then all renamed into place: an earlier result at
        the output is replaced only by a complete new one."""
        output = self._output()
        files = result.get("files") or []
        self._send(protocol.progress("downloading", 0.0, f"{len(files)} file(s)"))
        staged: list[tuple[Path, Path]] = []
        made_folders: list[Path] = []
        try:
            for index, entry in enumerate(files):
                target = output if index == 0 else output.parent / entry["save_as"]
                url = f"/v1/jobs/{self.job_id}/result" if index == 0 else \
                    f"/v1/jobs/{self.job_id}/files/{entry['path']}"
                if not target.parent.exists():
                    made_folders.append(target.parent)
                temp = target.with_name(f"{TEMP_PREFIX}dl_{target.name}")
                self._retrying("downloading", lambda: self.client.download(url, temp))
                staged.append((temp, target))
                self._send(protocol.progress("downloading", (index + 1) / len(files), target.name))
            for temp, target in staged:
                os.replace(temp, target)
        except BaseException:
            for temp, _ in staged:
                temp.unlink(missing_ok=True)
            for folder in made_folders:
                shutil.rmtree(folder, ignore_errors=True)
            raise
        self._downloaded = [target for _, target in staged] + made_folders
        folders = sorted({target.parent for _, target in staged[1:]})
        summary = dict(result.get("summary") or {})
        summary["path"] = str(output)
        self._send(protocol.result(str(output), [str(output)] + [str(f) for f in folders], summary))

    def _remove_downloads(self) -> None:
        remove_paths(list(reversed(self._downloaded)))
        self._downloaded = []
