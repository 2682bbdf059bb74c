"""The `options` part of a job upload: the fields of a worker request a client may choose, checked.

The server, not the client, decides what touches its file system and hardware: `weights`, `download` and the
model (`config`, alias `model`) are the server's, `device` is the runner's. `images` and `output` are the
client's own paths: never opened here, only written back into the result so that it points at the client's
copies of the photos (see results.py).
"""

from __future__ import annotations

import json
from typing import Any

from ..errors import RequestError
from ..jobs.protocol import parse_request  # the worker's own checks of every field's type and choices

CLIENT_KEYS = ("images", "output", "precision", "mode", "fast_path", "config", "model", "device", "weights",
               "download", "keep_alive", "type")
MAX_OPTIONS_BYTES = 256 * 1024
DEFAULT_OUTPUT = "reconstruction.npz"


def parse_options(raw: bytes | None, photo_names: list[str], server_model: str) -> dict:
    """The checked options: `precision`, `mode`, `fast_path` (worker request values), `client_images` (one
    client path per uploaded photo) and `client_output`. RequestError (-> 422) names the first problem."""
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

    images = data.get("images")
    if images is None:
        images = list(photo_names)
    output = data.get("output", DEFAULT_OUTPUT)
    # The worker's checks for types and choices, on a request with the server's own values filled in.
    request = parse_request({"images": images if isinstance(images, list) and images else ["x"],
                             "output": output if isinstance(output, str) else output,
                             "precision": data.get("precision", "auto"), "mode": data.get("mode", "crop"),
                             "fast_path": data.get("fast_path", "auto"), "config": server_model})
    if not isinstance(images, list) or len(images) != len(photo_names):
        raise RequestError(f"'images' must list one client path per uploaded photo ({len(photo_names)}), "
                           f"in upload order")
    if not request["output"].lower().endswith(".npz"):
        raise RequestError(f"'output' must name a .npz file: {request['output']}")
    return {"precision": request["precision"], "mode": request["mode"], "fast_path": request["fast_path"],
            "client_images": [str(p) for p in images], "client_output": request["output"]}
