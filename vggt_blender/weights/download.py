"""Checkpoint download with resume and verification (standard library only).

The file grows as `<dest>.part`; an interrupted transfer continues from where it stopped with an HTTP Range
request (within one call, up to `retries` times, and across calls since the .part file stays). Only a file
whose size and sha256 match is renamed to `dest`. Hugging Face sends the sha256 and size of LFS files in
`X-Linked-Etag` / `X-Linked-Size` on its redirect response, which we capture on the way.
Whether Blender may go online (`bpy.app.online_access`) is checked by the Blender side, not here.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import re
import socket
import ssl
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Callable

from .. import __version__
from .registry import Checkpoint, get_checkpoint
from ..errors import CancelledError, CheckpointError

ProgressCallback = Callable[[int, int], None]
TOKEN_ENVS = ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN")
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")


class DownloadError(CheckpointError):
    """A download that could not be completed (network, HTTP status, disk, verification). Its protocol code
    is "download_failed": the checkpoint itself is not known to be bad."""

    code = "download_failed"


def token_from_env() -> str | None:
    for name in TOKEN_ENVS:
        value = os.environ.get(name, "").strip()
        if value:
            return value
    return None


def _clean_etag(value: str | None) -> str | None:
    if not value:
        return None
    value = value.strip()
    if value.startswith("W/"):
        value = value[2:]
    value = value.strip('"').lower()
    # Git blobs have sha1 etags (40 hex); only LFS files carry their sha256.
    return value if _SHA256_RE.match(value) else None


class _Redirects(urllib.request.HTTPRedirectHandler):
    """Follows redirects, remembering the Hugging Face `X-Linked-*` headers of the redirect responses and
    sending the token only to the host it was meant for (never to the CDN a signed URL points at)."""

    def __init__(self, token: str | None, origin_host: str) -> None:
        super().__init__()
        self.token = token
        self.origin_host = origin_host
        self.linked_etag: str | None = None
        self.linked_size: int | None = None

    def redirect_request(self, req, fp, code, msg, headers, newurl):  # type: ignore[override]
        etag = headers.get("X-Linked-Etag")
        size = headers.get("X-Linked-Size")
        if etag and self.linked_etag is None:
            self.linked_etag = _clean_etag(etag)
        if size and self.linked_size is None and size.strip().isdigit():
            self.linked_size = int(size)
        new = super().redirect_request(req, fp, code, msg, headers, newurl)
        if new is not None and self.token and urllib.parse.urlsplit(newurl).hostname == self.origin_host:
            new.add_unredirected_header("Authorization", f"Bearer {self.token}")
        return new


def _repo_page(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    segs = parts.path.strip("/").split("/")
    if parts.hostname and parts.hostname.endswith("huggingface.co") and len(segs) >= 2:
        return f"https://huggingface.co/{segs[0]}/{segs[1]}"
    return url


def _manual_hint(url: str, dest: Path) -> str:
    return f"Download {url} yourself (e.g. with a browser) and save it as {dest}"


def _parse_content_range(value: str | None) -> tuple[int, int | None] | None:
    """'bytes 100-199/1000' -> (100, 1000); total may be '*'."""
    if not value:
        return None
    m = re.match(r"\s*bytes\s+(\d+)-(\d+)/(\d+|\*)", value)
    if not m:
        return None
    return int(m.group(1)), (None if m.group(3) == "*" else int(m.group(3)))


def _hash_prefix(path: Path, chunk_size: int) -> "hashlib._Hash":
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(chunk_size):
            h.update(chunk)
    return h


def _kept(part: Path) -> str:
    """The true state of the partial file, for messages."""
    size = part.stat().st_size if part.exists() else 0
    if size == 0:
        part.unlink(missing_ok=True)
        return "nothing was kept, the next attempt starts from the beginning"
    return f"{part.name} keeps {size:,} bytes and the next attempt resumes there"


class _Interrupted(Exception):
    """The connection ended before the whole file arrived; the .part file holds what came."""


def download_checkpoint(
    url: str,
    dest: str | os.PathLike[str],
    token: str | None = None,
    expected_sha256: str | None = None,
    expected_size: int | None = None,
    progress: ProgressCallback | None = None,
    chunk_size: int = 1 << 20,
    retries: int = 3,
    timeout: float = 30.0,
    should_cancel: Callable[[], bool] | None = None,
    retry_delay: float = 1.0,
    validate: Callable[[Path], str | None] | None = None,
) -> Path:
    """Download `url` to `dest`, resuming `<dest>.part` if present, and return `dest`.

    `token` (default: $HF_TOKEN) is sent as a Bearer token to the URL's host only. The expected sha256 and
    size come from the arguments, else from the server (X-Linked-Etag / X-Linked-Size, Content-Range,
    Content-Length). `progress(done_bytes, total_bytes)` is called per chunk (total 0 when unknown).
    `should_cancel()` returning True stops with CancelledError and keeps the .part file for a later resume.
    `validate(part)` may return why the finished file is not what was asked for (e.g. an HTML page served with
    status 200); the file is then deleted, never renamed to `dest`. `timeout` bounds the wait for the
    connection and for each chunk, so a stalled transfer ends (and is retried) instead of hanging.
    Raises DownloadError (a CheckpointError) with a message saying what to do.
    """
    dest = Path(dest)
    part = dest.with_suffix(dest.suffix + ".part")
    token = token or token_from_env()
    expected_sha256 = expected_sha256.lower() if expected_sha256 else None
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DownloadError(f"{dest.parent}: cannot create the folder: {exc.strerror or exc}",
                            file=str(dest)) from exc

    attempts = 0
    while True:
        try:
            digest = _transfer(url, part, dest, token, expected_sha256, expected_size, progress, chunk_size,
                               timeout, should_cancel)
            break
        except _Interrupted as exc:
            attempts += 1
            if attempts > retries:
                raise DownloadError(f"{dest}: the download of {url} was interrupted ({exc}); {_kept(part)}. "
                                    + _manual_hint(url, dest), file=str(dest)) from exc
            time.sleep(retry_delay * attempts)

    problem = validate(part) if validate is not None else None
    if problem is not None:
        part.unlink(missing_ok=True)
        raise DownloadError(f"{dest}: what {urllib.parse.urlsplit(url).hostname} sent is not the checkpoint "
                            f"({problem}); nothing was saved. " + _manual_hint(url, dest), file=str(dest))

    try:
        os.replace(part, dest)
    except OSError as exc:
        raise DownloadError(f"{dest}: cannot rename the verified download {part.name} to it: "
                            f"{exc.strerror or exc}", file=str(dest)) from exc
    # Spare the provenance step from hashing 5 GB again.
    from .discovery import remember_sha256

    remember_sha256(dest, digest)
    return dest


def _open(url: str, token: str | None, offset: int, timeout: float,
          redirects: _Redirects) -> http.client.HTTPResponse:
    """Open `url` (from byte `offset`); `redirects` records the X-Linked-* headers even when this raises."""
    opener = urllib.request.build_opener(redirects)
    req = urllib.request.Request(url, headers={"User-Agent": f"vggt_blender/{__version__}",
                                               "Accept-Encoding": "identity"})
    if token:
        req.add_unredirected_header("Authorization", f"Bearer {token}")
    if offset:
        req.add_header("Range", f"bytes={offset}-")
    return opener.open(req, timeout=timeout)


def _http_error(exc: urllib.error.HTTPError, url: str, dest: Path, token: str | None) -> DownloadError:
    page = _repo_page(url)
    if exc.code in (401, 403):
        if token:
            why = (f"the server refused the Hugging Face token (HTTP {exc.code}). Check that the token is valid "
                   f"and that this account has accepted the licence at {page}")
        else:
            why = (f"the server asks for authorisation (HTTP {exc.code}). This checkpoint is gated: accept its "
                   f"licence at {page}, create a read token at https://huggingface.co/settings/tokens and pass it "
                   f"(--token or the HF_TOKEN environment variable)")
        return DownloadError(f"{dest}: cannot download {url}: {why}", file=str(dest))
    if exc.code == 404:
        return DownloadError(f"{dest}: {url} was not found on the server (HTTP 404)", file=str(dest))
    return DownloadError(f"{dest}: downloading {url} failed: HTTP {exc.code} {exc.reason}. "
                         + _manual_hint(url, dest), file=str(dest))


def _transfer(url: str, part: Path, dest: Path, token: str | None, expected_sha256: str | None,
              expected_size: int | None, progress: ProgressCallback | None, chunk_size: int, timeout: float,
              should_cancel: Callable[[], bool] | None) -> str:
    """One request: append to `part`, then verify. Returns the sha256; raises _Interrupted to resume."""
    offset = part.stat().st_size if part.exists() else 0
    if expected_size is not None and offset > expected_size:
        part.unlink()
        offset = 0
    redirects = _Redirects(token, urllib.parse.urlsplit(url).hostname or "")
    try:
        resp = _open(url, token, offset, timeout, redirects)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and offset:
            # Range beyond the end: the .part may be complete (or belong to another file). Check it against
            # what the server says the file is; never rename a .part that nothing vouches for.
            return _verify_complete_part(part, dest, url, exc, redirects, expected_sha256, expected_size,
                                         chunk_size)
        raise _http_error(exc, url, dest, token) from exc
    except (urllib.error.URLError, socket.timeout, TimeoutError, ConnectionError, http.client.HTTPException) as exc:
        raise _network_error(exc, url, dest, timeout) from exc

    with resp:
        status = resp.status
        length = resp.headers.get("Content-Length")
        length = int(length) if length and length.isdigit() else None
        total: int | None = None
        if status == 206:
            rng = _parse_content_range(resp.headers.get("Content-Range"))
            if rng is None or rng[0] != offset:
                # A range we did not ask for: start again from zero on the next attempt.
                part.unlink(missing_ok=True)
                raise _Interrupted("the server answered with an unexpected byte range")
            total = rng[1]
        else:
            # 200: the server sent the whole file (it ignored our Range, or there was none).
            offset = 0
            total = length
        expected_sha256 = expected_sha256 or redirects.linked_etag or _clean_etag(resp.headers.get("X-Linked-Etag"))
        if expected_size is None:
            linked = redirects.linked_size
            if linked is None:
                size_header = resp.headers.get("X-Linked-Size", "")
                linked = int(size_header) if size_header.isdigit() else None
            expected_size = linked if linked is not None else total
        if expected_size is not None and total is not None and total != expected_size:
            raise DownloadError(f"{dest}: the server reports {total:,} bytes for {url}, expected "
                                f"{expected_size:,}", file=str(dest))
        grand_total = expected_size or 0

        hasher = _hash_prefix(part, chunk_size) if offset else hashlib.sha256()
        done = offset
        if progress is not None:
            progress(done, grand_total)
        try:
            fh = open(part, "ab" if offset else "wb")
        except OSError as exc:
            raise DownloadError(f"{part}: cannot write the download: {exc.strerror or exc}", file=str(dest)) from exc
        with fh:
            while True:
                if should_cancel is not None and should_cancel():
                    raise CancelledError(f"{dest}: download cancelled; {part.name} keeps {done:,} bytes and "
                                         "the next download resumes there", file=str(dest))
                try:
                    chunk = resp.read(chunk_size)
                except (socket.timeout, TimeoutError) as exc:
                    raise _Interrupted(f"no data for {timeout:g} s after {done:,} bytes") from exc
                except (http.client.IncompleteRead, ConnectionError, OSError) as exc:
                    raise _Interrupted(f"{type(exc).__name__} after {done:,} bytes") from exc
                if not chunk:
                    break
                try:
                    fh.write(chunk)
                except OSError as exc:  # a full disk, typically; the .part keeps what was written
                    raise DownloadError(f"{part}: cannot write the download after {done:,} bytes: "
                                        f"{exc.strerror or exc}. Free some space and run the download again: "
                                        "it resumes", file=str(dest)) from exc
                hasher.update(chunk)
                done += len(chunk)
                if progress is not None:
                    progress(done, grand_total)
    if expected_size is not None and done < expected_size:
        raise _Interrupted(f"connection closed after {done:,} of {expected_size:,} bytes")
    return _verify(part, dest, url, hasher.hexdigest(), expected_sha256, expected_size)


def _network_error(exc: BaseException, url: str, dest: Path, timeout: float | None = None) -> DownloadError:
    reason = getattr(exc, "reason", exc)
    host = urllib.parse.urlsplit(url).hostname
    if isinstance(reason, (socket.timeout, TimeoutError)):
        # The server is there but slow (or a firewall drops packets): not "offline".
        wait = f" within {timeout:g} s" if timeout else ""
        return DownloadError(f"{dest}: {host} did not answer{wait} (a slow or stalled server or network); try "
                             "again later. " + _manual_hint(url, dest), file=str(dest))
    if isinstance(reason, ssl.SSLError) or isinstance(exc, ssl.SSLError):
        # Not an offline machine: a proxy or an outdated certificate store, usually.
        return DownloadError(f"{dest}: the secure connection to {host} failed ({reason}); the certificate could "
                             "not be verified (a proxy that intercepts HTTPS, or an outdated certificate store). "
                             + _manual_hint(url, dest), file=str(dest))
    return DownloadError(f"{dest}: cannot reach {host} ({reason}); are you offline? " + _manual_hint(url, dest),
                         file=str(dest))


def _verify_complete_part(part: Path, dest: Path, url: str, exc: urllib.error.HTTPError, redirects: _Redirects,
                          expected_sha256: str | None, expected_size: int | None, chunk_size: int) -> str:
    """The server answered 416 to a resume: verify `part` against the sha256/size known from the arguments,
    the redirect's X-Linked-* headers or the 416 response itself. Unverifiable or wrong: discard it and
    have the next attempt start over (_Interrupted)."""
    headers = exc.headers if exc.headers is not None else {}
    sha = expected_sha256 or redirects.linked_etag or _clean_etag(headers.get("X-Linked-Etag"))
    size = expected_size if expected_size is not None else redirects.linked_size
    if size is None:
        linked = (headers.get("X-Linked-Size") or "").strip()
        if linked.isdigit():
            size = int(linked)
        else:
            m = re.match(r"\s*bytes\s+\*/(\d+)", headers.get("Content-Range") or "")
            size = int(m.group(1)) if m else None
    if sha is None:
        # A size alone does not vouch for the contents.
        part.unlink(missing_ok=True)
        raise _Interrupted("the server gave no checksum for a partial file it says is complete; starting over")
    try:
        return _verify(part, dest, url, _hash_prefix(part, chunk_size).hexdigest(), sha, size)
    except DownloadError as bad:
        raise _Interrupted("a stale partial file was discarded") from bad


def _verify(part: Path, dest: Path, url: str, digest: str, expected_sha256: str | None,
            expected_size: int | None) -> str:
    size = part.stat().st_size
    if expected_size is not None and size != expected_size:
        part.unlink(missing_ok=True)
        raise DownloadError(f"{dest}: the downloaded file has {size:,} bytes, expected {expected_size:,}; it was "
                            f"deleted. Try again, or " + _manual_hint(url, dest).lower(), file=str(dest))
    if expected_sha256 is not None and digest != expected_sha256:
        part.unlink(missing_ok=True)
        raise DownloadError(f"{dest}: downloaded file failed its sha256 check (expected {expected_sha256}, got "
                            f"{digest}); it was deleted. Download it again.", file=str(dest))
    return digest


NamedProgress = Callable[[float, str], None]
# How the command line asks for a token; the Blender side passes its own wording (its preferences).
CLI_TOKEN_HINT = "with --token or the HF_TOKEN environment variable"


def _named_target(ckpt: Checkpoint, dest: str | os.PathLike[str] | None) -> Path:
    from .discovery import default_weights_path

    if dest is None:
        return default_weights_path(ckpt.name)
    target = Path(dest).expanduser()
    # An existing folder, or a path written with a trailing separator, receives the checkpoint's own file name.
    if target.is_dir() or str(dest).endswith(("/", os.sep)):
        target = target / ckpt.filename
    return target


def _fraction_progress(progress: NamedProgress) -> ProgressCallback:
    """Bytes -> (fraction, "1.23 of 5.03 GB"), passed on at most once per 0.1 % (per 128 MiB if the size is
    unknown): the downloader calls back per 1 MiB chunk, far more often than a progress bar needs."""
    last = [-1]

    def bytes_done(done: int, total: int) -> None:
        step = int(done * 1000 / total) if total else done >> 27
        if step == last[0]:
            return
        last[0] = step
        if total:
            progress(done / total, f"{done / 1e9:.2f} of {total / 1e9:.2f} GB")
        else:
            progress(0.0, f"{done / 1e9:.2f} GB")

    return bytes_done


def download_named_checkpoint(
    name: str = "vggt-1b",
    dest: str | os.PathLike[str] | None = None,
    token: str | None = None,
    progress: NamedProgress | None = None,
    should_cancel: Callable[[], bool] | None = None,
    say: Callable[[str], None] | None = None,
    url: str | None = None,
    token_hint: str = CLI_TOKEN_HINT,
) -> Path:
    """Download an official checkpoint (see checkpoints.py); the one implementation behind
    `python -m vggt_blender download`, the worker's "download": true and Blender's Download Weights.

    `dest`: a file, or a folder (existing, or written with a trailing separator); default: the shared cache
    that `resolve_weights` searches. `say(line)` receives the licence paragraph first (before any check or
    transfer), then what is downloaded where. An existing complete file is returned without going online.
    A gated checkpoint without a token (argument, $HF_TOKEN or $HUGGING_FACE_HUB_TOKEN) raises DownloadError
    saying where to accept the licence; `token_hint` says how the caller takes a token. `progress(fraction,
    message)` follows the bytes. `url` replaces the registry's address (a mirror; tests use a local server).
    """
    from .discovery import checkpoint_file_problem, sha256_file

    ckpt: Checkpoint = get_checkpoint(name)
    target = _named_target(ckpt, dest)
    if say is not None:
        say(ckpt.describe())
    if target.is_file():
        problem = checkpoint_file_problem(target, ckpt.size)
        if problem is None and ckpt.sha256 is not None and sha256_file(target) != ckpt.sha256:
            problem = "its sha256 differs from the published file's"
        if problem is None:
            if say is not None:
                say(f"{target} already exists; not downloading it again")
            return target
        if dest is not None:
            # The user's own file: never delete it, say how to go on.
            raise DownloadError(f"{target}: this file is in the way and is not a valid {ckpt.name} checkpoint "
                                f"({problem}); delete or move it, or choose another destination", file=str(target))
        # Our cache: set the bad file aside (kept for inspection) and download again.
        aside = target.with_name(target.name + ".invalid")
        os.replace(target, aside)
        if say is not None:
            say(f"{target} was not a valid checkpoint ({problem}); moved it to {aside.name} and downloading "
                "it again")
    token = token or token_from_env()
    if ckpt.gated and not token:
        raise DownloadError(f"checkpoint {ckpt.name} is gated: accept its licence at {ckpt.page_url}, create a "
                            f"read token at https://huggingface.co/settings/tokens and give it {token_hint} "
                            f"(it would be saved as {target})", file=str(target))
    source = url or ckpt.url
    if say is not None:
        say(f"downloading {source} to {target}")
    return download_checkpoint(source, target, token=token, expected_sha256=ckpt.sha256, expected_size=ckpt.size,
                               progress=_fraction_progress(progress) if progress is not None else None,
                               should_cancel=should_cancel, validate=checkpoint_file_problem)


def ensure_weights(weights: str | os.PathLike[str] | None, download: bool, checkpoint: str = "vggt-1b",
                   say: Callable[[str], None] | None = None, progress: NamedProgress | None = None,
                   caller: str = "cli") -> str | None:
    """The weights to run with, downloading the official checkpoint when asked to and none is found: the one
    download-if-missing rule of the command line (`--download`) and the worker (`"download": true`).

    Given `weights`, or `download` False, returns `weights` unchanged (the engine resolves it). Otherwise a
    $VGGT_WEIGHTS naming a missing file is reported, not "fixed" by a 5 GB download; a checkpoint found in
    the usual places is returned as its path; failing that, `checkpoint` is downloaded (licence first via
    `say`) and its path returned.
    """
    if weights is not None or not download:
        return None if weights is None else os.fspath(weights)
    from ..errors import WeightsNotFoundError
    from .discovery import check_weights_env, resolve_weights

    check_weights_env(checkpoint, caller)
    try:
        return str(resolve_weights(None, checkpoint, caller=caller))
    except WeightsNotFoundError:
        pass
    return str(download_named_checkpoint(checkpoint, say=say, progress=progress))


__all__ = ["CLI_TOKEN_HINT", "DownloadError", "download_checkpoint", "download_named_checkpoint", "ensure_weights",
           "token_from_env"]
