"""`python -m vggt_blender.jobs.worker [--request FILE]`: one JSON request in, JSON lines out (docs/WORKER_PROTOCOL.md).

Stdout carries only protocol lines (progress, log, error, result), one JSON object per line, flushed at once;
everything else (Python warnings, tracebacks) goes to stderr. SIGTERM/SIGINT cancel the run: what the run
created is removed and the process exits with 130. With `"keep_alive": true` the worker keeps reading one
request per line from stdin until EOF and reuses the loaded model.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
import traceback
from pathlib import Path
from typing import Any, TextIO

from ..errors import CancelledError, RequestError, VGGTError

PROTOCOL_CODES = {"no_weights", "bad_checkpoint", "download_failed", "bad_image", "out_of_memory", "cancelled",
                  "bad_request", "internal"}
EXIT_OK, EXIT_ERROR, EXIT_CANCELLED = 0, 1, 130

# Request keys and their defaults; "images" and "output" are required.
DEFAULTS: dict[str, Any] = {"weights": None, "device": "auto", "precision": "auto", "mode": "crop",
                            "config": "vggt-1b", "download": False, "keep_alive": False, "fast_path": "auto"}
REQUIRED = ("images", "output")
# A shot (one video file or image sequence in "images"): the optional fields of options.ShotOptions.
from ..options import SHOT_REQUEST_FIELDS  # noqa: E402

DEFAULTS.update({key: None for key in SHOT_REQUEST_FIELDS})

# Test hooks, read only here: a sleep (seconds) at the start of every stage, and a simulated fault.
DELAY_ENV = "VGGT_BLENDER_TEST_DELAY"
FAULT_ENV = "VGGT_BLENDER_TEST_FAULT"


class Cancelled(BaseException):
    """Raised from the signal handler; a BaseException so that no `except Exception` swallows it."""


class Emitter:
    """Writes protocol lines to the real stdout (kept aside: stray prints go to stderr instead)."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream

    def send(self, obj: dict) -> None:
        # ASCII only: a path with undecodable bytes (lone surrogates) cannot break the line's encoding.
        self.stream.write(json.dumps(obj, ensure_ascii=True) + "\n")
        self.stream.flush()

    def progress(self, stage: str, fraction: float, message: str) -> None:
        self.send({"type": "progress", "stage": stage, "fraction": round(float(fraction), 4), "message": message})

    def log(self, message: str) -> None:
        self.send({"type": "log", "message": message})

    def error(self, code: str, message: str, file: str | None = None) -> None:
        self.send({"type": "error", "code": code if code in PROTOCOL_CODES else "internal", "message": message,
                   "file": file})


def parse_request(data: Any) -> dict:
    """Check a decoded request and fill defaults; raise RequestError naming the problem."""
    if not isinstance(data, dict):
        raise RequestError("the request must be a JSON object")
    unknown = sorted(set(data) - set(DEFAULTS) - set(REQUIRED))
    if unknown:
        raise RequestError(f"unknown request key(s): {', '.join(unknown)}")
    missing = [k for k in REQUIRED if k not in data]
    if missing:
        raise RequestError(f"the request lacks {', '.join(missing)}")
    request = {**DEFAULTS, **data}
    images = request["images"]
    if isinstance(images, str) or not isinstance(images, list) or not all(isinstance(p, str) for p in images):
        raise RequestError("'images' must be a list of paths (files or folders)")
    if not images:
        raise RequestError("'images' is empty")
    for key in ("output", "device", "precision", "mode", "config", "fast_path"):
        if not isinstance(request[key], str) or not request[key]:
            raise RequestError(f"'{key}' must be a non-empty string")
    if request["fast_path"] not in ("auto", "on", "off"):
        raise RequestError(f"'fast_path' must be \"auto\", \"on\" or \"off\", not {request['fast_path']!r}")
    if request["weights"] is not None and not isinstance(request["weights"], str):
        raise RequestError("'weights' must be a path or null")
    for key in ("download", "keep_alive"):
        if not isinstance(request[key], bool):
            raise RequestError(f"'{key}' must be true or false")
    for key in SHOT_REQUEST_FIELDS:
        value = request[key]
        kind = bool if key == "sequence" else (int, float) if key == "fps" else int
        if value is not None and (not isinstance(value, kind) or (kind is int and isinstance(value, bool))):
            raise RequestError(f"'{key}' must be {'true or false' if kind is bool else 'a number'} or null")
    return request


def _ensure_weights(request: dict, emit: Emitter) -> None:
    """With "download": true and no checkpoint found, fetch the official one (its licence is logged first)."""
    if not request["download"] or request["weights"] is not None:
        return
    from ..errors import WeightsNotFoundError
    from ..weights.discovery import check_weights_env, resolve_weights

    check_weights_env()  # a $VGGT_WEIGHTS naming a missing file is reported, not "fixed" by a 5 GB download
    try:
        resolve_weights(None)
        return
    except WeightsNotFoundError:
        pass
    from ..weights.download import download_named_checkpoint  # shared with the CLI and Blender's Download Weights

    path = download_named_checkpoint("vggt-1b", say=emit.log,
                                     progress=lambda fraction, message: emit.progress("loading", 0.5 * fraction,
                                                                                      message))
    request["weights"] = str(path)


def run_request(request: dict, emit: Emitter) -> dict:
    """Run one checked request; return the result line's summary."""
    from ..engine import inference

    delay = float(os.environ.get(DELAY_ENV, "0") or 0)

    def progress(stage: str, fraction: float, message: str) -> None:
        emit.progress(stage, fraction, message)
        if delay and fraction == 0.0:
            time.sleep(delay)  # test hook: a slow start of every stage, to cancel a run mid-way

    if os.environ.get(FAULT_ENV) == "oom":
        import torch

        def out_of_memory(*_args: Any) -> dict:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB (simulated)")

        inference._forward = out_of_memory

    _ensure_weights(request, emit)
    output = Path(request["output"]).expanduser().resolve()
    rec = inference.reconstruct_to_file(
        request["images"], output, progress=progress, weights=request["weights"], device=request["device"],
        precision=request["precision"], mode=request["mode"], config=request["config"],
        fast_path=request["fast_path"], warn=lambda line: emit.log(f"warning: {line}"),
        **{key: request[key] for key in SHOT_REQUEST_FIELDS if request[key] is not None})
    return inference.result_summary(rec, output)


def handle(data: Any, emit: Emitter) -> int:
    """Run one decoded request and report it; return the exit code it calls for."""
    try:
        request = parse_request(data)
        summary = run_request(request, emit)
    except (Cancelled, KeyboardInterrupt, CancelledError):
        emit.error("cancelled", "cancelled")
        return EXIT_CANCELLED
    except VGGTError as exc:
        emit.error(exc.code, exc.message, exc.file)
        return EXIT_ERROR
    except OSError as exc:
        # Last resort for a file-system error no module turned into a VGGTError: one readable line.
        from ..cli import os_error_line

        emit.error("internal", os_error_line(exc), exc.filename if isinstance(exc.filename, str) else None)
        return EXIT_ERROR
    except Exception as exc:  # noqa: BLE001 - reported as "internal"; the traceback goes to stderr
        traceback.print_exc(file=sys.stderr)
        emit.error("internal", f"{type(exc).__name__}: {exc}")
        return EXIT_ERROR
    emit.send({"type": "result", "path": summary["path"], "summary": summary})
    return EXIT_OK


def _install_signal_handlers() -> None:
    def on_signal(signum: int, _frame: Any) -> None:
        # Ignore further signals while the cancellation unwinds and cleans up.
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        raise Cancelled(signal.Signals(signum).name)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)


def _decode(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError as exc:
        raise RequestError(f"the request is not valid JSON: {exc}") from None


def _protocol_stream() -> TextIO:
    """Keep the real stdout for protocol lines and point fd 1 (and sys.stdout) at stderr, so that anything
    printed by libraries, Python or C++, cannot corrupt the protocol stream."""
    sys.stdout.flush()
    protocol = os.fdopen(os.dup(1), "w", encoding="utf-8", buffering=1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return protocol


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m vggt_blender.jobs.worker",
                                     description="Run VGGT on a JSON request; JSON lines on stdout.")
    parser.add_argument("--request", help="JSON request file (default: read the request from stdin)")
    parser.add_argument("--cancel-on-eof", action="store_true",
                        help="one-line request on stdin, no keep_alive: end of input on stdin (the parent closed "
                             "it or died) cancels the run")
    args = parser.parse_args(argv)

    emit = Emitter(_protocol_stream())
    _install_signal_handlers()
    try:
        if args.request:
            try:
                text = Path(args.request).read_text(encoding="utf-8")
            except OSError as exc:
                emit.error("bad_request", f"cannot read the request file {args.request}: {exc.strerror or exc}",
                           args.request)
                return EXIT_ERROR
            return _serve(text, None, emit)
        # A single request may span several lines; a keep-alive session sends one request per line.
        first = sys.stdin.readline()
        try:
            data = json.loads(first)
        except ValueError:
            return _serve(first + sys.stdin.read(), None, emit)
        if args.cancel_on_eof and not (isinstance(data, dict) and data.get("keep_alive") is True):
            # One-shot with the parent holding stdin open: its end means the parent is gone.
            watcher = _StdinWatcher(sys.stdin)
            try:
                return _serve(first, None, emit)
            finally:
                watcher.stop()
        return _serve(first, sys.stdin, emit)
    except (Cancelled, KeyboardInterrupt):
        emit.error("cancelled", "cancelled")
        return EXIT_CANCELLED


class _StdinWatcher:
    """Reads stdin on a daemon thread; end of input (or a read error) while the run is active delivers SIGTERM
    to the main thread, which cancels the run like a real signal (cleanup, exit 130)."""

    def __init__(self, stream: TextIO) -> None:
        import threading

        self._stream = stream
        self._active = True
        self._lock = threading.Lock()
        threading.Thread(target=self._watch, daemon=True, name="stdin-eof").start()

    def _watch(self) -> None:
        import _thread

        try:
            while self._stream.readline():
                pass  # the parent has nothing more to say in one-shot mode; anything sent is ignored
        except (OSError, ValueError):
            pass
        with self._lock:
            if self._active:
                _thread.interrupt_main(signal.SIGTERM)

    def stop(self) -> None:
        with self._lock:
            self._active = False


def _serve(text: str, more: TextIO | None, emit: Emitter) -> int:
    try:
        data = _decode(text)
    except RequestError as exc:
        emit.error(exc.code, exc.message)
        return EXIT_ERROR
    code = handle(data, emit)
    keep_alive = isinstance(data, dict) and data.get("keep_alive") is True
    if not keep_alive or more is None or code == EXIT_CANCELLED:
        return code
    # Keep-alive: one request per line until EOF; the model stays loaded between requests.
    worst = code
    for line in more:
        if not line.strip():
            continue
        try:
            data = _decode(line)
        except RequestError as exc:
            emit.error(exc.code, exc.message)
            worst = EXIT_ERROR
            continue
        code = handle(data, emit)
        if code == EXIT_CANCELLED:
            return code
        worst = max(worst, code)
    return worst


if __name__ == "__main__":
    sys.exit(main())
