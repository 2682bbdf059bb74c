"""The versioned `.npz` reconstruction file (schema version 1, see docs/RECONSTRUCTION_FILE.md).

numpy only: Blender reads these files without torch. Strings are stored as numpy unicode arrays and the
file is opened with `allow_pickle=False`, so reading a file never runs code from it.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .atomic import TEMP_PREFIX, atomic_write
from ..errors import ReconstructionFileError
from ..geometry.cameras import depth_to_world_points, pixel_map_matrix, valid_mask_from_boxes

SCHEMA = "vggt_blender.reconstruction"
SCHEMA_VERSION = 1
# Prefix of the temporary file a save writes before renaming it into place. Readers and folder scans can
# skip names that start with it: such a file is a save that never finished.

# key -> (dtype, shape template). Shape letters: N images, H/W model input, digits are literal.
# "U" means a numpy unicode string array of any width.
FIELDS: dict[str, tuple[str, tuple[Any, ...]]] = {
    "image_paths": ("U", ("N",)),
    "display_paths": ("U", ("N",)),
    "image_names": ("U", ("N",)),
    "original_sizes": ("int32", ("N", 2)),
    "model_size": ("int32", (2,)),
    "pixel_map": ("float64", ("N", 4)),
    "valid_box": ("int32", ("N", 4)),
    "extrinsics": ("float64", ("N", 3, 4)),
    "intrinsics": ("float64", ("N", 3, 3)),
    "intrinsics_model": ("float64", ("N", 3, 3)),
    "depth": ("float32", ("N", "H", "W")),
    "depth_conf": ("float32", ("N", "H", "W")),
    "world_points": ("float32", ("N", "H", "W", 3)),
    "point_map": ("float32", ("N", "H", "W", 3)),
    "point_map_conf": ("float32", ("N", "H", "W")),
    "colors": ("uint8", ("N", "H", "W", 3)),
    "valid_mask": ("bool", ("N", "H", "W")),
}
HEADER_KEYS = ("schema", "schema_version", "provenance")
REQUIRED_KEYS = HEADER_KEYS + tuple(FIELDS)


def _as_str_list(values: Any) -> list[str]:
    if isinstance(values, (str, os.PathLike)):
        raise TypeError("expected a sequence of strings, got a single string")
    return [os.fspath(v) if isinstance(v, os.PathLike) else str(v) for v in values]


def _coerce(name: str, value: Any) -> Any:
    """Bring an array to its schema dtype when that loses nothing essential (float64 -> float32 etc.).

    Anything else (floats for uint8 colours, ints for the bool mask) is left alone so that validation
    reports it instead of silently truncating.
    """
    dtype = FIELDS[name][0]
    arr = np.asarray(value)
    if dtype == "U" or arr.dtype == np.dtype(dtype):
        return arr
    if np.can_cast(arr.dtype, np.dtype(dtype), casting="same_kind"):
        return arr.astype(dtype)
    return arr


@dataclass
class Reconstruction:
    """Everything one reconstruction produced, in the units and conventions of docs/ARCHITECTURE.md.

    `image_paths`, `display_paths` and `image_names` are plain Python lists of str; every other field is a
    numpy array with the dtype and shape of the schema table. `provenance` is the JSON text stored in the
    file (see `provenance_dict`). `extra` holds any additional arrays (kept on save and load, not checked).
    """

    image_paths: list[str]
    display_paths: list[str]
    image_names: list[str]
    original_sizes: np.ndarray
    model_size: np.ndarray
    pixel_map: np.ndarray
    valid_box: np.ndarray
    extrinsics: np.ndarray
    intrinsics: np.ndarray
    intrinsics_model: np.ndarray
    depth: np.ndarray
    depth_conf: np.ndarray
    world_points: np.ndarray
    point_map: np.ndarray
    point_map_conf: np.ndarray
    colors: np.ndarray
    valid_mask: np.ndarray
    provenance: str = "{}"
    extra: dict[str, np.ndarray] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("image_paths", "display_paths", "image_names"):
            setattr(self, name, _as_str_list(getattr(self, name)))
        for name, (dtype, _) in FIELDS.items():
            if dtype != "U":
                setattr(self, name, _coerce(name, getattr(self, name)))
        if isinstance(self.provenance, dict):
            self.provenance = json.dumps(self.provenance, sort_keys=True)

    @property
    def num_images(self) -> int:
        return len(self.image_paths)

    @property
    def model_hw(self) -> tuple[int, int]:
        """(height, width) of the model input."""
        return int(self.model_size[1]), int(self.model_size[0])

    @property
    def provenance_dict(self) -> dict[str, Any]:
        try:
            data = json.loads(self.provenance)
        except (TypeError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def validate(self, file: str | os.PathLike[str] = "<reconstruction>") -> None:
        """Raise ReconstructionFileError (naming `file`) unless every field matches the schema."""
        _check_fields(self._arrays(), str(file))

    def _arrays(self) -> dict[str, np.ndarray]:
        out: dict[str, np.ndarray] = {}
        for name, (dtype, _) in FIELDS.items():
            value = getattr(self, name)
            if dtype == "U":
                # dtype=str keeps an empty list a unicode array instead of float64.
                out[name] = np.array(list(value), dtype=str)
            else:
                out[name] = np.asarray(value)
        return out


# ----------------------------------------------------------------------------------------------- checks


def _shape_text(template: tuple[Any, ...]) -> str:
    return "[" + ",".join(str(t) for t in template) + "]"


def _check_fields(arrays: dict[str, np.ndarray], file: str) -> None:
    """Check dtypes and shapes against the schema; N, H and W come from image_paths and depth."""
    def fail(problem: str) -> None:
        raise ReconstructionFileError(f"{file}: {problem}", file=file)

    for name, (dtype, _) in FIELDS.items():
        arr = arrays[name]
        ok = arr.dtype.kind == "U" if dtype == "U" else arr.dtype == np.dtype(dtype)
        if not ok:
            want = "a unicode string array" if dtype == "U" else dtype
            fail(f"'{name}' has dtype {arr.dtype}, expected {want}")

    n = arrays["image_paths"].shape[0] if arrays["image_paths"].ndim == 1 else -1
    if n <= 0:
        fail("'image_paths' must list at least one image")
    depth = arrays["depth"]
    if depth.ndim != 3:
        fail(f"'depth' has shape {list(depth.shape)}, expected [N,H,W]")
    sizes = {"N": n, "H": depth.shape[1], "W": depth.shape[2]}
    for name, (_, template) in FIELDS.items():
        want = tuple(sizes[t] if isinstance(t, str) else t for t in template)
        got = arrays[name].shape
        if got != want:
            fail(f"'{name}' has shape {list(got)}, expected {_shape_text(template)} = {list(want)} "
                 f"(N={n} images, model input {sizes['H']}x{sizes['W']})")
    model_w, model_h = (int(v) for v in arrays["model_size"])
    if (model_h, model_w) != (sizes["H"], sizes["W"]):
        fail(f"'model_size' says {model_w}x{model_h} (width x height) but the depth maps are "
             f"{sizes['W']}x{sizes['H']}")


# ------------------------------------------------------------------------------------------- save/load


def save_reconstruction(path: str | os.PathLike[str], rec: Reconstruction, compress: bool = False) -> Path:
    """Write `rec` to `path` atomically and return the path.

    The data goes to a temporary file in the same folder (name starting with TEMP_PREFIX) that is renamed
    over `path` only once complete, so `path` is either the old file, the new one, or absent — never half
    written. The temporary file is removed on any error (including KeyboardInterrupt). `compress` uses
    zip deflate: smaller (colours, masks) but several times slower to write.
    """
    path = Path(path)
    rec.validate(path)
    arrays: dict[str, np.ndarray] = {
        "schema": np.array(SCHEMA),
        "schema_version": np.array(SCHEMA_VERSION, dtype=np.int64),
        "provenance": np.array(rec.provenance),
    }
    arrays.update(rec._arrays())
    for name, value in rec.extra.items():
        if name in arrays:
            raise ReconstructionFileError(f"{path}: extra array '{name}' clashes with a schema key", file=str(path))
        arr = np.asarray(value)
        if arr.dtype.hasobject:
            raise ReconstructionFileError(f"{path}: extra array '{name}' holds Python objects", file=str(path))
        arrays[name] = arr

    with atomic_write(path, ReconstructionFileError, "the file", fsync=True) as fh:
        (np.savez_compressed if compress else np.savez)(fh, **arrays)
    return path


def _read_scalar_str(z: Any, key: str, file: str) -> str:
    arr = z[key]
    if arr.dtype.kind != "U" or arr.ndim != 0:
        raise ReconstructionFileError(f"{file}: '{key}' should be a string, found {arr.dtype} {list(arr.shape)}",
                                      file=file)
    return str(arr[()])


def load_reconstruction(path: str | os.PathLike[str]) -> Reconstruction:
    """Read and check a reconstruction file; any problem raises ReconstructionFileError naming the file."""
    path = Path(path)
    file = str(path)

    def fail(problem: str, cause: BaseException | None = None) -> None:
        raise ReconstructionFileError(f"{file}: {problem}", file=file) from cause

    if not path.exists():
        fail("file not found")
    if path.is_dir():
        fail("is a folder, not a reconstruction file")
    try:
        opened = np.load(path, allow_pickle=False)
    except Exception as exc:  # noqa: BLE001 - np.load raises many types for foreign bytes
        fail(f"not a reconstruction file (not a readable .npz archive: {exc})", exc)
    if not isinstance(opened, np.lib.npyio.NpzFile):
        fail("not a reconstruction file (a single .npy array, not an .npz archive)")

    with opened as z:
        keys = set(z.files)
        try:
            if "schema" not in keys:
                fail("not a vggt_blender reconstruction file (no 'schema' entry)")
            schema = _read_scalar_str(z, "schema", file)
            if schema != SCHEMA:
                fail(f"not a vggt_blender reconstruction file (schema is '{schema}', expected '{SCHEMA}')")
            if "schema_version" not in keys:
                fail("no 'schema_version' entry")
            version_arr = z["schema_version"]
            if version_arr.ndim != 0 or version_arr.dtype.kind not in "iu":
                fail(f"'schema_version' should be an integer, found {version_arr.dtype} {list(version_arr.shape)}")
            version = int(version_arr)
            if version != SCHEMA_VERSION:
                hint = ("it was written by a newer vggt_blender; update the add-on"
                        if version > SCHEMA_VERSION else "it was written by an older vggt_blender; "
                        "run the reconstruction again")
                fail(f"file has schema version {version}, this vggt_blender reads version {SCHEMA_VERSION} "
                     f"({hint})")
            missing = [k for k in REQUIRED_KEYS if k not in keys]
            if missing:
                fail(f"missing {len(missing)} required entr{'y' if len(missing) == 1 else 'ies'}: "
                     + ", ".join(missing))
            provenance = _read_scalar_str(z, "provenance", file)
            try:
                json.loads(provenance)
            except ValueError as exc:
                fail(f"'provenance' is not valid JSON ({exc})", exc)
            arrays = {name: z[name] for name in FIELDS}
            extra = {name: z[name] for name in sorted(keys - set(REQUIRED_KEYS))}
        except ReconstructionFileError:
            raise
        except Exception as exc:  # noqa: BLE001 - truncated/corrupted members: CRC, zlib, EOF, pickle...
            fail(f"damaged file, an entry cannot be read ({type(exc).__name__}: {exc})", exc)

    _check_fields(arrays, file)
    # Shot files (video / image sequence) carry optional keys in `extra`: see io/shot_fields.py.
    from .shot_fields import check_shot_fields

    check_shot_fields(extra, int(arrays["image_paths"].shape[0]), file)
    return Reconstruction(
        **{name: (arrays[name].tolist() if FIELDS[name][0] == "U" else arrays[name]) for name in FIELDS},
        provenance=provenance,
        extra=extra,
    )


# ------------------------------------------------------------------------------------------ provenance


def make_provenance(
    checkpoint: str | None = None,
    checkpoint_sha256: str | None = None,
    mode: str | None = None,
    precision: str | None = None,
    device: str | None = None,
    timings: dict[str, float] | None = None,
    **more: Any,
) -> dict[str, Any]:
    """The provenance record with its conventional keys (see docs/RECONSTRUCTION_FILE.md).

    `timings` maps a stage name ("loading", "preprocessing", "inference", "writing", ...) to seconds.
    `package_version` and `created` (ISO 8601, UTC) are filled in; extra keyword arguments are kept.
    """
    from .. import __version__

    record: dict[str, Any] = {
        "checkpoint": checkpoint,
        "checkpoint_sha256": checkpoint_sha256,
        "mode": mode,
        "precision": precision,
        "device": device,
        "timings": dict(timings or {}),
        "package_version": __version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    record.update(more)
    return record


# ------------------------------------------------------------------------------------------- builders


def make_reconstruction(
    depth: np.ndarray,
    extrinsics: np.ndarray,
    intrinsics_model: np.ndarray,
    *,
    colors: np.ndarray | None = None,
    depth_conf: np.ndarray | None = None,
    point_map: np.ndarray | None = None,
    point_map_conf: np.ndarray | None = None,
    image_paths: Sequence[str | os.PathLike[str]] | None = None,
    display_paths: Sequence[str | os.PathLike[str]] | None = None,
    original_sizes: np.ndarray | None = None,
    pixel_map: np.ndarray | None = None,
    valid_box: np.ndarray | None = None,
    provenance: dict[str, Any] | str | None = None,
) -> Reconstruction:
    """Build a valid Reconstruction from the essentials, deriving everything not given.

    Defaults: identity pixel map (photo = model input), full valid box, original sizes = model size,
    world_points by unprojecting depth, point_map = world_points, confidences 1, grey colours,
    image paths `/images/image_<i>.png`, names = file stems, display paths = image paths,
    intrinsics = A @ intrinsics_model with A from the pixel map, valid_mask from the valid box.
    """
    depth = np.asarray(depth, dtype=np.float32)
    n, h, w = depth.shape
    extrinsics = np.asarray(extrinsics, dtype=np.float64)
    intrinsics_model = np.asarray(intrinsics_model, dtype=np.float64)
    paths = _as_str_list(image_paths) if image_paths is not None else [f"/images/image_{i:03d}.png"
                                                                      for i in range(n)]
    if pixel_map is None:
        pixel_map = np.tile(np.array([1.0, 1.0, 0.0, 0.0]), (n, 1))
    pixel_map = np.asarray(pixel_map, dtype=np.float64)
    if valid_box is None:
        valid_box = np.tile(np.array([0, 0, w, h], dtype=np.int32), (n, 1))
    valid_box = np.asarray(valid_box, dtype=np.int32)
    if original_sizes is None:
        original_sizes = np.tile(np.array([w, h], dtype=np.int32), (n, 1))
    affine = pixel_map_matrix(pixel_map)
    valid_mask = valid_mask_from_boxes(valid_box, h, w)
    world_points = depth_to_world_points(depth, extrinsics, intrinsics_model, dtype=np.float32)
    if isinstance(provenance, dict):
        provenance = json.dumps(provenance, sort_keys=True)
    return Reconstruction(
        image_paths=paths,
        display_paths=_as_str_list(display_paths) if display_paths is not None else list(paths),
        image_names=[Path(p).stem for p in paths],
        original_sizes=np.asarray(original_sizes, dtype=np.int32),
        model_size=np.array([w, h], dtype=np.int32),
        pixel_map=pixel_map,
        valid_box=valid_box,
        extrinsics=extrinsics,
        intrinsics=affine @ intrinsics_model,
        intrinsics_model=intrinsics_model,
        depth=depth,
        depth_conf=np.ones_like(depth) if depth_conf is None else np.asarray(depth_conf, dtype=np.float32),
        world_points=world_points,
        point_map=world_points.copy() if point_map is None else np.asarray(point_map, dtype=np.float32),
        point_map_conf=(np.ones_like(depth) if point_map_conf is None
                        else np.asarray(point_map_conf, dtype=np.float32)),
        colors=(np.full((n, h, w, 3), 128, dtype=np.uint8) if colors is None
                else np.asarray(colors, dtype=np.uint8)),
        valid_mask=valid_mask,
        provenance=provenance if provenance is not None else "{}",
    )


def synthetic_reconstruction(num_images: int = 3, height: int = 28, width: int = 42, seed: int = 0) -> Reconstruction:
    """A small, plausible reconstruction for tests: cameras on an arc looking at a bumpy wall.

    Camera 0 is the identity; the others rotate about the y axis by 10 degrees per image and sit to the
    side. Depth is 2 +- 0.3, confidences span 1..10, colours vary with the pixel. Deterministic in `seed`.
    """
    rng = np.random.default_rng(seed)
    n, h, w = num_images, height, width
    focal = 0.9 * max(h, w)
    k = np.array([[focal, 0.0, w / 2], [0.0, focal, h / 2], [0.0, 0.0, 1.0]])
    extrinsics = np.zeros((n, 3, 4))
    for i in range(n):
        a = np.deg2rad(10.0 * i)
        rot = np.array([[np.cos(a), 0.0, np.sin(a)], [0.0, 1.0, 0.0], [-np.sin(a), 0.0, np.cos(a)]])
        centre = np.array([-0.4 * i, 0.0, 0.05 * i])
        extrinsics[i, :, :3] = rot
        extrinsics[i, :, 3] = -rot @ centre
    yy, xx = np.mgrid[0:h, 0:w]
    depth = 2.0 + 0.3 * np.sin(xx / w * 2 * np.pi)[None] * np.cos(yy / h * np.pi)[None] + rng.uniform(
        -0.01, 0.01, (n, h, w))
    conf = 1.0 + 9.0 * rng.random((n, h, w))
    colors = np.stack([np.broadcast_to(xx * 255 // max(w - 1, 1), (n, h, w)),
                       np.broadcast_to(yy * 255 // max(h - 1, 1), (n, h, w)),
                       np.broadcast_to((np.arange(n) * 60 % 256)[:, None, None], (n, h, w))], axis=-1)
    paths = [f"/photos/synthetic_{i:02d}.jpg" for i in range(n)]
    return make_reconstruction(
        depth, extrinsics, np.repeat(k[None], n, axis=0), colors=colors.astype(np.uint8), depth_conf=conf,
        point_map_conf=conf[:, ::-1].copy(), image_paths=paths,
        provenance=make_provenance(checkpoint="synthetic", mode="crop", precision="fp32", device="cpu",
                                   timings={"inference": 0.0}),
    )


# -------------------------------------------------------------------------------------------- summary


def _fmt_seconds(s: Any) -> str:
    try:
        return f"{float(s):.2f} s"
    except (TypeError, ValueError):
        return str(s)


def summarize(rec: Reconstruction) -> str:
    """A human-readable multi-line description (for `python -m vggt_blender info`)."""
    h, w = rec.model_hw
    prov = rec.provenance_dict
    lines = [f"{rec.num_images} image{'s' if rec.num_images != 1 else ''}, model input {w}x{h} (width x height)"]
    shown = 10
    for i in range(min(rec.num_images, shown)):
        ow, oh = (int(v) for v in rec.original_sizes[i])
        lines.append(f"  [{i}] {rec.image_names[i]}  {ow}x{oh}  {rec.image_paths[i]}")
    if rec.num_images > shown:
        lines.append(f"  ... and {rec.num_images - shown} more")

    sha = prov.get("checkpoint_sha256")
    ckpt = str(prov.get("checkpoint") or "unknown")
    lines.append(f"checkpoint: {ckpt}" + (f" (sha256 {str(sha)[:12]}...)" if sha else ""))
    lines.append(f"device: {prov.get('device') or 'unknown'}, precision: {prov.get('precision') or 'unknown'}, "
                 f"mode: {prov.get('mode') or 'unknown'}")
    timings = prov.get("timings") or {}
    if isinstance(timings, dict) and timings:
        lines.append("timings: " + ", ".join(f"{k} {_fmt_seconds(v)}" for k, v in timings.items()))
    if prov.get("created") or prov.get("package_version"):
        lines.append(f"created: {prov.get('created', 'unknown')} by vggt_blender {prov.get('package_version', '?')}")

    mask = rec.valid_mask
    valid = int(mask.sum())
    lines.append(f"valid pixels: {valid:,} of {mask.size:,}")
    if valid:
        d = rec.depth[mask]
        d = d[np.isfinite(d)]
        if d.size:
            lines.append(f"depth: min {d.min():.4g}, median {np.median(d):.4g}, max {d.max():.4g}")
        for label, conf in (("depth confidence", rec.depth_conf), ("point-map confidence", rec.point_map_conf)):
            c = conf[mask]
            c = c[np.isfinite(c)]
            if c.size:
                p = np.percentile(c, [10, 50, 90])
                lines.append(f"{label}: p10 {p[0]:.3g}, p50 {p[1]:.3g}, p90 {p[2]:.3g}, max {c.max():.3g}")
    if rec.extra:
        lines.append("extra arrays: " + ", ".join(f"{k} {list(np.shape(v))}" for k, v in rec.extra.items()))
    return "\n".join(lines)


__all__ = [
    "SCHEMA", "SCHEMA_VERSION", "FIELDS", "REQUIRED_KEYS", "TEMP_PREFIX", "Reconstruction",
    "save_reconstruction", "load_reconstruction", "summarize", "make_reconstruction",
    "synthetic_reconstruction", "make_provenance",
]
