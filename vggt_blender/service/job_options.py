"""The `options` part of a job upload: the fields of a worker request a client may choose, checked.

The server, not the client, decides what touches its file system and hardware: `weights`, `download` and the
model (`config`, alias `model`) are the server's, `device` is the runner's. `images` and `output` are the
client's own paths: never opened here, only written back into the result so that it points at the client's
copies of the photos (see results.py). A shot's frame choice is the server's for a video and the client's for
an image sequence (it sends only the chosen frames, with their numbers).
"""

from __future__ import annotations

import json
from typing import Any

from ..errors import RequestError
from ..jobs.protocol import parse_request  # the worker's own checks of every field's type and choices
from ..options import FRAME_SELECTION_FIELDS, SHOT_REQUEST_FIELDS
from ..shot.selection import SEQUENCE_EXTENSIONS

# A shot's frame choice is made where the frames are: the server's for an uploaded video; the client's for an
# image sequence (it uploads only the frames it picked, see SEQUENCE_KEYS).
SELECTION_KEYS = FRAME_SELECTION_FIELDS
SHOT_KEYS = tuple(k for k in SHOT_REQUEST_FIELDS if k != "sequence")  # "sequence": the upload says what it is
CLIENT_KEYS = ("images", "output", "precision", "mode", "fast_path", "config", "model", "device", "weights",
               "download", "keep_alive", "type", "refine", "sequence_frames", *SHOT_KEYS)
# "sequence_frames": the uploaded photos are frames of one image sequence. `pattern` is the sequence as the
# client names it, `numbers` each uploaded frame's 0-based frame number (ascending), `first_number` the number
# in the name of the sequence's first file, `frame_count` how many frames the whole sequence has; optional
# `selection`, the client's every/start/end/max_frames (recorded in the result's provenance).
SEQUENCE_KEYS = ("pattern", "numbers", "first_number", "frame_count")
MAX_FRAME_NUMBER = 10**9 - 1  # file names stay short (frame.%08d... and a little room)
MAX_OPTIONS_BYTES = 256 * 1024
DEFAULT_OUTPUT = "reconstruction.npz"
PHOTOS, VIDEO, SEQUENCE = "photos", "video", "sequence"


def parse_options(raw: bytes | None, photo_names: list[str], server_model: str, video: str | None = None) -> dict:
    """The checked options: `precision`, `mode`, `fast_path` (worker request values), `kind` (photos, video or
    sequence), `shot` (the worker's shot fields that were given), `refine`, `sequence` (the sequence_frames
    object, or None), `client_images` (one client path per uploaded photo, or the client's video) and
    `client_output`. `video` is the name an uploaded video was sent under. RequestError (-> 422) names the
    first problem."""
    data: Any = {}
    if raw is not None and raw.strip():
        try:
            data = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as exc:
            raise RequestError(f"the options part is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise RequestError("the options part must be a JSON object")
    unknown = sorted(set(data) - set(CLIENT_KEYS))
    if unknown:
        raise RequestError(f"unknown option(s): {', '.join(unknown)}")
    for key in ("weights",):
        if data.get(key) is not None:
            raise RequestError("'weights' is chosen by the server (its --weights), not by a job")
    if data.get("download") not in (None, False):
        raise RequestError("'download' is not available on a server: its administrator installs the weights")
    model = data.get("model", data.get("config"))
    if "model" in data and "config" in data and data["model"] != data["config"]:
        raise RequestError("'model' and 'config' name different models; give one")
    if model is not None and model != server_model:
        raise RequestError(f"this server runs the model {server_model!r}, not {model!r}")
    if data.get("device") not in (None, "auto"):
        raise RequestError("the server chooses the device; leave 'device' out (or \"auto\")")

    sequence = data.get("sequence_frames")
    if video is not None and sequence is not None:
        raise RequestError("'sequence_frames' is for the frames of an image sequence sent as photos, not for a "
                           "video")
    kind = VIDEO if video is not None else SEQUENCE if sequence is not None else PHOTOS
    shot = {key: data[key] for key in SHOT_KEYS if data.get(key) is not None}
    if kind == PHOTOS and shot:
        raise RequestError(f"'{next(iter(shot))}' is for a shot: send a video, or the frames of an image "
                           "sequence with 'sequence_frames'")
    if kind == SEQUENCE:
        chosen = [key for key in SELECTION_KEYS if key in shot]
        if chosen:
            raise RequestError(f"'{chosen[0]}': a sequence's frames are chosen by the client (upload only "
                               "those frames, with their numbers in 'sequence_frames')")
        sequence = _check_sequence(sequence, photo_names)

    images = data.get("images")
    uploaded = [video] if video is not None else list(photo_names)
    if images is None:
        images = uploaded
    output = data.get("output", DEFAULT_OUTPUT)
    # The worker's checks for types and choices, on a request with the server's own values filled in.
    request = parse_request({"images": images if isinstance(images, list) and images else ["x"],
                             "output": output if isinstance(output, str) else output,
                             "precision": data.get("precision", "auto"), "mode": data.get("mode", "crop"),
                             "fast_path": data.get("fast_path", "auto"), "config": server_model,
                             "refine": data.get("refine", False), **shot})
    if not isinstance(images, list) or len(images) != len(uploaded):
        what = "the uploaded video" if video is not None else "uploaded photo"
        raise RequestError(f"'images' must list one client path per {what} ({len(uploaded)}), in upload order")
    if not request["output"].lower().endswith(".npz"):
        raise RequestError(f"'output' must name a .npz file: {request['output']}")
    return {"precision": request["precision"], "mode": request["mode"], "fast_path": request["fast_path"],
            "kind": kind, "shot": shot, "refine": request["refine"], "sequence": sequence,
            "client_images": [str(p) for p in images], "client_output": request["output"]}


def _check_sequence(value: Any, photo_names: list[str]) -> dict:
    if not isinstance(value, dict) or not set(SEQUENCE_KEYS) <= set(value) <= {*SEQUENCE_KEYS, "selection"}:
        raise RequestError("'sequence_frames' must be an object with " + ", ".join(SEQUENCE_KEYS)
                           + " (and optionally selection)")
    selection = value.get("selection")
    if selection is not None and (not isinstance(selection, dict) or not set(selection) <= set(SELECTION_KEYS)
                                  or not all(v is None or (isinstance(v, int) and not isinstance(v, bool))
                                             for v in selection.values())):
        raise RequestError("'sequence_frames.selection' must be an object of " + ", ".join(SELECTION_KEYS)
                           + " (whole numbers or null)")
    numbers = value["numbers"]
    if not isinstance(value["pattern"], str) or not value["pattern"]:
        raise RequestError("'sequence_frames.pattern' must be the sequence's path as the client names it")
    if not isinstance(numbers, list) or len(numbers) != len(photo_names):
        raise RequestError(f"'sequence_frames.numbers' must give one frame number per uploaded photo "
                           f"({len(photo_names)})")
    for key, items in (("numbers", numbers), ("first_number", [value["first_number"]]),
                       ("frame_count", [value["frame_count"]])):
        if not all(isinstance(n, int) and not isinstance(n, bool) and 0 <= n <= MAX_FRAME_NUMBER for n in items):
            raise RequestError(f"'sequence_frames.{key}' must hold whole numbers from 0 to {MAX_FRAME_NUMBER}")
    if any(b <= a for a, b in zip(numbers, numbers[1:])):
        raise RequestError("'sequence_frames.numbers' must be ascending, each frame once")
    if value["frame_count"] < len(numbers):
        raise RequestError("'sequence_frames.frame_count' is smaller than the number of frames sent")
    endings = {name.rpartition(".")[2].lower() for name in photo_names}
    if len(endings) != 1 or f".{next(iter(endings))}" not in SEQUENCE_EXTENSIONS:
        raise RequestError("the frames of a sequence must be files of one kind: "
                           + ", ".join(SEQUENCE_EXTENSIONS))
    return dict(value)
