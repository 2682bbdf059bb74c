"""One runner per device: takes queued jobs in arrival order, one at a time, and runs them on its worker.

The worker (worker_session.py) keeps the model loaded; the runner warms it up at start with a one-photo job so
that the first real job does not wait for the weights (health says "loading" meanwhile).
"""

from __future__ import annotations

import os
import shutil
import struct
import threading
import time
import zlib
from pathlib import Path
from typing import Any

from . import store as st
from .config import ServiceConfig
from .results import localise
from .worker_session import WorkerGone, WorkerSession

LOADING, READY, ERROR = "loading", "ready", "error"
STATUS_WRITE_INTERVAL = 0.25  # seconds between progress writes of one job's status (stage changes always)
MAINTENANCE_INTERVAL = 5.0  # seconds between looks for orphaned jobs
CLEANUP_INTERVAL = 60.0  # seconds between removals of expired jobs


def write_png(path: Path, width: int = 64, height: int = 48) -> None:
    """A small RGB gradient PNG (stdlib only): the warm-up photo."""
    rows = b"".join(b"\x00" + bytes(v for x in range(width) for v in (x * 4 % 256, y * 5 % 256, (x + y) * 2 % 256))
                    for y in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows))
                     + chunk(b"IEND", b""))


class DeviceRunner:
    def __init__(self, store: st.JobStore, config: ServiceConfig, device: str, name: str) -> None:
        self.store = store
        self.config = config
        self.device = device
        self.name = name
        self.owner = st.make_owner(name)
        self.state = LOADING if config.warm_up else READY
        self.error: dict | None = None
        self.current: str | None = None
        self.wake = threading.Event()
        self._stop = threading.Event()
        self.log = store.root / "logs" / f"worker-{name}.log"
        self.log.parent.mkdir(parents=True, exist_ok=True)
        self.session = WorkerSession(config.python)
        self._thread = threading.Thread(target=self._loop, daemon=True, name=f"runner-{name}")
        self._last_maintenance = 0.0
        self._last_cleanup = 0.0

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 15.0) -> None:
        self._stop.set()
        self.wake.set()
        self.session.close(timeout)
        self._thread.join(timeout)
        self.store.withdraw_runner(self.owner)

    def info(self) -> dict:
        return {"name": self.name, "device": self.device, "state": self.state, "error": self.error,
                "job": self.current}

    def publish(self) -> None:
        """Say how this runner is, for every process serving the API (health, and whether jobs are taken)."""
        try:
            self.store.publish_runner(self.owner, self.info())
        except (OSError, st.StoreError):
            pass

    # ---- the loop ----

    def _loop(self) -> None:
        self.publish()
        if self.config.warm_up:
            self._warm_up()
        self.publish()
        while not self._stop.is_set():
            self._maintain()
            if self.state != READY:
                self._stop.wait(1.0)
                continue
            job_id = self.store.claim_next(self.owner)
            if job_id is None:
                self.wake.wait(0.5)
                self.wake.clear()
                continue
            self.current = job_id
            self.publish()
            try:
                self._run_job(job_id)
            except Exception as exc:  # noqa: BLE001 - a job's failure never stops the runner
                self._fail(job_id, "internal", f"{type(exc).__name__}: {exc}")
            finally:
                self.store.release(job_id, self.owner)
                self.current = None
                self.publish()

    def _maintain(self) -> None:
        now = time.monotonic()
        if now - self._last_maintenance < MAINTENANCE_INTERVAL:
            return
        self._last_maintenance = now
        self.publish()
        self.store.recover_orphans({self.owner})
        if now - self._last_cleanup >= CLEANUP_INTERVAL:
            self._last_cleanup = now
            self.store.cleanup()

    def _warm_up(self) -> None:
        folder = self.store.root / "warmup" / self.name
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        photo = folder / "warmup.png"
        write_png(photo)
        request = {"images": [str(photo)], "output": str(folder / "warmup.npz"), **self._model_fields()}
        try:
            final = self.session.run(request, self.log, lambda _m: None, lambda: self._stop.is_set())
        except WorkerGone as exc:
            final = {"type": "error", "code": "internal", "message": f"{exc}: {exc.log_tail}"}
        shutil.rmtree(folder, ignore_errors=True)
        if final.get("type") == "result":
            self.state = READY
        else:
            self.state = ERROR
            self.error = {"code": final.get("code", "internal"), "message": final.get("message", "")}

    def _model_fields(self) -> dict:
        return {"weights": self.config.weights, "device": self.device, "config": self.config.model}

    # ---- one job ----

    def _run_job(self, job_id: str) -> None:
        store = self.store
        folder = store.folder(job_id)
        status = store._read_raw(job_id)
        if store.cancel_requested(job_id):
            store.finish(job_id, st.CANCELLED, stage="cancelled", message="cancelled before it started",
                         cancel_requested=True,
                         error={"code": "cancelled", "message": "cancelled before it started", "file": None})
            return
        options = status["options"]
        stored = status["stored_names"]
        sent = status["photos"]
        out = folder / "out"
        shutil.rmtree(out, ignore_errors=True)
        out.mkdir()
        from .names import safe_name
        from .results import client_stem

        out_name = safe_name(client_stem(options["client_output"]) + ".npz", "reconstruction")
        try:
            inputs, stored_paths = job_inputs(folder / "input", stored, options)
        except OSError as exc:  # the job's own folder: say what failed without the server's paths
            self._fail(job_id, "store_failed", f"cannot prepare the job's frames ({exc.strerror or 'error'})")
            return
        request = {"images": inputs, "output": str(out / out_name), "precision": options["precision"],
                   "mode": options["mode"], "fast_path": options["fast_path"],
                   "refine": options.get("refine", False), **options.get("shot", {}), **self._model_fields()}
        store.update(job_id, state=st.RUNNING, started=time.time(), runner=self.owner, stage="starting",
                     progress=0.0, message=f"on {self.device}")
        names = list(sent)
        if options.get("sequence"):  # the worker's messages name the sequence by its pattern
            stored_paths, names = [*stored_paths, Path(inputs[0])], [*names, options["sequence"]["pattern"]]
        public = _Publisher(folder, stored_paths, names)
        last_write = [0.0, ""]

        def on_message(message: dict) -> None:
            kind = message.get("type")
            if kind == "progress":
                stage = str(message.get("stage", ""))
                now = time.monotonic()
                if stage == last_write[1] and now - last_write[0] < STATUS_WRITE_INTERVAL:
                    return
                last_write[:] = [now, stage]
                store.update(job_id, stage=stage, progress=float(message.get("fraction", 0.0)),
                             message=public.text(message.get("message", "")))
            elif kind in ("log", "warning"):
                store.update(job_id, add_message={"type": kind, "message": public.text(message.get("message", ""))})

        try:
            final = self.session.run(request, folder / "worker.log", on_message,
                                     lambda: store.cancel_requested(job_id),
                                     tick=lambda: store.heartbeat(job_id, self.owner))
        except WorkerGone as exc:
            shutil.rmtree(out, ignore_errors=True)
            tail = exc.log_tail.strip().splitlines()
            if store.cancel_requested(job_id):
                self._cancelled(job_id)
                return
            self._fail(job_id, "internal", f"the worker process stopped unexpectedly (exit code {exc.returncode})"
                       + (f": {public.text(tail[-1])}" if tail else ""))
            return
        if final.get("type") == "error":
            shutil.rmtree(out, ignore_errors=True)
            if final.get("code") == "cancelled":
                self._cancelled(job_id)
            else:
                self._fail(job_id, str(final.get("code", "internal")), public.text(final.get("message", "")),
                           public.file(final.get("file")))
            return
        if store.cancel_requested(job_id):  # the result came in as the cancel went out: the cancel wins
            shutil.rmtree(out, ignore_errors=True)
            self._cancelled(job_id)
            return
        files = localise(out / out_name, options["client_images"], options["client_output"],
                         options.get("sequence"))
        summary = dict(final.get("summary") or {})
        summary["path"] = files[0]["path"]
        store.finish(job_id, st.DONE, stage="done", progress=1.0, message="done",
                     result={"files": files, "summary": summary},
                     add_message={"type": "result", "message": f"{summary.get('images')} photo(s) reconstructed"})

    def _cancelled(self, job_id: str) -> None:
        self.store.finish(job_id, st.CANCELLED, stage="cancelled", message="cancelled",
                          error={"code": "cancelled", "message": "cancelled", "file": None},
                          add_message={"type": "error", "code": "cancelled", "message": "cancelled"})

    def _fail(self, job_id: str, code: str, message: str, file: str | None = None) -> None:
        self.store.finish(job_id, st.FAILED, stage="failed", message=message,
                          error={"code": code, "message": message, "file": file},
                          add_message={"type": "error", "code": code, "message": message, "file": file})


def job_inputs(input_folder: Path, stored: list[str], options: dict) -> tuple[list[str], list[Path]]:
    """The worker request's `images` for a job, and the path each uploaded file has when it runs. Photos and a
    video are used where they were saved. The frames of an image sequence are first renamed by the client's
    frame numbers (frames/frame.00000012.exr), so the worker reads one numbered sequence whose gaps are the
    client's gaps."""
    sequence = options.get("sequence")  # only a sequence job has one (job_options.py)
    if sequence is None:
        paths = [input_folder / name for name in stored]
        return [str(p) for p in paths], paths
    frames = input_folder / "frames"
    frames.mkdir(exist_ok=True)
    ending = stored[0].rpartition(".")[2]
    paths = []
    for name, number in zip(stored, sequence["numbers"]):
        target = frames / f"frame.{int(number):08d}.{ending}"
        if not target.exists():  # a job taken again after its runner died finds them renamed already
            os.replace(input_folder / name, target)
        paths.append(target)
    return [str(frames / f"frame.%08d.{ending}")], paths


class _Publisher:
    """Server paths out of what a client sees: a stored photo becomes the name it was uploaded as, and the
    job's folder disappears from other paths."""

    def __init__(self, folder: Path, stored_paths: list[Path], sent: list[str]) -> None:
        self.pairs = sorted(((str(path), n) for path, n in zip(stored_paths, sent)),
                            key=lambda pair: -len(pair[0]))
        self.folder = str(folder) + "/"

    def text(self, text: Any) -> str:
        text = str(text)
        for path, name in self.pairs:
            text = text.replace(path, name)
        return text.replace(self.folder, "")

    def file(self, file: Any) -> str | None:
        if not file:
            return None
        for path, name in self.pairs:
            if str(file) == path:
                return name
        return self.text(file)
