"""Shared by the service tests: a real `python -m vggt_blender serve` on 127.0.0.1 (a free port) and a few
raw-HTTP helpers (stdlib only: the Blender-side test imports them too)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HOOKS = Path(__file__).resolve().parent / "worker_hooks"
TINY_CONFIG = Path(__file__).resolve().parent / "fixtures" / "parity" / "tiny" / "config.json"
TOKEN = "test-token-0123456789abcdef"
START_TIMEOUT = 180.0


class Server:
    """A serve process; `url` once it listens. `stop()` ends it (SIGTERM), `kill()` hard (SIGKILL)."""

    def __init__(self, data_dir: Path, weights: Path, *args: str, token: str | None = TOKEN, port: int = 0,
                 env: dict[str, str] | None = None, python: str = sys.executable,
                 command: tuple[str, ...] = ("vggt_blender", "serve"), replicas: int = 1) -> None:
        """`command`: the module and its first arguments (Ray Serve: ("vggt_blender.service.ray_app",))."""
        self.data_dir = data_dir
        self.replicas = replicas
        full_env = dict(os.environ)
        full_env.pop("VGGT_WEIGHTS", None)
        full_env.update({"PYTHONPATH": os.pathsep.join([str(ROOT), str(HOOKS)]), "OMP_NUM_THREADS": "1",
                         "XDG_CACHE_HOME": str(data_dir.parent / "cache")})
        full_env.pop("VGGT_SERVER_TOKEN", None)
        if token:
            full_env["VGGT_SERVER_TOKEN"] = token
        full_env.update(env or {})
        self.token = token
        self.lines: list[str] = []
        self.process = subprocess.Popen(
            [python, "-m", *command, "--port", str(port), "--data-dir", str(data_dir),
             "--weights", str(weights), "--model", str(TINY_CONFIG), "--device", "cpu", *args],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=full_env, cwd=str(data_dir.parent))
        self._listening = threading.Event()
        self.url = ""
        threading.Thread(target=self._read, daemon=True).start()
        if not self._listening.wait(START_TIMEOUT) or not self.url:
            self.kill()
            raise RuntimeError("the server did not start:\n" + "\n".join(self.lines))

    def _read(self) -> None:
        assert self.process.stderr is not None
        for raw in iter(self.process.stderr.readline, b""):
            line = raw.decode("utf-8", "replace").rstrip()
            self.lines.append(line)
            found = re.search(r"serving on (http://\S+)", line)
            if found:
                self.url = found.group(1)
                self._listening.set()
        self._listening.set()

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    def wait_ready(self, timeout: float = START_TIMEOUT) -> dict:
        """Health once every replica's runner has loaded its model (or one has failed)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status, body = call(self, "GET", "/v1/health", auth=False)
            states = [d.get("state") for d in body.get("devices") or []]
            if "error" in states or (len(states) >= self.replicas and "loading" not in states):
                return body
            time.sleep(0.3)
        raise TimeoutError("the model did not load")

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.kill()
            return -9

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(30)


def call(server: Server, method: str, path: str, body: bytes | None = None, headers: dict | None = None,
         auth: bool | str = True, timeout: float = 60.0) -> tuple[int, dict]:
    """One request; (status, JSON body or {"_raw": bytes})."""
    request = urllib.request.Request(server.url + path, data=body, method=method, headers=dict(headers or {}))
    token = server.token if auth is True else (auth or None)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            status, data = response.status, response.read()
    except urllib.error.HTTPError as exc:
        status, data = exc.code, exc.read()
    try:
        return status, json.loads(data)
    except ValueError:
        return status, {"_raw": data}


def multipart(photos: list[tuple[str, bytes]], options: dict | str | None = None,
              boundary: str = "testboundary7f3a", video: tuple[str, bytes] | None = None) -> tuple[bytes, dict]:
    parts = []
    if options is not None:
        text = options if isinstance(options, str) else json.dumps(options)
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="options"\r\n\r\n{text}\r\n'.encode())
    files = [("photos", name, data) for name, data in photos] + ([("video", *video)] if video else [])
    for part, name, data in files:
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{part}"; filename="{name}"\r\n'
                     f"Content-Type: application/octet-stream\r\n\r\n".encode() + data + b"\r\n")
    body = b"".join(parts) + f"--{boundary}--\r\n".encode()
    return body, {"Content-Type": f"multipart/form-data; boundary={boundary}"}


def submit(server: Server, photos: list[tuple[str, bytes]], options: dict | str | None = None,
           auth: bool | str = True, video: tuple[str, bytes] | None = None) -> tuple[int, dict]:
    body, headers = multipart(photos, options, video=video)
    return call(server, "POST", "/v1/jobs", body, headers, auth=auth)


def wait_for(server: Server, job_id: str, states: tuple[str, ...] = ("done", "failed", "cancelled"),
             timeout: float = 240.0, stage: str | None = None) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status, body = call(server, "GET", f"/v1/jobs/{job_id}")
        assert status == 200, body
        if body["state"] in states and (stage is None or body["stage"] == stage):
            return body
        time.sleep(0.1)
    raise TimeoutError(f"job {job_id} stayed {body['state']} ({body['stage']})")


def follow(job, timeout: float = 240.0) -> list[dict]:  # noqa: ANN001 - a started Job
    """Poll a started job until it ends (or `timeout`); every message it sent, in order."""
    seen: list[dict] = []
    deadline = time.monotonic() + timeout
    while not job.finished and time.monotonic() < deadline:
        seen.extend(job.poll())
        time.sleep(0.1)
    seen.extend(job.poll())
    return seen
