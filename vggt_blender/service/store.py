"""Jobs kept in the data folder, so that every process serving the API (one server, or many Ray replicas on a
shared folder) sees the same queue and the same states, and a restarted server knows what happened.

    <data>/uploads/<random>/      an upload being received (never queued; removed if it fails)
    <data>/jobs/<id>/status.json  the job's state, replaced atomically by its one writer at a time
    <data>/jobs/<id>/input/       the uploaded photos, video or sequence frames (safe names)
    <data>/jobs/<id>/out/         what the worker wrote
    <data>/jobs/<id>/cancel       marker: someone asked to cancel it
    <data>/queue/<id>             one empty file per queued job; ids sort in arrival order (given at queueing,
                                  under <data>/queue.lock)
    <data>/running/<id>@<owner>   a claimed job; its mtime is the owner's heartbeat
    <data>/runners/<owner>.json   each runner's state (loading, ready, error), device and job, refreshed often

Claiming is a rename of queue/<id> (atomic, also on NFS): of several runners only one wins. The status file
of a queued job is written by whoever takes it off the queue (a runner, or a cancel), of a running one by its
owner only.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import socket
import threading
import time
from pathlib import Path
from typing import Any, Iterator

from ..errors import VGGTError
from ..io.atomic import atomic_write

QUEUED, RUNNING, DONE, FAILED, CANCELLED = "queued", "running", "done", "failed", "cancelled"
FINAL_STATES = (DONE, FAILED, CANCELLED)
JOB_ID = re.compile(r"[0-9a-f]{30}")
MAX_MESSAGES = 200  # the last messages kept in a job's status
HEARTBEAT_SECONDS = 5.0
STALE_SECONDS = 60.0  # a running job whose owner has not beaten for this long is an orphan
UPLOAD_STALE_SECONDS = 3600.0


class StoreError(VGGTError):
    code = "store_failed"


def _owner_host() -> str:
    return re.sub(r"[^A-Za-z0-9.-]", "-", socket.gethostname())[:60] or "host"


def make_owner(runner: str) -> str:
    """`host~pid~runner`: who holds a claim (the runner name is made file-name safe)."""
    return f"{_owner_host()}~{os.getpid()}~{re.sub(r'[^A-Za-z0-9.-]', '-', runner)}"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OSError:
        return False
    return True


def _owner_dead(owner: str) -> bool:
    """True for an owner on this host whose process has ended (another host's owner: only by its heartbeat)."""
    parts = owner.split("~")
    if len(parts) != 3 or parts[0] != _owner_host() or not parts[1].isdigit():
        return False
    return int(parts[1]) != os.getpid() and not _pid_alive(int(parts[1]))


@contextlib.contextmanager
def _folder_lock(path: Path) -> Iterator[None]:
    """An exclusive lock on `path` between processes where the system has flock (not Windows, where one
    process serves the folder: the caller's thread lock is enough)."""
    try:
        import fcntl
    except ImportError:
        yield
        return
    with open(path, "a+b") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def new_status(job_id: str, photos: list[str], stored: list[str], options: dict) -> dict:
    """A queued job's status: `photos` as the client named them, `stored` the safe names they were saved as."""
    return {"id": job_id, "state": QUEUED, "stage": "queued", "progress": 0.0, "message": "waiting in the queue",
            "messages": [], "created": time.time(), "started": None, "finished": None, "photos": photos,
            "options": options, "stored_names": stored, "error": None, "result": None, "runner": None, "version": 1,
            "cancel_requested": False}


class JobStore:
    def __init__(self, root: str | os.PathLike[str], keep_seconds: float = 86400.0) -> None:
        self.root = Path(root).expanduser().resolve()
        self.keep_seconds = float(keep_seconds)
        self.jobs = self.root / "jobs"
        self.queue = self.root / "queue"
        self.running = self.root / "running"
        self.uploads = self.root / "uploads"
        self.runner_states = self.root / "runners"
        for folder in (self.jobs, self.queue, self.running, self.uploads, self.runner_states):
            folder.mkdir(parents=True, exist_ok=True)
        self._id_lock = threading.Lock()
        self._last_stamp = 0

    # ---- paths (a job id is checked before it becomes part of a path) ----

    @staticmethod
    def valid_id(job_id: str) -> bool:
        return bool(JOB_ID.fullmatch(job_id or ""))

    def folder(self, job_id: str) -> Path:
        if not self.valid_id(job_id):
            raise StoreError(f"not a job id: {job_id!r}")
        return self.jobs / job_id

    def out_folder(self, job_id: str) -> Path:
        return self.folder(job_id) / "out"

    # ---- receiving ----

    def new_upload(self) -> Path:
        """A fresh upload folder (with input/ inside). The job id comes only when the upload is complete and
        joins the queue (`submit`), so ids sort in the order jobs became runnable, not the order uploads began."""
        folder = self.uploads / secrets.token_hex(15)
        (folder / "input").mkdir(parents=True)
        return folder

    def discard_upload(self, folder: Path) -> None:
        if folder.parent == self.uploads:
            shutil.rmtree(folder, ignore_errors=True)

    def submit(self, upload: Path, photos: list[str], stored: list[str], options: dict) -> str:
        """Make a received upload a queued job: a time-ordered id, its status, its folder, then its place in
        the queue. Returns the id."""
        # Id and queue entry together, under a lock every process serving this folder takes (Ray replicas
        # too, on one host): a runner never sees a later id queued before an earlier one.
        with self._id_lock, _folder_lock(self.root / "queue.lock"):
            job_id = f"{max(time.time_ns() // 1000, self._last_stamp + 1):014x}{secrets.token_hex(8)}"
            self._last_stamp = int(job_id[:14], 16)
            self._write(upload / "status.json", new_status(job_id, photos, stored, options))
            os.replace(upload, self.folder(job_id))
            (self.queue / job_id).touch()
        return job_id

    # ---- reading ----

    def queue_ids(self) -> list[str]:
        try:
            return sorted(name for name in os.listdir(self.queue) if self.valid_id(name))
        except OSError:
            return []

    def queue_length(self) -> int:
        return len(self.queue_ids())

    def read(self, job_id: str) -> dict | None:
        """The job's status with its queue position (0 = next), or None for an unknown job."""
        if not self.valid_id(job_id):
            return None
        try:
            status = json.loads((self.folder(job_id) / "status.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        status["position"] = None
        if status.get("state") == QUEUED:
            ids = self.queue_ids()
            status["position"] = ids.index(job_id) if job_id in ids else 0
        status.pop("options", None)
        status.pop("stored_names", None)
        return status

    def _read_raw(self, job_id: str) -> dict:
        return json.loads((self.folder(job_id) / "status.json").read_text(encoding="utf-8"))

    def options(self, job_id: str) -> dict:
        return dict(self._read_raw(job_id).get("options") or {})

    # ---- writing ----

    def _write(self, path: Path, status: dict) -> None:
        data = json.dumps(status, ensure_ascii=True).encode("ascii")
        with atomic_write(path, StoreError, "the job status") as fh:
            fh.write(data)

    def update(self, job_id: str, **changes: Any) -> dict:
        """Change fields of the job's status (the caller owns the job) and write it; returns the new status."""
        status = self._read_raw(job_id)
        message = changes.pop("add_message", None)
        status.update(changes)
        if message is not None:
            messages = status.setdefault("messages", [])
            seq = (messages[-1]["seq"] + 1) if messages else 1
            messages.append({"seq": seq, **message})
            del messages[:-MAX_MESSAGES]
        status["version"] = int(status.get("version", 0)) + 1
        self._write(self.folder(job_id) / "status.json", status)
        return status

    def finish(self, job_id: str, state: str, **changes: Any) -> dict:
        return self.update(job_id, state=state, finished=time.time(), **changes)

    # ---- claiming and running ----

    def claim_next(self, owner: str) -> str | None:
        """Take the oldest queued job for `owner`; None when the queue is empty."""
        for job_id in self.queue_ids():
            try:
                os.rename(self.queue / job_id, self.running / f"{job_id}@{owner}")
            except OSError:
                continue  # another runner (or a cancel) took it first
            return job_id
        return None

    def heartbeat(self, job_id: str, owner: str) -> None:
        try:
            os.utime(self.running / f"{job_id}@{owner}")
        except OSError:
            pass

    def release(self, job_id: str, owner: str) -> None:
        try:
            os.unlink(self.running / f"{job_id}@{owner}")
        except OSError:
            pass

    def request_cancel(self, job_id: str) -> dict | None:
        """Ask a job to stop. A queued job is cancelled here and now; a running one by its owner, which
        watches for the marker. Returns the status after the request (None for an unknown job)."""
        status = self.read(job_id)
        if status is None or status["state"] in FINAL_STATES:
            return status
        (self.folder(job_id) / "cancel").touch()
        try:
            os.unlink(self.queue / job_id)  # wins the job only if no runner has claimed it
        except OSError:
            pass
        else:
            self.finish(job_id, CANCELLED, stage="cancelled", message="cancelled before it started",
                        cancel_requested=True,
                        error={"code": "cancelled", "message": "cancelled before it started", "file": None},
                        add_message={"type": "error", "code": "cancelled", "message": "cancelled"})
        return self.read(job_id)

    def cancel_requested(self, job_id: str) -> bool:
        return (self.folder(job_id) / "cancel").exists()

    # ---- runners: what every process serving the API reports about all of them ----

    def publish_runner(self, owner: str, info: dict) -> None:
        self._write(self.runner_states / f"{owner}.json", {**info, "owner": owner, "beat": time.time()})

    def withdraw_runner(self, owner: str) -> None:
        try:
            os.unlink(self.runner_states / f"{owner}.json")
        except OSError:
            pass

    def runners(self) -> list[dict]:
        """Every runner that has reported lately (a runner refreshes its entry every few seconds), oldest
        owner name first; entries of runners gone quiet are removed."""
        found = []
        now = time.time()
        try:
            names = sorted(os.listdir(self.runner_states))
        except OSError:
            return found
        for name in names:
            path = self.runner_states / name
            if not name.endswith(".json") or name.startswith("."):
                continue
            try:
                info = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue
            if now - float(info.get("beat", 0)) > STALE_SECONDS / 2 or _owner_dead(str(info.get("owner", ""))):
                try:
                    path.unlink()
                except OSError:
                    pass
                continue
            found.append(info)
        return found

    # ---- recovery and retention ----

    def recover_orphans(self, own_owners: set[str] = frozenset()) -> list[str]:
        """Fail the running jobs whose owner is gone (a killed server or replica): their partial output is
        removed, so nothing half-written is ever served. Returns their ids."""
        recovered = []
        now = time.time()
        try:
            entries = os.listdir(self.running)
        except OSError:
            return recovered
        for entry in entries:
            job_id, _, owner = entry.partition("@")
            if not self.valid_id(job_id) or owner in own_owners:
                continue
            path = self.running / entry
            try:
                mtime = path.stat().st_mtime
            except OSError:
                continue
            if not (now - mtime > STALE_SECONDS or _owner_dead(owner)):
                continue
            try:
                os.rename(path, self.running / f".orphan-{entry}")  # one recoverer wins
            except OSError:
                continue
            try:
                shutil.rmtree(self.out_folder(job_id), ignore_errors=True)
                text = "the server stopped while this job was running; submit it again"
                self.finish(job_id, FAILED, stage="failed", message=text,
                            error={"code": "server_stopped", "message": text, "file": None},
                            add_message={"type": "error", "code": "server_stopped", "message": text})
            except (OSError, ValueError, StoreError):
                pass
            finally:
                try:
                    os.unlink(self.running / f".orphan-{entry}")
                except OSError:
                    pass
            recovered.append(job_id)
        return recovered

    def cleanup(self, now: float | None = None) -> list[str]:
        """Remove finished jobs older than the retention time, and uploads abandoned long ago."""
        now = time.time() if now is None else now
        removed = []
        for entry in self._list(self.jobs):
            try:
                status = self._read_raw(entry)
            except (OSError, ValueError, StoreError):
                continue
            finished = status.get("finished")
            if status.get("state") in FINAL_STATES and finished and now - finished > self.keep_seconds:
                shutil.rmtree(self.jobs / entry, ignore_errors=True)
                removed.append(entry)
            elif status.get("state") == QUEUED and now - float(status.get("created") or now) > STALE_SECONDS:
                self._requeue_if_lost(entry)
        for entry in self._list(self.uploads):
            try:
                age = now - (self.uploads / entry).stat().st_mtime
            except OSError:
                continue
            if age > UPLOAD_STALE_SECONDS:
                shutil.rmtree(self.uploads / entry, ignore_errors=True)
        return removed

    def _requeue_if_lost(self, job_id: str) -> None:
        """A queued job with no queue entry and no claim (its server stopped between the two steps of
        `submit`) goes back into the queue, in its place (its id)."""
        if (self.queue / job_id).exists() or self.cancel_requested(job_id):
            return
        try:
            if any(name.startswith(job_id + "@") or name.startswith(".orphan-" + job_id)
                   for name in os.listdir(self.running)):
                return
        except OSError:
            return
        (self.queue / job_id).touch()

    def _list(self, folder: Path) -> list[str]:
        try:
            return [name for name in os.listdir(folder) if self.valid_id(name)]
        except OSError:
            return []
