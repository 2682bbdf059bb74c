"""Finding and hashing checkpoints (stdlib only: Blender's Python, which has no torch, imports this)."""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path
from typing import Callable

from .registry import CHECKPOINTS, DEFAULT_CHECKPOINT, Checkpoint, get_checkpoint
from ..errors import CheckpointError, WeightsNotFoundError

WEIGHTS_ENV = "VGGT_WEIGHTS"
STATE_DICT_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors")
HASH_SIDECAR_SUFFIX = ".sha256.json"


# ------------------------------------------------------------------------------------------ locations


def default_cache_dir() -> Path:
    """Per-user cache folder for downloaded checkpoints (not created here)."""
    if sys.platform == "win32":
        base = os.environ.get("LOCALAPPDATA") or str(Path.home() / "AppData" / "Local")
    elif sys.platform == "darwin":
        base = str(Path.home() / "Library" / "Caches")
    else:
        xdg = os.environ.get("XDG_CACHE_HOME", "")
        # The XDG spec says to ignore relative paths.
        base = xdg if xdg and os.path.isabs(xdg) else str(Path.home() / ".cache")
    return Path(base) / "vggt_blender"


def default_weights_path(checkpoint: str = DEFAULT_CHECKPOINT) -> Path:
    """Where `download` puts a checkpoint and where `resolve_weights` looks last."""
    ckpt = get_checkpoint(checkpoint)
    return default_cache_dir() / ckpt.name / ckpt.filename


def _candidates_in_folder(folder: Path, ckpt: Checkpoint) -> list[Path]:
    names = [ckpt.filename, "model.safetensors", "model.pt"]
    return [folder / n for n in dict.fromkeys(names)]


def _pick(path: Path, ckpt: Checkpoint, origin: str) -> Path:
    """Accept a file, or a folder holding the checkpoint's file; otherwise explain what is missing."""
    if path.is_file():
        return path.resolve()
    if path.is_dir():
        # The checkpoint's own names first, then any official file name: a folder holding only
        # vggt_omega_1b_512.pt works without --model (the family follows the file's keys; a model named
        # explicitly that does not match is reported when the file is loaded).
        others = [c for other in CHECKPOINTS.values() for c in _candidates_in_folder(path, other)]
        candidates = list(dict.fromkeys(_candidates_in_folder(path, ckpt) + others))
        for cand in candidates:
            if cand.is_file():
                return cand.resolve()
        names = ", ".join(c.name for c in candidates)
        raise WeightsNotFoundError(f"{path}: the folder given by {origin} holds no checkpoint (looked for {names})",
                                   file=str(path))
    raise WeightsNotFoundError(f"{path}: the weights file given by {origin} does not exist", file=str(path))


# How each caller names the explicit weights path, and where its user gets or sets weights.
_CALLERS = {
    "cli": {
        "origin": "--weights",
        "get": "run `python -m vggt_blender download --model {name}{token}`, or pass --weights PATH (or set "
               "{env}) to a checkpoint you already have",
    },
    "blender": {
        "origin": "the Weights path of the add-on preferences",
        "get": "press Download Weights in Preferences > Add-ons > VGGT Reconstruction, or set its Weights path "
               "(or {env}) to a checkpoint you already have",
    },
}


def _caller(caller: str) -> dict[str, str]:
    if caller not in _CALLERS:
        raise ValueError(f"caller must be one of {', '.join(_CALLERS)}, not {caller!r}")
    return _CALLERS[caller]


def missing_weights_message(checkpoint: str = DEFAULT_CHECKPOINT, caller: str = "cli") -> str:
    """What to download and where to put it, for the no-weights error, worded for `caller`: "cli" (the
    command line and the worker) or "blender" (the add-on's operators and preferences)."""
    ckpt = get_checkpoint(checkpoint)
    dest = default_weights_path(checkpoint)
    token = " --token YOUR_HF_TOKEN" if ckpt.gated else ""
    how = _caller(caller)["get"].format(name=ckpt.name, token=token, env=WEIGHTS_ENV)
    text = (f"no VGGT weights found. Download {ckpt.url} ({ckpt.size_text}; licence: {ckpt.licence}) and save "
            f"it as {dest}, or {how}")
    if ckpt.gated:
        text += f". This checkpoint is gated: accept its licence at {ckpt.page_url} first"
    return text


def check_weights_env(checkpoint: str = DEFAULT_CHECKPOINT, caller: str = "cli") -> Path | None:
    """The file $VGGT_WEIGHTS names (None when unset); raise WeightsNotFoundError when it names nothing usable,
    so that a caller about to download does not fetch 5 GB to paper over a mistyped variable."""
    env = os.environ.get(WEIGHTS_ENV, "")
    if not env:
        return None
    return _pick(Path(env).expanduser(), get_checkpoint(checkpoint), f"${WEIGHTS_ENV}")


def _cached_checkpoint(preferred: Checkpoint) -> Path | None:
    """A downloaded checkpoint in the cache: `preferred`'s folder first, then every other known checkpoint's
    (registry order, vggt-1b first), so a user who downloaded only the commercial weights is found too. Only
    checkpoints of `preferred`'s model family stand in for it: an Omega file is never run for a VGGT request."""
    order = [preferred] + [c for c in CHECKPOINTS.values()
                           if c.name != preferred.name and c.family == preferred.family]
    for ckpt in order:
        for cand in _candidates_in_folder(default_cache_dir() / ckpt.name, ckpt):
            if cand.is_file():
                return cand.resolve()
    return None


def resolve_weights(explicit: str | os.PathLike[str] | None, checkpoint: str = DEFAULT_CHECKPOINT,
                    caller: str = "cli") -> Path:
    """The checkpoint file to use: `explicit` (--weights), else $VGGT_WEIGHTS, else the default cache
    (`checkpoint`'s folder first, then the other known checkpoints' folders).

    An explicit path or the environment variable that points nowhere is an error (not silently skipped):
    the user asked for that file. Folders are accepted when they hold the checkpoint's file. Error messages
    are worded for `caller` ("cli" or "blender", see missing_weights_message).
    """
    ckpt = get_checkpoint(checkpoint)
    if explicit is not None and str(explicit) != "":
        return _pick(Path(explicit).expanduser(), ckpt, _caller(caller)["origin"])
    from_env = check_weights_env(checkpoint, caller)
    if from_env is not None:
        return from_env
    cached = _cached_checkpoint(ckpt)
    if cached is not None:
        return cached
    raise WeightsNotFoundError(missing_weights_message(checkpoint, caller),
                               file=str(default_weights_path(checkpoint)))


# ------------------------------------------------------------------------------------------- hashing


def _sidecar_paths(path: Path) -> list[Path]:
    # Next to the file first; the cache folder when the weights live somewhere read-only.
    key = hashlib.sha1(str(path.resolve()).encode("utf-8")).hexdigest()[:16]
    return [path.with_name(path.name + HASH_SIDECAR_SUFFIX),
            default_cache_dir() / "hashes" / f"{path.name}.{key}{HASH_SIDECAR_SUFFIX}"]


def _stat_key(path: Path) -> dict[str, int]:
    st = path.stat()
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns}


def remember_sha256(path: str | os.PathLike[str], digest: str) -> None:
    """Store a known digest (e.g. verified while downloading) so sha256_file need not hash the file again."""
    path = Path(path)
    record = json.dumps({**_stat_key(path), "sha256": digest})
    for sidecar in _sidecar_paths(path):
        try:
            sidecar.parent.mkdir(parents=True, exist_ok=True)
            sidecar.write_text(record, encoding="utf-8")
            return
        except OSError:
            continue


def sha256_file(path: str | os.PathLike[str], chunk_size: int = 8 << 20,
                progress: Callable[[int, int], None] | None = None) -> str:
    """Hex sha256 of a file, read in chunks. Cached in a sidecar keyed by size and mtime, so a 5 GB
    checkpoint is hashed once; a changed file (other size or mtime) is hashed again."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: file not found", file=str(path))
    key = _stat_key(path)
    for sidecar in _sidecar_paths(path):
        try:
            data = json.loads(sidecar.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(data, dict) and data.get("size") == key["size"] and data.get("mtime_ns") == key["mtime_ns"] \
                and isinstance(data.get("sha256"), str) and len(data["sha256"]) == 64:
            return data["sha256"]
    h = hashlib.sha256()
    done = 0
    try:
        with open(path, "rb") as fh:
            while chunk := fh.read(chunk_size):
                h.update(chunk)
                done += len(chunk)
                if progress is not None:
                    progress(done, key["size"])
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot read the checkpoint to hash it: {exc.strerror or exc}",
                              file=str(path)) from exc
    digest = h.hexdigest()
    remember_sha256(path, digest)
    return digest


# ------------------------------------------------------------------------------------------- contents


def checkpoint_format(path: str | os.PathLike[str]) -> str:
    """'zip' (torch.save), 'safetensors', 'pickle' (legacy torch.save), 'html' (an error or login page saved
    in its place) or 'unknown', from the first bytes. stdlib only: the downloader and Blender use it too."""
    path = Path(path)
    with open(path, "rb") as fh:
        head = fh.read(512)
    if head.startswith(b"PK\x03\x04"):
        return "zip"
    if len(head) >= 9:
        header_len = int.from_bytes(head[:8], "little")
        if head[8:9] == b"{" and 0 < header_len <= path.stat().st_size - 8:
            return "safetensors"
    if head[:1] == b"\x80":  # pickle protocol marker
        return "pickle"
    if head.lstrip().lower().startswith((b"<!doctype html", b"<html", b"<?xml", b"<head", b"{\"error")):
        return "html"
    return "unknown"


def checkpoint_file_problem(path: str | os.PathLike[str], expected_size: int | None = None) -> str | None:
    """Why `path` cannot be a checkpoint file (a few words), or None when it plausibly is one."""
    path = Path(path)
    try:
        size = path.stat().st_size
        kind = checkpoint_format(path)
    except OSError as exc:
        return f"it cannot be read ({exc.strerror or exc})"
    if size == 0:
        return "it is empty"
    if kind == "html":
        return "it is a web page (HTML), not a checkpoint"
    if kind == "unknown":
        return "it is not a PyTorch or safetensors checkpoint"
    if expected_size is not None and size != expected_size:
        return f"it has {size:,} bytes, the published file has {expected_size:,}"
    return None

