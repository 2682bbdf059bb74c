"""The job protocol (stdlib only): the request schema, the messages a job sends back, their encoding.

One JSON object per line, ASCII only (`ensure_ascii`), in both directions. A local worker speaks it over
stdin/stdout (docs/WORKER_PROTOCOL.md); a server can speak the same messages over HTTP. Everything here is
pure data and checks: no process, no file system.
"""

from __future__ import annotations

import json
import re
from typing import Any

from .. import errors
from ..errors import RequestError
from .. import options
from ..options import (ALL_MODES as PREPROCESS_MODES, CHECKPOINT_NAMES, DEVICES, FAST_PATH_CHOICES, PRECISIONS,
                       InferenceOptions)

PROTOCOL_VERSION = 1

# ---- request ----------------------------------------------------------------------------------------------

REQUIRED = ("images", "output")
# Optional keys and their defaults.
# "model" is InferenceOptions.model_name: a registry name (options.CHECKPOINT_NAMES) or null.
DEFAULTS: dict[str, Any] = {**{("model" if k == "model_name" else k): v
                               for k, v in InferenceOptions().to_dict().items()},
                            "download": False, "keep_alive": False,
                            # true, or an object of RefineOptions: bundle-adjust the cameras after inference.
                            "refine": False,
                            # A shot (one video file or image sequence in "images"): options.ShotOptions' fields.
                            **{key: None for key in options.SHOT_REQUEST_FIELDS}}
# A refine request bundle-adjusts an existing reconstruction file (no model, no weights):
# {"type": "refine", "input": IN.npz, "output": OUT.npz, "refine": true | {RefineOptions fields}}.
REFINE = "refine"
REFINE_REQUIRED = ("input", "output")
REFINE_DEFAULTS: dict[str, Any] = {"refine": True, "keep_alive": False}
_CUDA_INDEX = re.compile(r"cuda:\d+")
# Longest file name (without folder) an output may have: its companion folder "<stem>_images" is 3 bytes longer,
# and most file systems stop at 255 bytes.
MAX_OUTPUT_NAME = 248

# ---- messages ---------------------------------------------------------------------------------------------

PROGRESS, LOG, WARNING, ERROR, RESULT = "progress", "log", "warning", "error", "result"
EVENT_TYPES = (PROGRESS, LOG, WARNING, ERROR, RESULT)
CANCEL = "cancel"  # the only message a client sends besides requests
STAGES = ("preprocessing", "loading", "inference", "writing")


ERROR_CODES = tuple(sorted(errors.ERROR_CODES))  # the codes are the errors' own (errors.py): one owner
EXIT_OK, EXIT_ERROR, EXIT_CANCELLED = options.EXIT_OK, options.EXIT_ERROR, options.EXIT_CANCELLED
# Deepest JSON nesting accepted: requests are flat; this keeps a hostile line from exhausting the stack.
MAX_DEPTH = 32
MAX_LINE_BYTES = 16 * 1024 * 1024


class ProtocolError(RequestError):
    """A line that is not a protocol message (bad bytes, bad JSON, wrong shape): a `bad_request`."""


# ---- building messages --------------------------------------------------------------------------------------

def progress(stage: str, fraction: float, message: str = "") -> dict:
    return {"type": PROGRESS, "stage": stage, "fraction": round(min(max(float(fraction), 0.0), 1.0), 4),
            "message": message}


def log(message: str) -> dict:
    return {"type": LOG, "message": message}


def warning(message: str) -> dict:
    return {"type": WARNING, "message": message}


def error(code: str, message: str, file: str | None = None) -> dict:
    return {"type": ERROR, "code": code if code in ERROR_CODES else "internal", "message": message, "file": file}


def error_from(exc: errors.VGGTError) -> dict:
    return error(exc.code, exc.message, exc.file)


def result(path: str, files: list[str], summary: dict) -> dict:
    """`path`: the reconstruction file; `files`: everything the run wrote (that file first, then companions
    such as the folder of upright photo copies), so a client can fetch them without knowing their names."""
    return {"type": RESULT, "path": path, "files": list(files), "summary": summary}


def cancel() -> dict:
    return {"type": CANCEL}


# ---- encoding ---------------------------------------------------------------------------------------------

def encode(message: dict) -> str:
    """One line, newline included. ASCII: a path with undecodable bytes (a lone surrogate) survives."""
    return json.dumps(message, ensure_ascii=True) + "\n"


def _depth_exceeds(text: str, limit: int) -> bool:
    """True when brackets outside strings nest deeper than `limit` (checked before json.loads recurses)."""
    depth = 0
    in_string = escaped = False
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            if depth > limit:
                return True
        elif ch in "]}":
            depth -= 1
    return False


def decode(data: bytes | str) -> Any:
    """A JSON value from one line (or one document); ProtocolError for bad UTF-8, bad JSON or deep nesting."""
    if isinstance(data, bytes):
        if len(data) > MAX_LINE_BYTES:
            raise ProtocolError(f"the message is longer than {MAX_LINE_BYTES} bytes")
        try:
            data = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ProtocolError(f"the message is not valid UTF-8 (byte {exc.start})") from None
    if _depth_exceeds(data, MAX_DEPTH):
        raise ProtocolError(f"the message nests deeper than {MAX_DEPTH} levels")
    try:
        return json.loads(data)
    except (ValueError, RecursionError) as exc:
        raise ProtocolError(f"the message is not valid JSON: {exc}") from None


def decode_event(line: bytes | str) -> dict:
    """A message sent back by a job; a line that is not one becomes a `log` message (never an exception)."""
    text = line.decode("utf-8", errors="replace") if isinstance(line, bytes) else line
    try:
        message = decode(text)
    except ProtocolError:
        message = None
    if not isinstance(message, dict) or message.get("type") not in EVENT_TYPES:
        return log(text.rstrip("\r\n"))
    return message


# ---- checking a request -----------------------------------------------------------------------------------

def _check_output(output: str) -> None:
    name = output.replace("\\", "/").rsplit("/", 1)[-1]
    if not name.lower().endswith(".npz"):
        raise RequestError(f"'output' must name a .npz file: {output}", file=output)
    if len(name.encode("utf-8", "surrogateescape")) > MAX_OUTPUT_NAME:
        raise RequestError(f"'output' has a file name of {len(name)} characters; at most {MAX_OUTPUT_NAME} "
                           "are allowed", file=output)


def _check_refine(value: Any) -> None:
    if isinstance(value, dict):
        try:
            options.RefineOptions.from_dict(value)
        except (TypeError, ValueError) as exc:
            raise RequestError(f"'refine': {exc}") from exc
    elif not isinstance(value, bool):
        raise RequestError("'refine' must be true, false or an object of refine options")


def is_refine_request(request: dict) -> bool:
    return request.get("type") == REFINE


def parse_refine_request(data: dict) -> dict:
    """A refine request checked and completed with defaults (it keeps `"type": "refine"`)."""
    unknown = sorted(set(data) - set(REFINE_DEFAULTS) - set(REFINE_REQUIRED) - {"type"})
    if unknown:
        raise RequestError(f"unknown refine request key(s): {', '.join(unknown)}")
    missing = [k for k in REFINE_REQUIRED if k not in data]
    if missing:
        raise RequestError(f"the refine request lacks {', '.join(missing)}")
    request = {**REFINE_DEFAULTS, **data}
    for key in REFINE_REQUIRED:
        if not isinstance(request[key], str) or not request[key]:
            raise RequestError(f"'{key}' must be a non-empty string")
    _check_output(request["output"])
    if not isinstance(request["keep_alive"], bool):
        raise RequestError("'keep_alive' must be true or false")
    _check_refine(request["refine"])
    if request["refine"] is False:
        raise RequestError("a refine request with \"refine\": false has nothing to do")
    return request


def parse_request(data: Any) -> dict:
    """A decoded request checked and completed with defaults; RequestError names the first problem."""
    if not isinstance(data, dict):
        raise RequestError("the request must be a JSON object")
    if is_refine_request(data):
        return parse_refine_request(data)
    unknown = sorted(set(data) - set(DEFAULTS) - set(REQUIRED) - {"type"})
    if unknown:
        raise RequestError(f"unknown request key(s): {', '.join(unknown)}")
    if data.get("type", "request") != "request":
        raise RequestError(f"'type' of a request must be \"request\" or \"{REFINE}\", not {data['type']!r}")
    missing = [k for k in REQUIRED if k not in data]
    if missing:
        raise RequestError(f"the request lacks {', '.join(missing)}")
    request = {**DEFAULTS, **{k: v for k, v in data.items() if k != "type"}}
    images = request["images"]
    if not isinstance(images, list) or not all(isinstance(p, str) and p for p in images):
        raise RequestError("'images' must be a list of paths (files or folders)")
    if not images:
        raise RequestError("'images' is empty")
    for key in ("output", "device", "precision", "mode", "fast_path"):
        if not isinstance(request[key], str) or not request[key]:
            raise RequestError(f"'{key}' must be a non-empty string")
    # null: the model's (or the checkpoint's) own configuration, and the family the checkpoint's keys say.
    for key in ("config", "model"):
        if request[key] is not None and (not isinstance(request[key], str) or not request[key]):
            raise RequestError(f"'{key}' must be a non-empty string or null")
    if request["model"] is not None and request["model"] not in CHECKPOINT_NAMES:
        raise RequestError(f"'model' must be one of {', '.join(CHECKPOINT_NAMES)} or null, not {request['model']!r}")
    for key, choices in (("precision", PRECISIONS), ("mode", PREPROCESS_MODES), ("fast_path", FAST_PATH_CHOICES)):
        if request[key] not in choices:
            raise RequestError(f"'{key}' must be one of {', '.join(choices)}, not {request[key]!r}")
    if request["device"] not in DEVICES and not _CUDA_INDEX.fullmatch(request["device"]):
        raise RequestError(f"'device' must be one of {', '.join(DEVICES)} or cuda:N, not {request['device']!r}")
    _check_output(request["output"])
    if request["weights"] is not None and not isinstance(request["weights"], str):
        raise RequestError("'weights' must be a path or null")
    for key in ("download", "keep_alive"):
        if not isinstance(request[key], bool):
            raise RequestError(f"'{key}' must be true or false")
    _check_refine(request["refine"])
    for key in options.SHOT_REQUEST_FIELDS:
        value = request[key]
        kind = bool if key == "sequence" else (int, float) if key == "fps" else int
        if value is not None and (not isinstance(value, kind) or (kind is int and isinstance(value, bool))):
            raise RequestError(f"'{key}' must be {'true or false' if kind is bool else 'a number'} or null")
    return request


def make_refine_request(input_path: str, output: str, refine: bool | dict = True, **extra: Any) -> dict:
    """A complete, checked refine request (bundle-adjust the cameras of an existing reconstruction file)."""
    return parse_refine_request({"type": REFINE, "input": str(input_path), "output": str(output),
                                 "refine": refine, **extra})


def make_request(images: list[str], output: str, **options: Any) -> dict:
    """A complete, checked request (what a client sends)."""
    return parse_request({"images": list(images), "output": str(output), **options})
