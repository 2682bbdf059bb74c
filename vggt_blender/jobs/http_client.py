"""A client for the reconstruction service's HTTP API (docs/SERVICE.md), stdlib only: Blender imports it.

    client = ServiceClient("http://gpu-box:8765", token)
    client.health()                           # no token needed
    client.check_token()                      # ServiceError (401) for a wrong one
    job = client.submit(photo_paths, options, progress=lambda sent, total: ...)
    client.status(job["id"]); client.cancel(job["id"])
    client.download(f"/v1/jobs/{id}/result", target)   # atomic: the target is complete or absent

Errors are `ServiceError` (a VGGTError: one readable line): `status` is the HTTP status (0 when the server
could not be reached), `code` the server's error code, `connection_lost` tells a dropped connection (worth
retrying) from an answer (not).
"""

from __future__ import annotations

import http.client
import json
import mimetypes
import os
import secrets
import socket
import ssl
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterator
from urllib.parse import urlsplit

from ..errors import VGGTError
from ..io.atomic import TEMP_PREFIX, make_shareable

CHUNK = 256 * 1024


class ServiceError(VGGTError):
    code = "server_error"

    def __init__(self, message: str, status: int = 0, code: str | None = None, file: str | None = None,
                 connection_lost: bool = False) -> None:
        super().__init__(message, file)
        self.status = status
        self.connection_lost = connection_lost
        if code:
            self.code = code


def _quote(text: str) -> str:
    # A header parameter value: quotes and line breaks would end it early.
    return text.replace("\\", "\\\\").replace('"', "%22").replace("\r", " ").replace("\n", " ")


class Multipart:
    """A multipart/form-data body streamed from files, with its exact length known up front."""

    def __init__(self) -> None:
        self.boundary = f"vggt-{secrets.token_hex(16)}"
        self._parts: list[tuple[bytes, Path | bytes]] = []

    def add_field(self, name: str, value: str) -> None:
        head = (f'--{self.boundary}\r\nContent-Disposition: form-data; name="{_quote(name)}"\r\n'
                "Content-Type: application/json\r\n\r\n")
        self._parts.append((head.encode("utf-8"), value.encode("utf-8")))

    def add_file(self, name: str, path: Path, filename: str | None = None) -> None:
        filename = filename if filename is not None else path.name
        kind = mimetypes.guess_type(filename)[0] or "application/octet-stream"
        head = (f'--{self.boundary}\r\nContent-Disposition: form-data; name="{_quote(name)}"; '
                f'filename="{_quote(filename)}"\r\nContent-Type: {kind}\r\n\r\n')
        self._parts.append((head.encode("utf-8"), path))

    @property
    def content_type(self) -> str:
        return f"multipart/form-data; boundary={self.boundary}"

    def _tail(self) -> bytes:
        return f"--{self.boundary}--\r\n".encode("ascii")

    def length(self) -> int:
        total = len(self._tail())
        for head, body in self._parts:
            size = body.stat().st_size if isinstance(body, Path) else len(body)
            total += len(head) + size + 2
        return total

    def chunks(self) -> Iterator[bytes]:
        for head, body in self._parts:
            yield head
            if isinstance(body, Path):
                with open(body, "rb") as fh:
                    while block := fh.read(CHUNK):
                        yield block
            else:
                yield body
            yield b"\r\n"
        yield self._tail()


class ServiceClient:
    def __init__(self, url: str, token: str | None = None, timeout: float = 30.0) -> None:
        parts = urlsplit(url.strip().rstrip("/"))
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ServiceError(f"not a server address: {url!r} (expected http://host:port)", code="bad_request")
        self.url = f"{parts.scheme}://{parts.netloc}"
        self.scheme = parts.scheme
        self.host = parts.hostname
        self.port = parts.port or (443 if parts.scheme == "https" else 80)
        self.prefix = parts.path.rstrip("/")
        self.token = token or None
        self.timeout = timeout

    # ---- plumbing ----

    def _connection(self, timeout: float | None = None) -> http.client.HTTPConnection:
        timeout = self.timeout if timeout is None else timeout
        if self.scheme == "https":
            return http.client.HTTPSConnection(self.host, self.port, timeout=timeout,
                                               context=ssl.create_default_context())
        return http.client.HTTPConnection(self.host, self.port, timeout=timeout)

    def _headers(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        headers = {"Accept": "application/json", "User-Agent": "vggt-blender"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        headers.update(extra or {})
        return headers

    def _unreachable(self, exc: BaseException) -> ServiceError:
        reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
        return ServiceError(f"cannot reach the server at {self.url}: {reason}", connection_lost=True,
                            code="server_unreachable")

    def _error(self, status: int, body: bytes) -> ServiceError:
        try:
            error = json.loads(body.decode("utf-8"))["error"]
            code, message, file = str(error["code"]), str(error["message"]), error.get("file")
        except (ValueError, KeyError, TypeError, UnicodeDecodeError):
            code, message, file = f"http_{status}", body.decode("utf-8", "replace").strip()[:200] or "no detail", None
        return ServiceError(f"server {self.url}: {message} (HTTP {status})", status=status, code=code, file=file)

    def request(self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None,
                timeout: float | None = None) -> tuple[int, bytes]:
        connection = self._connection(timeout)
        try:
            try:
                connection.request(method, self.prefix + path, body=body, headers=self._headers(headers))
            except (BrokenPipeError, ConnectionResetError) as exc:
                # The server may have answered (413, 401...) and closed before the body was all sent.
                try:
                    response = connection.getresponse()
                except (OSError, http.client.HTTPException):
                    raise self._unreachable(exc) from None
            else:
                response = connection.getresponse()
            data = response.read()
            return response.status, data
        except ServiceError:
            raise
        except (OSError, http.client.HTTPException) as exc:
            raise self._unreachable(exc) from None
        finally:
            connection.close()

    def json(self, method: str, path: str, **kwargs: Any) -> dict:
        status, data = self.request(method, path, **kwargs)
        if status >= 400:
            raise self._error(status, data)
        try:
            return json.loads(data.decode("utf-8"))
        except (ValueError, UnicodeDecodeError):
            raise ServiceError(f"server {self.url}: the answer is not JSON (HTTP {status})", status=status) from None

    # ---- the API ----

    def health(self) -> dict:
        return self.json("GET", "/v1/health")

    def check_token(self) -> dict:
        return self.json("GET", "/v1/auth")

    def status(self, job_id: str) -> dict:
        return self.json("GET", f"/v1/jobs/{job_id}")

    def cancel(self, job_id: str) -> dict:
        return self.json("DELETE", f"/v1/jobs/{job_id}")

    def submit(self, photos: list[str], options: dict, progress: Callable[[int, int], None] | None = None,
               should_abort: Callable[[], bool] | None = None, video: str | None = None) -> dict:
        """Upload the photos (each under its own file name), or one video, and the options; returns the 202
        answer."""
        body = Multipart()
        body.add_field("options", json.dumps(options, ensure_ascii=True))
        for photo in photos:
            body.add_file("photos", Path(photo))
        if video is not None:
            body.add_file("video", Path(video))
        total = body.length()

        def counted() -> Iterator[bytes]:
            sent = 0
            for chunk in body.chunks():
                if should_abort is not None and should_abort():
                    raise ServiceError("the upload was cancelled", code="cancelled")
                sent += len(chunk)
                yield chunk
                if progress is not None:
                    progress(sent, total)

        try:
            return self.json("POST", "/v1/jobs", body=counted(),
                             headers={"Content-Type": body.content_type, "Content-Length": str(total)},
                             timeout=max(self.timeout, 120.0))
        except OSError as exc:  # a photo that cannot be read while streaming
            raise ServiceError(f"{exc.filename}: cannot read the file ({exc.strerror or exc})",
                               code="bad_video" if video else "bad_image", file=exc.filename) from None

    def download(self, path: str, target: Path, timeout: float | None = None) -> Path:
        """GET `path` into `target` through a temporary file beside it: `target` is whole or untouched."""
        connection = self._connection(timeout or max(self.timeout, 120.0))
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=TEMP_PREFIX, suffix=target.suffix, dir=target.parent)
        try:
            with os.fdopen(fd, "wb") as out:
                connection.request("GET", self.prefix + path, headers=self._headers({"Accept": "*/*"}))
                response = connection.getresponse()
                if response.status >= 400:
                    raise self._error(response.status, response.read())
                expected = response.getheader("Content-Length")
                received = 0
                while block := response.read(CHUNK):
                    out.write(block)
                    received += len(block)
                if expected is not None and received != int(expected):
                    raise ServiceError(f"the download of {target.name} broke off ({received} of {expected} bytes)",
                                       connection_lost=True, code="server_unreachable")
            make_shareable(tmp)
            os.replace(tmp, target)
            return target
        except (OSError, http.client.HTTPException, socket.timeout) as exc:
            raise self._unreachable(exc) from None
        finally:
            connection.close()
            if os.path.exists(tmp):
                os.unlink(tmp)
