"""`python -m vggt_blender.jobs.worker [--request FILE] [--cancel-on-eof]`: requests in, JSON lines out.

The messages are those of jobs/protocol.py (docs/WORKER_PROTOCOL.md). Stdout carries only protocol lines,
flushed at once; everything else (Python warnings, tracebacks) goes to stderr. A `{"type": "cancel"}` line on
stdin cancels the running request (SIGTERM/SIGINT too): what the run created is removed and a `cancelled` error
line follows. With `"keep_alive": true` in the first request the worker keeps reading one request per line
until EOF, reuses the loaded model, and survives a cancelled request; otherwise a cancel ends it with 130.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Any, TextIO

from . import protocol
from .. import options as opt
from ..options import SHOT_REQUEST_FIELDS
from .local import remove_paths
from .protocol import EXIT_CANCELLED, EXIT_ERROR, EXIT_OK, ProtocolError, parse_request
from ..errors import CancelledError, VGGTError


class Cancelled(BaseException):
    """Raised from the signal handler; a BaseException so that no `except Exception` swallows it.
    `by_message`: a cancel line on stdin (a keep-alive session goes on) rather than a signal (it ends)."""

    def __init__(self, by_message: bool) -> None:
        super().__init__("cancelled")
        self.by_message = by_message


class Emitter:
    """Writes protocol lines to the real stdout (kept aside: stray prints go to stderr instead)."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream

    def send(self, obj: dict) -> None:
        self.stream.write(protocol.encode(obj))
        self.stream.flush()

    def progress(self, stage: str, fraction: float, message: str) -> None:
        self.send(protocol.progress(stage, fraction, message))

    def log(self, message: str) -> None:
        self.send(protocol.log(message))

    def warning(self, message: str) -> None:
        self.send(protocol.warning(message))

    def error(self, code: str, message: str, file: str | None = None) -> None:
        self.send(protocol.error(code, message, file))


class Inbox:
    """Reads stdin on a thread, from the raw file descriptor (a daemon thread blocked inside a buffered
    `sys.stdin.readline()` holds its lock, and the interpreter aborts with SIGABRT when it cannot take that lock
    at exit). Requests queue up for the main thread; a cancel line (or, with `cancel_on_eof`, the end of
    input: the parent has gone) interrupts the running request at once."""

    def __init__(self, fd: int, cancel_on_eof: bool) -> None:
        import queue

        self._fd = fd
        self._cancel_on_eof = cancel_on_eof
        self._lines: queue.Queue[bytes | None] = queue.Queue()
        self._lock = threading.Lock()
        self._running = False
        self._pending = False  # a cancel that came before its request began
        self._sent = False  # an interrupt is on its way to the main thread
        self.by_message = True
        threading.Thread(target=self._read, daemon=True, name="stdin").start()

    def _read(self) -> None:
        buffer = b""
        while True:
            try:
                chunk = os.read(self._fd, 65536)
            except OSError:
                chunk = b""
            if not chunk:
                break
            buffer += chunk
            while b"\n" in buffer:
                line, buffer = buffer.split(b"\n", 1)
                self._take(line)
        if buffer.strip():
            self._take(buffer)
        self._lines.put(None)
        if self._cancel_on_eof:
            self.cancel(by_message=False)

    def _take(self, line: bytes) -> None:
        if not line.strip():
            return
        try:
            message = protocol.decode(line)
        except ProtocolError:
            message = None
        if isinstance(message, dict) and message.get("type") == protocol.CANCEL:
            self.cancel(by_message=True)
            return
        with self._lock:
            self._pending = False  # a cancel sent before this request was for an earlier one
        self._lines.put(line)

    def cancel(self, by_message: bool) -> None:
        import _thread

        with self._lock:
            if not self._running:
                self._pending = by_message
                return
            self._running = False
            self._sent = True
            self.by_message = by_message
            _thread.interrupt_main(signal.SIGTERM)  # runs the SIGTERM handler in the main thread

    def get(self) -> bytes | None:
        """The next request line; None at the end of input."""
        return self._lines.get()

    def rest(self) -> bytes:
        """Everything up to the end of input (a request spread over several lines)."""
        parts = []
        while (line := self._lines.get()) is not None:
            parts.append(line)
        self._lines.put(None)
        return b"\n".join(parts)

    def begin(self) -> None:
        with self._lock:
            pending, self._pending = self._pending, False
            self._running = not pending
        if pending:
            raise Cancelled(by_message=True)

    def delivered(self) -> None:
        with self._lock:
            self._sent = False

    def end(self) -> None:
        """The request is over: no cancel may reach it any more (one on its way is absorbed here)."""
        with self._lock:
            self._running = False
            sent = self._sent
        deadline = time.monotonic() + 1.0
        try:
            while sent and time.monotonic() < deadline:
                time.sleep(0.001)  # the handler runs between these calls
                with self._lock:
                    sent = self._sent
        except Cancelled:
            _install_signal_handlers()  # the absorbed cancel set them to "ignore"


_INBOX: Inbox | None = None


def _ensure_weights(request: dict, emit: Emitter) -> None:
    """With "download": true and no checkpoint found, fetch the official one (its licence is logged first)."""
    from ..weights.download import ensure_weights  # the CLI's --download follows the same rule

    request["weights"] = ensure_weights(
        request["weights"], request["download"], request["model"] or opt.DEFAULT_CHECKPOINT, say=emit.log,
        progress=lambda fraction, message: emit.progress("loading", 0.5 * fraction, message))


def written_files(output: Path, rec: Any) -> list[str]:
    """What a run wrote: the reconstruction file, then each folder holding upright copies of rotated photos."""
    folders = []
    for display, image in zip(rec.display_paths, rec.image_paths):
        if display != image:
            folder = str(Path(display).parent)
            if folder not in folders:
                folders.append(folder)
    return [str(output)] + folders


def run_request(request: dict, emit: Emitter, created: list[Path]) -> dict:
    """Run one checked request; return its result message. `created` receives what the run wrote (so that a
    cancel arriving after the writing can still remove it)."""
    if protocol.is_refine_request(request):
        return run_refine_request(request, emit, created)
    try:
        from ..engine import inference
    except ModuleNotFoundError as exc:  # a Python without the runtime's packages
        from ..runtime_setup import RuntimeSetupError

        # What to do about it is the client's to say (by the code): its user installs runtimes differently.
        raise RuntimeSetupError(f"{sys.executable}: the inference runtime has no {exc.name} module (it needs "
                                "torch, numpy, pillow and safetensors)", file=sys.executable) from None

    _ensure_weights(request, emit)
    from ..io.output_paths import resolve_output

    output = resolve_output(request["output"], suffix=None)  # reconstruct_to_file checks the suffix
    existed = {output: output.exists()}
    rec = inference.reconstruct_to_file(
        request["images"], output, progress=emit.progress, weights=request["weights"], model_name=request["model"],
        device=request["device"], precision=request["precision"], mode=request["mode"], config=request["config"],
        fast_path=request["fast_path"], warn=emit.warning,
        **{key: request[key] for key in SHOT_REQUEST_FIELDS if request[key] is not None})
    if request["refine"]:
        rec = _refine(rec, output, request["refine"], emit.progress, emit)
    files = written_files(output, rec)
    created.extend(Path(f) for f in files if not existed.get(Path(f), False))
    return protocol.result(str(output), files, inference.result_summary(rec, output))


def _refine(rec: Any, output: Path, options: bool | dict, progress: Any, emit: Emitter) -> Any:
    """Bundle-adjust the written reconstruction and replace the file; when refinement cannot help, the
    feed-forward file stays as written and the reason is a warning."""
    from ..errors import RefinementError
    from ..io.reconstruction import save_reconstruction

    try:
        from ..refine import refine_reconstruction

        refined, report = refine_reconstruction(rec, options if isinstance(options, dict) else None,
                                                progress=progress)
    except RefinementError as exc:
        emit.warning(f"{exc.message}; the feed-forward cameras are kept")
        return rec
    for line in report.messages:
        emit.warning(line)
    save_reconstruction(output, refined)
    return refined


def run_refine_request(request: dict, emit: Emitter, created: list[Path]) -> dict:
    """A refine request: bundle-adjust the cameras of the file `input` and write `output` (numpy + pycolmap:
    no model, no weights). A refinement that cannot help fails the job with `refine_failed`; nothing is written."""
    from ..io.output_paths import resolve_output
    from ..io.reconstruction import load_reconstruction, save_reconstruction

    rec = load_reconstruction(request["input"])
    output = resolve_output(request["output"], suffix=None)
    from ..refine import refine_reconstruction  # RefinementError when the runtime has no pycolmap

    options = request["refine"] if isinstance(request["refine"], dict) else None
    emit.progress("refining", 0.0, f"refining {rec.num_images} cameras")
    refined, report = refine_reconstruction(rec, options, progress=emit.progress)
    for line in report.messages:
        emit.warning(line)
    existed = output.exists()
    emit.progress("writing", 0.0, f"writing {output.name}")
    save_reconstruction(output, refined)
    if not existed:
        created.append(output)
    summary = {"path": str(output), "images": refined.num_images,
               "refinement": refined.provenance_dict.get("refinement", {})}
    return protocol.result(str(output), [str(output)], summary)


def handle(data: Any, emit: Emitter) -> tuple[int, bool]:
    """Run one decoded request and report it; (the exit code it calls for, whether a signal cancelled it)."""
    created: list[Path] = []
    try:
        try:
            if _INBOX is not None:
                _INBOX.begin()
            request = parse_request(data)
            message = run_request(request, emit, created)
        finally:
            if _INBOX is not None:
                _INBOX.end()
    except (Cancelled, KeyboardInterrupt, CancelledError) as exc:
        remove_paths(created)  # the cancel came after the writing: a cancelled run leaves nothing
        emit.error("cancelled", "cancelled")
        _install_signal_handlers()
        return EXIT_CANCELLED, not getattr(exc, "by_message", False)
    except VGGTError as exc:
        emit.error(exc.code, exc.message, exc.file)
        return EXIT_ERROR, False
    except OSError as exc:
        # Last resort for a file-system error no module turned into a VGGTError: one readable line.
        from ..cli import os_error_line

        emit.error("internal", os_error_line(exc), exc.filename if isinstance(exc.filename, str) else None)
        return EXIT_ERROR, False
    except Exception as exc:  # noqa: BLE001 - reported as "internal"; the traceback goes to stderr
        traceback.print_exc(file=sys.stderr)
        emit.error("internal", f"{type(exc).__name__}: {exc}")
        return EXIT_ERROR, False
    emit.send(message)
    return EXIT_OK, False


_unwinding = False  # a signal's cancellation is unwinding: further signals are ignored


def _install_signal_handlers() -> None:
    global _unwinding
    _unwinding = False

    def on_signal(signum: int, _frame: Any) -> None:
        # Ignore further signals while the cancellation unwinds and cleans up. Ignored here, not by SIG_IGN: a
        # signal already pending when the handler is swapped for SIG_IGN makes Python print "Signal 15 ignored
        # due to race condition" after the one-line error.
        global _unwinding
        if _unwinding:
            return
        _unwinding = True
        by_message = False
        if _INBOX is not None and _INBOX._sent:
            by_message = _INBOX.by_message
            _INBOX.delivered()
        raise Cancelled(by_message)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)


def _protocol_stream() -> TextIO:
    """Keep the real stdout for protocol lines and point fd 1 (and sys.stdout) at stderr, so that anything
    printed by libraries, Python or C++, cannot corrupt the protocol stream."""
    sys.stdout.flush()
    stream = os.fdopen(os.dup(1), "w", encoding="ascii", buffering=1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return stream


def _decode_or_report(data: bytes, emit: Emitter) -> tuple[bool, Any]:
    try:
        return True, protocol.decode(data)
    except ProtocolError as exc:
        emit.error(exc.code, exc.message)
        return False, None


def _serve_stdin(inbox: Inbox, emit: Emitter) -> int:
    first = inbox.get()
    if first is None:
        emit.error("bad_request", "no request on stdin")
        return EXIT_ERROR
    try:
        data = protocol.decode(first)
    except ProtocolError:
        # A request may span several lines (then it ends with the input); bad bytes are reported at once.
        ok, data = _decode_or_report(first + b"\n" + inbox.rest(), emit)
        if not ok:
            return EXIT_ERROR
    code, by_signal = handle(data, emit)
    if not (isinstance(data, dict) and data.get("keep_alive") is True) or by_signal:
        return code
    # Keep-alive: one request per line until EOF; the model stays loaded between requests.
    worst = EXIT_OK if code == EXIT_OK else EXIT_ERROR
    while (line := inbox.get()) is not None:
        ok, data = _decode_or_report(line, emit)
        if not ok:
            worst = EXIT_ERROR
            continue
        code, by_signal = handle(data, emit)
        if by_signal:
            return EXIT_CANCELLED
        if code != EXIT_OK:
            worst = EXIT_ERROR
    return worst


def main(argv: list[str] | None = None) -> int:
    global _INBOX
    parser = argparse.ArgumentParser(prog="python -m vggt_blender.jobs.worker",
                                     description="Run VGGT on a JSON request; JSON lines on stdout.")
    parser.add_argument("--request", help="JSON request file (default: read requests from stdin)")
    parser.add_argument("--cancel-on-eof", action="store_true",
                        help="the end of input on stdin (the parent closed it or died) cancels the running request")
    args = parser.parse_args(argv)

    emit = Emitter(_protocol_stream())
    _install_signal_handlers()
    try:
        if args.request:
            try:
                data = Path(args.request).read_bytes()
            except OSError as exc:
                emit.error("bad_request", f"cannot read the request file {args.request}: {exc.strerror or exc}",
                           args.request)
                return EXIT_ERROR
            ok, request = _decode_or_report(data, emit)
            return handle(request, emit)[0] if ok else EXIT_ERROR
        _INBOX = Inbox(sys.stdin.fileno(), args.cancel_on_eof)
        return _serve_stdin(_INBOX, emit)
    except (Cancelled, KeyboardInterrupt):
        emit.error("cancelled", "cancelled")
        return EXIT_CANCELLED


if __name__ == "__main__":
    status = main()
    sys.stderr.flush()
    # No interpreter teardown: daemon threads (stdin, torch's pools) must not turn a clean exit into an abort.
    os._exit(status)
