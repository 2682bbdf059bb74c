"""Checkpoint download against a real local HTTP server with Range support and injected faults."""

from __future__ import annotations

import hashlib
import http.server
import re
import socket
import threading
from pathlib import Path
from typing import Iterator

import pytest

from vggt_blender.weights.download import DownloadError, download_checkpoint, download_named_checkpoint
from vggt_blender.errors import CancelledError, CheckpointError
from vggt_blender.weights.discovery import sha256_file

# 288,004 deterministic bytes that start like a torch.save zip, so the named-checkpoint check accepts them.
DATA = b"PK\x03\x04" + hashlib.sha256(b"seed").digest() * 9000
SHA = hashlib.sha256(DATA).hexdigest()
CHUNK = 16 * 1024


class FaultyFileServer:
    """Serves DATA at /file and, Hugging Face style, /resolve/file -> 302 -> http://localhost:PORT/cdn/file with
    X-Linked-Etag / X-Linked-Size. Faults: drop the connection after N bytes (first `drops` requests), ignore
    Range, answer a fixed status, serve altered bytes, announce a wrong sha256."""

    def __init__(self) -> None:
        self.requests: list[dict[str, str]] = []
        self.drop_after: int | None = None
        self.drops = 1
        self.ignore_range = False
        self.status: int | None = None
        self.corrupt = False
        self.linked_sha = SHA
        self.body: bytes | None = None      # serve this instead of DATA (e.g. an HTML page)
        self.stall_after: int | None = None  # send this many bytes, then go silent
        self.stalled = threading.Event()
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # keep test output quiet
                pass

            def do_GET(self) -> None:
                owner.requests.append({"path": self.path, **{k.lower(): v for k, v in self.headers.items()}})
                if owner.status is not None:
                    self.send_error(owner.status)
                    return
                if self.path.startswith("/resolve/"):
                    self.send_response(302)
                    self.send_header("Location", f"http://localhost:{owner.port}/cdn/file")
                    self.send_header("X-Linked-Etag", f'"{owner.linked_sha}"')
                    self.send_header("X-Linked-Size", str(len(DATA)))
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                if owner.body is not None:
                    self.send_response(200)
                    self.send_header("Content-Type", "text/html")
                    self.send_header("Content-Length", str(len(owner.body)))
                    self.end_headers()
                    self.wfile.write(owner.body)
                    return
                body = bytearray(DATA)
                if owner.corrupt:
                    body[1000:1010] = b"X" * 10
                start = 0
                m = re.match(r"bytes=(\d+)-$", self.headers.get("Range", ""))
                if m and not owner.ignore_range:
                    start = int(m.group(1))
                    if start >= len(body):
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(body)}")
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
                else:
                    self.send_response(200)
                payload = bytes(body[start:])
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                if owner.stall_after is not None:
                    self.wfile.write(payload[:owner.stall_after])
                    self.wfile.flush()
                    owner.stalled.wait(10)  # silent until the test ends
                    return
                if owner.drop_after is not None and owner.drops > 0:
                    owner.drops -= 1
                    self.wfile.write(payload[:owner.drop_after])
                    self.wfile.flush()
                    self.connection.shutdown(socket.SHUT_RDWR)
                    self.close_connection = True
                    return
                self.wfile.write(payload)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
        self.thread.start()

    def url(self, path: str = "/file") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def close(self) -> None:
        self.stalled.set()
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture()
def server() -> Iterator[FaultyFileServer]:
    srv = FaultyFileServer()
    yield srv
    srv.close()


@pytest.fixture(autouse=True)
def isolated_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.delenv("HUGGING_FACE_HUB_TOKEN", raising=False)


def test_complete_download_verifies_and_reports_progress(tmp_path: Path, server: FaultyFileServer) -> None:
    dest = tmp_path / "w" / "model.pt"
    seen: list[tuple[int, int]] = []
    out = download_checkpoint(server.url(), dest, expected_sha256=SHA.upper(), expected_size=len(DATA),
                              progress=lambda d, t: seen.append((d, t)), chunk_size=CHUNK)
    assert out == dest and dest.read_bytes() == DATA
    assert not dest.with_name("model.pt.part").exists()
    assert seen[0] == (0, len(DATA)) and seen[-1] == (len(DATA), len(DATA))
    assert all(b[0] >= a[0] for a, b in zip(seen, seen[1:]))
    assert "range" not in server.requests[0]
    # the digest verified while downloading is remembered: sha256_file does not re-read the file
    assert (dest.parent / "model.pt.sha256.json").is_file()
    assert sha256_file(dest) == SHA


def test_hugging_face_redirect_headers_give_sha_and_size(tmp_path: Path, server: FaultyFileServer) -> None:
    dest = tmp_path / "model.pt"
    download_checkpoint(server.url("/resolve/file"), dest, token="hf_secret", chunk_size=CHUNK)
    assert dest.read_bytes() == DATA
    first, second = server.requests
    assert first["path"] == "/resolve/file" and first["authorization"] == "Bearer hf_secret"
    # the token never leaves the host it was given for (the CDN gets a signed URL)
    assert second["path"] == "/cdn/file" and "authorization" not in second

    server.linked_sha = "0" * 64  # the server announces another file's sha256: the download is rejected
    other = tmp_path / "other.pt"
    with pytest.raises(DownloadError, match="failed its sha256 check"):
        download_checkpoint(server.url("/resolve/file"), other, chunk_size=CHUNK)
    assert not other.exists() and not other.with_name("other.pt.part").exists()


def test_interrupted_transfer_resumes_with_range(tmp_path: Path, server: FaultyFileServer) -> None:
    server.drop_after = 100_000
    dest = tmp_path / "model.pt"
    download_checkpoint(server.url(), dest, expected_sha256=SHA, chunk_size=CHUNK, retry_delay=0)
    assert dest.read_bytes() == DATA
    assert len(server.requests) == 2
    assert "range" not in server.requests[0]
    assert server.requests[1]["range"] == "bytes=100000-"


def test_resume_across_calls_after_failure(tmp_path: Path, server: FaultyFileServer) -> None:
    server.drop_after = 123_457
    dest = tmp_path / "model.pt"
    part = tmp_path / "model.pt.part"
    with pytest.raises(DownloadError, match=r"interrupted.*123,457 bytes.*resumes") as info:
        download_checkpoint(server.url(), dest, expected_sha256=SHA, chunk_size=CHUNK, retries=0)
    assert isinstance(info.value, CheckpointError)
    assert part.stat().st_size == 123_457 and not dest.exists()
    seen: list[tuple[int, int]] = []
    download_checkpoint(server.url(), dest, expected_sha256=SHA, chunk_size=CHUNK,
                        progress=lambda d, t: seen.append((d, t)))
    assert server.requests[-1]["range"] == "bytes=123457-"
    assert dest.read_bytes() == DATA and not part.exists()
    assert seen[0] == (123_457, len(DATA))


def test_corrupted_download_is_deleted(tmp_path: Path, server: FaultyFileServer) -> None:
    server.corrupt = True
    dest = tmp_path / "model.pt"
    with pytest.raises(CheckpointError) as info:
        download_checkpoint(server.url(), dest, expected_sha256=SHA, chunk_size=CHUNK)
    msg = str(info.value)
    assert "downloaded file failed its sha256 check" in msg and SHA in msg and str(dest) in msg
    assert list(tmp_path.iterdir()) == []


def test_wrong_size_is_rejected(tmp_path: Path, server: FaultyFileServer) -> None:
    with pytest.raises(DownloadError, match="reports 288,004 bytes.*expected 288,005"):
        download_checkpoint(server.url(), tmp_path / "m.pt", expected_size=len(DATA) + 1, chunk_size=CHUNK)


def test_server_ignoring_range_restarts_from_zero(tmp_path: Path, server: FaultyFileServer) -> None:
    server.ignore_range = True
    dest = tmp_path / "model.pt"
    (tmp_path / "model.pt.part").write_bytes(b"\xff" * 50_000)  # a stale partial file
    download_checkpoint(server.url(), dest, expected_sha256=SHA, chunk_size=CHUNK)
    assert server.requests[0]["range"] == "bytes=50000-"
    assert dest.read_bytes() == DATA


def test_complete_part_file_is_verified_not_refetched(tmp_path: Path, server: FaultyFileServer) -> None:
    dest = tmp_path / "model.pt"
    (tmp_path / "model.pt.part").write_bytes(DATA)
    download_checkpoint(server.url(), dest, expected_sha256=SHA, chunk_size=CHUNK)
    assert dest.read_bytes() == DATA and len(server.requests) == 1


def test_complete_part_verified_against_redirect_headers(tmp_path: Path, server: FaultyFileServer) -> None:
    # 416 on resume: the sha256/size come from the redirect's X-Linked-* headers captured before the error.
    dest = tmp_path / "model.pt"
    (tmp_path / "model.pt.part").write_bytes(DATA)
    download_checkpoint(server.url("/resolve/file"), dest, chunk_size=CHUNK)
    assert dest.read_bytes() == DATA and [r["path"] for r in server.requests] == ["/resolve/file", "/cdn/file"]

    # A same-size .part with other bytes is never renamed: it is discarded and the file fetched again.
    other = tmp_path / "other.pt"
    (tmp_path / "other.pt.part").write_bytes(b"\0" * len(DATA))
    download_checkpoint(server.url("/resolve/file"), other, chunk_size=CHUNK, retry_delay=0)
    assert other.read_bytes() == DATA


def test_unverifiable_complete_part_is_not_renamed(tmp_path: Path, server: FaultyFileServer) -> None:
    # No checksum anywhere (plain URL, no argument): the 416 path must not rename an unchecked .part.
    dest = tmp_path / "model.pt"
    (tmp_path / "model.pt.part").write_bytes(b"\0" * len(DATA))
    download_checkpoint(server.url(), dest, chunk_size=CHUNK, retry_delay=0)
    assert dest.read_bytes() == DATA  # fetched again from zero, not the zeros renamed
    assert "range" in server.requests[0] and "range" not in server.requests[1]


def test_download_failure_code_and_certificate_wording(tmp_path: Path) -> None:
    import ssl
    import urllib.error

    from vggt_blender.weights.download import _network_error

    assert DownloadError("x").code == "download_failed"  # a network failure is not a bad checkpoint
    cert = urllib.error.URLError(ssl.SSLCertVerificationError(1, "certificate verify failed"))
    msg = str(_network_error(cert, "https://huggingface.co/x/y/resolve/main/model.pt", tmp_path / "m.pt"))
    assert "certificate" in msg and "offline" not in msg


def test_full_disk_is_one_readable_error(tmp_path: Path, server: FaultyFileServer, monkeypatch) -> None:
    import builtins

    real_open = builtins.open

    class FullFile:
        def __init__(self, fh) -> None:
            self.fh = fh

        def __enter__(self):
            return self

        def __exit__(self, *exc) -> None:
            self.fh.close()

        def write(self, data: bytes) -> int:
            raise OSError(28, "No space left on device")

    def fake_open(path, mode="r", *a, **k):
        fh = real_open(path, mode, *a, **k)
        return FullFile(fh) if str(path).endswith(".part") and mode in ("wb", "ab") else fh

    monkeypatch.setattr("vggt_blender.weights.download.open", fake_open, raising=False)
    dest = tmp_path / "model.pt"
    with pytest.raises(DownloadError, match="No space left on device") as info:
        download_checkpoint(server.url(), dest, expected_sha256=SHA, chunk_size=CHUNK)
    assert "model.pt.part" in str(info.value) and not dest.exists()


@pytest.mark.parametrize("token", [None, "hf_bad"])
def test_forbidden_explains_token_and_licence(tmp_path: Path, server: FaultyFileServer, token) -> None:
    server.status = 403
    url = server.url("/facebook/VGGT-1B-Commercial/resolve/main/model.pt")
    with pytest.raises(DownloadError) as info:
        download_checkpoint(url, tmp_path / "m.pt", token=token)
    msg = str(info.value)
    assert "HTTP 403" in msg
    if token:
        assert "refused the Hugging Face token" in msg and "accepted the licence" in msg
    else:
        assert "gated" in msg and "HF_TOKEN" in msg
    assert not (tmp_path / "m.pt").exists()


def test_token_from_environment(tmp_path: Path, server: FaultyFileServer, monkeypatch) -> None:
    monkeypatch.setenv("HF_TOKEN", "hf_env")
    download_checkpoint(server.url(), tmp_path / "m.pt", chunk_size=CHUNK)
    assert server.requests[0]["authorization"] == "Bearer hf_env"


def test_unreachable_server_says_what_to_download(tmp_path: Path) -> None:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()  # nothing listens there now
    url = f"http://127.0.0.1:{port}/facebook/VGGT-1B/resolve/main/model.pt"
    dest = tmp_path / "cache" / "model.pt"
    with pytest.raises(DownloadError) as info:
        download_checkpoint(url, dest, timeout=5)
    msg = str(info.value)
    assert "cannot reach 127.0.0.1" in msg and f"Download {url}" in msg and f"save it as {dest}" in msg


def test_cancel_keeps_part_for_resume(tmp_path: Path, server: FaultyFileServer) -> None:
    dest = tmp_path / "model.pt"
    state = {"calls": 0}

    def cancel_after_three_chunks() -> bool:
        state["calls"] += 1
        return state["calls"] > 3

    with pytest.raises(CancelledError):
        download_checkpoint(server.url(), dest, chunk_size=CHUNK, should_cancel=cancel_after_three_chunks)
    assert (tmp_path / "model.pt.part").stat().st_size == 3 * CHUNK and not dest.exists()
    download_checkpoint(server.url(), dest, expected_sha256=SHA, chunk_size=CHUNK)
    assert server.requests[-1]["range"] == f"bytes={3 * CHUNK}-" and dest.read_bytes() == DATA


def test_named_checkpoint_existing_file_and_gated(tmp_path: Path) -> None:
    target = tmp_path / "cache" / "vggt_blender" / "vggt-1b" / "model.pt"
    target.parent.mkdir(parents=True)
    target.write_bytes(DATA)
    assert download_named_checkpoint("vggt-1b") == target  # a plausible file: no network needed
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "model.pt").write_bytes(DATA)
    assert download_named_checkpoint("vggt-1b", dest=folder) == folder / "model.pt"
    with pytest.raises(DownloadError, match="gated.*VGGT-1B-Commercial.*HF_TOKEN"):
        download_named_checkpoint("vggt-1b-commercial", dest=tmp_path / "c.pt")
    with pytest.raises(CheckpointError, match="unknown checkpoint 'vggt-2b'"):
        download_named_checkpoint("vggt-2b")


def test_html_page_with_status_200_is_never_saved_as_the_checkpoint(tmp_path: Path,
                                                                    server: FaultyFileServer) -> None:
    server.body = b"<!DOCTYPE html><html><body>Please log in</body></html>"
    dest = tmp_path / "new" / "model.pt"
    with pytest.raises(DownloadError) as info:
        download_named_checkpoint("vggt-1b", dest=dest, url=server.url())
    msg = str(info.value)
    assert "web page (HTML)" in msg and "nothing was saved" in msg and "\n" not in msg
    assert not dest.exists() and not dest.with_name("model.pt.part").exists()


def test_invalid_file_in_the_cache_is_set_aside_and_downloaded_again(tmp_path: Path, server: FaultyFileServer,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    # An earlier broken download left an HTML page as model.pt in our cache; $HF_ENDPOINT points at a mirror.
    target = tmp_path / "cache" / "vggt_blender" / "vggt-1b" / "model.pt"
    target.parent.mkdir(parents=True)
    target.write_bytes(b"<html>error</html>")
    monkeypatch.setenv("HF_ENDPOINT", server.url("/hub"))
    lines: list[str] = []
    assert download_named_checkpoint("vggt-1b", say=lines.append) == target
    assert target.read_bytes() == DATA and target.with_name("model.pt.invalid").read_bytes() == b"<html>error</html>"
    assert server.requests[0]["path"] == "/hub/facebook/VGGT-1B/resolve/main/model.pt"
    assert any("was not a valid checkpoint" in line for line in lines)
    # The user's own file is never replaced: the error says what to do.
    mine = tmp_path / "mine.pt"
    mine.write_bytes(b"")
    with pytest.raises(DownloadError, match="mine.pt: this file is in the way.*it is empty.*delete or move it"):
        download_named_checkpoint("vggt-1b", dest=mine)
    assert mine.exists()


def test_stalled_transfer_times_out_with_a_true_message(tmp_path: Path, server: FaultyFileServer) -> None:
    server.stall_after = 0  # headers, then silence
    dest = tmp_path / "model.pt"
    with pytest.raises(DownloadError) as info:
        download_checkpoint(server.url(), dest, timeout=0.5, retries=1, retry_delay=0)
    msg = str(info.value)
    assert "no data for 0 s after 0 bytes" not in msg  # whole seconds are rounded, not printed as 0
    assert "interrupted" in msg and "nothing was kept" in msg and "offline" not in msg
    assert not dest.exists() and not (tmp_path / "model.pt.part").exists()


def test_slow_server_is_not_called_offline(tmp_path: Path) -> None:
    # A listening socket that never answers: the connection opens, the response never comes.
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(1)
    try:
        url = f"http://127.0.0.1:{sock.getsockname()[1]}/model.pt"
        with pytest.raises(DownloadError) as info:
            download_checkpoint(url, tmp_path / "model.pt", timeout=0.5, retries=0)
    finally:
        sock.close()
    assert "did not answer" in str(info.value) and "offline" not in str(info.value)


def test_named_checkpoint_reports_licence_fraction_and_resumes(tmp_path: Path, server: FaultyFileServer) -> None:
    # The one path used by the CLI, the worker and Blender: licence first, then (fraction, message) progress.
    server.drop_after = 100_000
    lines: list[str] = []
    seen: list[tuple[float, str]] = []
    out = download_named_checkpoint("vggt-1b", dest=f"{tmp_path / 'new'}/", say=lines.append,
                                    progress=lambda f, m: seen.append((f, m)), url=server.url())
    assert out == tmp_path / "new" / "model.pt" and out.read_bytes() == DATA
    assert "CC BY-NC 4.0" in lines[0] and lines[1] == f"downloading {server.url()} to {out}"
    assert seen[0][0] == 0.0 and seen[-1] == (1.0, "0.00 of 0.00 GB")
    assert all(0.0 <= f <= 1.0 for f, _ in seen) and len(seen) <= 1001  # throttled to 0.1 % steps
    assert server.requests[-1]["range"] == "bytes=100000-"  # resumed after the drop
    # Gated without a token: the caller's own wording of where the token goes.
    with pytest.raises(DownloadError, match="gated.*VGGT-1B-Commercial.*in the add-on preferences") as info:
        download_named_checkpoint("vggt-1b-commercial", dest=tmp_path / "c.pt", url=server.url(),
                                  token_hint="in the add-on preferences")
    assert info.value.file == str(tmp_path / "c.pt") and len(server.requests) == 2


def test_resume_through_redirect_keeps_range_but_not_token(tmp_path: Path, server: FaultyFileServer) -> None:
    server.drop_after = 70_000
    dest = tmp_path / "model.pt"
    download_checkpoint(server.url("/resolve/file"), dest, token="hf_secret", chunk_size=CHUNK, retry_delay=0)
    assert dest.read_bytes() == DATA
    paths = [r["path"] for r in server.requests]
    assert paths == ["/resolve/file", "/cdn/file", "/resolve/file", "/cdn/file"]
    assert server.requests[2]["range"] == server.requests[3]["range"] == "bytes=70000-"
    assert server.requests[2]["authorization"] == "Bearer hf_secret"
    assert all("authorization" not in r for r in server.requests[1::2])


def test_ensure_weights_downloads_only_what_is_missing(tmp_path: Path, monkeypatch) -> None:
    # The one download-if-missing rule of `--download` and the worker's "download": true.
    from vggt_blender.errors import WeightsNotFoundError
    from vggt_blender.weights import download

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("VGGT_WEIGHTS", raising=False)
    fetched: list[str] = []

    def fake_download(name, say=None, progress=None):
        fetched.append(name)
        target = tmp_path / "cache" / "vggt_blender" / name / "model.pt"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(b"weights")
        return target

    monkeypatch.setattr(download, "download_named_checkpoint", fake_download)
    assert download.ensure_weights("given.pt", True) == "given.pt"  # an explicit file is never replaced
    assert download.ensure_weights(None, False) is None  # not asked to download: the engine searches
    assert not fetched
    first = download.ensure_weights(None, True)
    assert fetched == ["vggt-1b"] and Path(first).read_bytes() == b"weights"
    assert download.ensure_weights(None, True) == first and fetched == ["vggt-1b"]  # found: not fetched again
    monkeypatch.setenv("VGGT_WEIGHTS", str(tmp_path / "typo.pt"))
    with pytest.raises(WeightsNotFoundError, match="typo.pt"):
        download.ensure_weights(None, True)
    assert fetched == ["vggt-1b"]


@pytest.mark.parametrize("name", ["vggt-omega-1b-512", "vggt-omega-1b-256-text"])
def test_omega_checkpoints_show_their_licence_and_need_a_token(tmp_path: Path, server: FaultyFileServer,
                                                                name: str) -> None:
    lines: list[str] = []
    with pytest.raises(DownloadError, match=f"checkpoint {name} is gated.*facebook/VGGT-Omega"):
        download_named_checkpoint(name, dest=f"{tmp_path / 'none'}/", say=lines.append, url=server.url())
    assert "FAIR Noncommercial Research License" in lines[0] and not server.requests  # licence before anything
    lines.clear()
    out = download_named_checkpoint(name, dest=f"{tmp_path / 'new'}/", token="hf_secret", say=lines.append,
                                    url=server.url())
    assert out.name == f"{name.replace('-', '_')}.pt" and out.read_bytes() == DATA
    assert "FAIR Noncommercial Research License" in lines[0]
    assert server.requests[0]["authorization"] == "Bearer hf_secret"
