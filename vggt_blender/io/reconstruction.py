"""The versioned `.npz` reconstruction file (schema version 1, see docs/RECONSTRUCTION_FILE.md).

numpy only: Blender reads these files without torch. Strings are stored as numpy unicode arrays and the
file is opened with `allow_pickle=False`, so reading a file never runs code from it.

Consistent by construction: `world_points`, `intrinsics` and `valid_mask` are not stored state of a
`Reconstruction` but derived from the primaries (depth, extrinsics, intrinsics_model, pixel_map, valid_box) by
`geometry.derive`, cached, and dropped whenever a primary is assigned; the primaries are read-only arrays, so
an in-place edit cannot leave the cache stale. A camera refinement assigns new extrinsics/intrinsics_model and
the points follow. Files still carry the derived arrays (schema v1: readers of older versions use them); on
load their dtype and shape are checked like every entry, but their values are recomputed, never trusted.
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
from ..geometry.alignment import ALIGNMENT_KEY, alignment_or_default, alignment_problem
from ..geometry.derive import DERIVED_FROM, derive

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
# VGGT's point head writes these; VGGT-Omega has no point head, so its files leave both out (never an invented
# stand-in). They are present together or not at all, and checked like every other field when present.
POINT_MAP_FIELDS = ("point_map", "point_map_conf")
REQUIRED_KEYS = HEADER_KEYS + tuple(name for name in FIELDS if name not in POINT_MAP_FIELDS)
# Written to every file, recomputed from the primaries on load (geometry/derive.py).
DERIVED_FIELDS = tuple(DERIVED_FROM)
PRIMARY_FIELDS = tuple(name for name in FIELDS if name not in DERIVED_FROM)
# The primaries some derived array follows from: stored as read-only arrays.
_DERIVATION_INPUTS = frozenset(name for inputs in DERIVED_FROM.values() for name in inputs)


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


def _read_only(arr: Any) -> Any:
    """A read-only view (the caller's own array stays writable)."""
    if not isinstance(arr, np.ndarray):
        return arr
    view = arr.view()
    view.flags.writeable = False
    return view


@dataclass
class Reconstruction:
    """Everything one reconstruction produced, in the units and conventions of docs/ARCHITECTURE.md.

    `image_paths`, `display_paths` and `image_names` are plain Python lists of str; every other field is a
    numpy array with the dtype and shape of the schema table. `provenance` is the JSON text stored in the
    file (see `provenance_dict`). `extra` holds any additional arrays (kept on save and load, not checked).
    `world_points`, `intrinsics` and `valid_mask` are read-only properties derived from the primaries (see
    the module text); depth, extrinsics, intrinsics_model, pixel_map and valid_box are read-only arrays:
    change them by assigning a new array (or `dataclasses.replace`).
    """

    image_paths: list[str]
    display_paths: list[str]
    image_names: list[str]
    original_sizes: np.ndarray
    model_size: np.ndarray
    pixel_map: np.ndarray
    valid_box: np.ndarray
    extrinsics: np.ndarray
    intrinsics_model: np.ndarray
    depth: np.ndarray
    depth_conf: np.ndarray
    point_map: np.ndarray | None
    point_map_conf: np.ndarray | None
    colors: np.ndarray
    provenance: str = "{}"
    extra: dict[str, np.ndarray] = field(default_factory=dict)

    def __setattr__(self, name: str, value: Any) -> None:
        # Every assignment (the constructor's included) coerces, freezes the derivation inputs and drops the
        # derived arrays that follow from the field.
        if name in ("image_paths", "display_paths", "image_names"):
            value = _as_str_list(value)
        elif name in FIELDS and not (value is None and name in POINT_MAP_FIELDS):
            value = _coerce(name, value)
            if name in _DERIVATION_INPUTS:
                value = _read_only(value)
        elif name == "provenance" and isinstance(value, dict):
            value = json.dumps(value, sort_keys=True)
        object.__setattr__(self, name, value)
        cache = self.__dict__.get("_derived")
        if cache and name in _DERIVATION_INPUTS:
            for derived, inputs in DERIVED_FROM.items():
                if name in inputs:
                    cache.pop(derived, None)

    def _derive(self, name: str) -> np.ndarray:
        cache = self.__dict__.setdefault("_derived", {})
        if name not in cache:
            arr = derive(name, self.depth, self.extrinsics, self.intrinsics_model, self.pixel_map, self.valid_box)
            arr.flags.writeable = False
            cache[name] = arr
        return cache[name]

    @property
    def world_points(self) -> np.ndarray:
        """float32 [N,H,W,3]: depth unprojected through each model pixel's centre (geometry/derive.py)."""
        return self._derive("world_points")

    @property
    def intrinsics(self) -> np.ndarray:
        """float64 [N,3,3]: K for the original photo = pixel_map ∘ intrinsics_model."""
        return self._derive("intrinsics")

    @property
    def valid_mask(self) -> np.ndarray:
        """bool [N,H,W]: True inside valid_box (the photo), False on padding."""
        return self._derive("valid_mask")

    @property
    def has_point_map(self) -> bool:
        """False for VGGT-Omega reconstructions (no point head): only the depth point source exists."""
        return self.point_map is not None

    @property
    def model_family(self) -> str:
        """"vggt" or "vggt-omega", from the provenance (files written before it was recorded are VGGT's)."""
        family = self.provenance_dict.get("model_family")
        return family if isinstance(family, str) and family else "vggt"

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
        """Raise ReconstructionFileError (naming `file`) unless every field matches the schema (the derived
        arrays do by construction once the primaries do)."""
        if (self.point_map is None) != (self.point_map_conf is None):
            raise ReconstructionFileError(f"{file}: 'point_map' and 'point_map_conf' go together: one of them "
                                          "is missing", file=str(file))
        names = self._present(PRIMARY_FIELDS)
        _check_fields(self._arrays(names), str(file), names)
        _check_alignment(self.extra, str(file))

    def _present(self, names: Sequence[str] = tuple(FIELDS)) -> tuple[str, ...]:
        """`names` less the point-map fields when this reconstruction has none."""
        return tuple(n for n in names if self.has_point_map or n not in POINT_MAP_FIELDS)

    # Optional key `alignment` (float64 4x4 scene_from_world, geometry/alignment.py), kept in `extra` so save and
    # load carry it like any extra array; files without it get the default axis change.
    @property
    def alignment(self) -> np.ndarray:
        return alignment_or_default(self.extra.get(ALIGNMENT_KEY))

    @alignment.setter
    def alignment(self, matrix: np.ndarray) -> None:
        self.extra[ALIGNMENT_KEY] = np.array(matrix, dtype=np.float64)

    def _arrays(self, names: Sequence[str] = tuple(FIELDS)) -> dict[str, np.ndarray]:
        out: dict[str, np.ndarray] = {}
        for name in names:
            dtype = FIELDS[name][0]
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


def _check_fields(arrays: dict[str, np.ndarray], file: str, names: Sequence[str] = tuple(FIELDS)) -> None:
    """Check dtypes and shapes of `names` against the schema; N, H and W come from image_paths and depth."""
    def fail(problem: str) -> None:
        raise ReconstructionFileError(f"{file}: {problem}", file=file)

    for name in names:
        dtype = FIELDS[name][0]
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
    for name in names:
        template = FIELDS[name][1]
        want = tuple(sizes[t] if isinstance(t, str) else t for t in template)
        got = arrays[name].shape
        if got != want:
            fail(f"'{name}' has shape {list(got)}, expected {_shape_text(template)} = {list(want)} "
                 f"(N={n} images, model input {sizes['H']}x{sizes['W']})")
    model_w, model_h = (int(v) for v in arrays["model_size"])
    if (model_h, model_w) != (sizes["H"], sizes["W"]):
        fail(f"'model_size' says {model_w}x{model_h} (width x height) but the depth maps are "
             f"{sizes['W']}x{sizes['H']}")


def _check_alignment(extra: dict[str, np.ndarray], file: str) -> None:
    """The optional `alignment` key, when present, must be a valid similarity (geometry/alignment.py)."""
    if ALIGNMENT_KEY in extra:
        problem = alignment_problem(extra[ALIGNMENT_KEY])
        if problem:
            raise ReconstructionFileError(f"{file}: '{ALIGNMENT_KEY}' {problem}", file=file)


# ------------------------------------------------------------------------------------------- save/load


def save_reconstruction(path: str | os.PathLike[str], rec: Reconstruction, compress: bool | None = None) -> Path:
    """Write `rec` to `path` atomically and return the path.

    The data goes to a temporary file in the same folder (name starting with TEMP_PREFIX) that is renamed
    over `path` only once complete, so `path` is either the old file, the new one, or absent — never half
    written. The temporary file is removed on any error (including KeyboardInterrupt). `compress` uses
    zip deflate: smaller (colours, masks) but several times slower to write; None (the default) compresses
    long shots only (io/shot_fields.py). A shot (video or image sequence) is written member by member with
    its derived arrays computed a block of frames at a time (io/spool.py), so that a long shot's world points
    never exist whole in memory; the file is the same.
    """
    from .shot_fields import is_shot, long_shot

    path = Path(path)
    if compress is None:
        compress = long_shot(rec.extra, rec.num_images)
    if is_shot(rec.extra):
        from .spool import save_reconstruction_streamed

        return save_reconstruction_streamed(path, rec, compress=compress)
    rec.validate(path)
    arrays: dict[str, np.ndarray] = {
        "schema": np.array(SCHEMA),
        "schema_version": np.array(SCHEMA_VERSION, dtype=np.int64),
        "provenance": np.array(rec.provenance),
    }
    arrays.update(rec._arrays(rec._present()))
    for name, value in rec.extra.items():
        if name in arrays:
            raise ReconstructionFileError(f"{path}: extra array '{name}' clashes with a schema key", file=str(path))
        arr = np.asarray(value)
        if arr.dtype.hasobject:
            raise ReconstructionFileError(f"{path}: extra array '{name}' holds Python objects", file=str(path))
        arrays[name] = arr

    with atomic_write(path, ReconstructionFileError, "the file", fsync=True) as fh:
        _write_npz(fh, arrays, compress)
    return path


def _write_npz(fh: Any, arrays: dict[str, np.ndarray], compress: bool) -> None:
    """np.savez's layout (one `.npy` member per array, zip64), with the archive let go of when a write fails:
    np.savez leaves its ZipFile open then, and the ZipFile's __del__ later prints a traceback ("Exception
    ignored in ZipFile.__del__") after the one-line error of a full disk or a cancel."""
    import contextlib
    import zipfile

    archive = zipfile.ZipFile(fh, mode="w", compression=zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED,
                              allowZip64=True)
    try:
        for name, value in arrays.items():
            with archive.open(f"{name}.npy", "w", force_zip64=True) as member:
                np.lib.format.write_array(member, np.asanyarray(value), allow_pickle=False)
    except BaseException:
        with contextlib.suppress(Exception):
            archive.close()  # may fail again on a full disk; either way the archive lets go of the file
        raise
    archive.close()


def _read_scalar_str(z: Any, key: str, file: str) -> str:
    arr = z[key]
    if arr.dtype.kind != "U" or arr.ndim != 0:
        raise ReconstructionFileError(f"{file}: '{key}' should be a string, found {arr.dtype} {list(arr.shape)}",
                                      file=file)
    return str(arr[()])


# Optional entries later features add (key -> (dtype, shape template), as FIELDS): checked as strictly as the
# required ones. Other entries land in `extra`; the loader runs inside Blender's process, so together they may
# not inflate to more than the schema arrays themselves plus _EXTRA_BYTES_LIMIT.
OPTIONAL_FIELDS: dict[str, tuple[str, tuple[Any, ...]]] = {}
_EXTRA_BYTES_LIMIT = 64 << 20
_HEADER_BYTES_LIMIT = 1 << 20


def _member_shapes(path: Path, file: str) -> dict[str, tuple[np.dtype, tuple[int, ...]]]:
    """dtype and shape of every .npy member, read from its header only (no member is decompressed whole).

    A zip bomb (a small file whose members inflate to gigabytes) is stopped here: each member's declared
    uncompressed size must equal its header plus dtype x shape, and `_check_member_sizes` bounds the shapes
    by the schema before anything is read."""
    import zipfile

    def fail(problem: str) -> None:
        raise ReconstructionFileError(f"{file}: {problem}", file=file)

    shapes: dict[str, tuple[np.dtype, tuple[int, ...]]] = {}
    with open(path, "rb") as fh:
        if fh.read(6) == b"\x93NUMPY":
            fail("not a reconstruction file (a single .npy array, not an .npz archive)")
    try:
        with zipfile.ZipFile(path) as zf:
            for info in zf.infolist():
                if not info.filename.endswith(".npy"):
                    fail(f"unexpected entry '{info.filename}' (not a numpy array)")
                name = info.filename[:-4]
                with zf.open(info) as fh:
                    version = np.lib.format.read_magic(fh)
                    if version == (1, 0):
                        shape, _fortran, dtype = np.lib.format.read_array_header_1_0(fh)
                    elif version == (2, 0):
                        shape, _fortran, dtype = np.lib.format.read_array_header_2_0(fh)
                    else:
                        fail(f"entry '{name}' uses an unsupported .npy version {version}")
                    header_end = fh.tell()
                if dtype.hasobject:
                    fail(f"entry '{name}' holds Python objects, which this file format never stores")
                nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
                if info.file_size != header_end + nbytes:
                    fail(f"entry '{name}' is damaged: it declares {info.file_size:,} bytes but its header "
                         f"describes {header_end + nbytes:,}")
                shapes[name] = (dtype, tuple(int(d) for d in shape))
    except ReconstructionFileError:
        raise
    except Exception as exc:  # noqa: BLE001 - BadZipFile, truncated headers, ValueError from numpy
        fail(f"not a reconstruction file (not a readable .npz archive: {exc})")
    return shapes


def _check_member_sizes(shapes: dict[str, tuple[np.dtype, tuple[int, ...]]], file: str) -> None:
    """Refuse unknown entries and entries larger than the schema allows, before any is read."""
    def fail(problem: str) -> None:
        raise ReconstructionFileError(f"{file}: {problem}", file=file)

    def nbytes(key: str) -> int:
        dtype, shape = shapes[key]
        return int(np.prod(shape, dtype=np.int64)) * dtype.itemsize

    known = {**FIELDS, **OPTIONAL_FIELDS}
    for key in HEADER_KEYS:
        if key in shapes and nbytes(key) > _HEADER_BYTES_LIMIT:
            fail(f"entry '{key}' is implausibly large ({nbytes(key):,} bytes)")
    if "image_paths" not in shapes or "depth" not in shapes:
        return  # the missing-entries check names them
    n = shapes["image_paths"][1][0] if len(shapes["image_paths"][1]) == 1 else -1
    depth = shapes["depth"][1]
    if len(depth) != 3:
        return  # _check_fields reports it
    sizes = {"N": n, "H": depth[1], "W": depth[2]}
    for name, (dtype, template) in known.items():
        if name not in shapes:
            continue
        # Only the size is bounded here; _check_fields words dtype and shape problems once the file is read.
        want = tuple(sizes[t] if isinstance(t, str) else t for t in template)
        itemsize = 4 * 4096 if dtype == "U" else np.dtype(dtype).itemsize  # paths: up to 4,096 characters
        allowed = int(np.prod([max(d, 0) for d in want], dtype=np.int64)) * itemsize
        if nbytes(name) > max(allowed, 1 << 16):
            fail(f"'{name}' would inflate to {nbytes(name):,} bytes ({shapes[name][0]} {list(shapes[name][1])}); "
                 f"the schema allows {_shape_text(template)} = {list(want)} (N={n} images, model input "
                 f"{sizes['H']}x{sizes['W']}): a damaged or malicious file")
    extra = [k for k in shapes if k not in known and k not in HEADER_KEYS]
    limit = sum(nbytes(k) for k in shapes if k in known) + _EXTRA_BYTES_LIMIT
    if sum(nbytes(k) for k in extra) > limit:
        fail(f"its extra entries ({', '.join(sorted(extra)[:3])}) would inflate to "
             f"{sum(nbytes(k) for k in extra):,} bytes, more than a reconstruction of this size can hold")


def _check_finite(arrays: dict[str, np.ndarray], file: str) -> None:
    """NaN or Inf in cameras or depth would build a scene of NaN objects: refuse them with the reason."""
    for name in ("extrinsics", "intrinsics_model", "pixel_map", "depth", "depth_conf", "intrinsics"):
        bad = ~np.isfinite(arrays[name])
        if bad.any():
            views = sorted({int(i) for i in np.nonzero(bad.reshape(len(bad), -1).any(axis=1))[0]})
            shown = ", ".join(str(v) for v in views[:5]) + (" ..." if len(views) > 5 else "")
            raise ReconstructionFileError(
                f"{file}: '{name}' holds NaN or infinite values (view{'s' if len(views) > 1 else ''} {shown}); "
                "the model or the checkpoint that produced it is broken: run the reconstruction again with a "
                "good checkpoint", file=file)


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
    if not path.is_file():
        fail("is not a regular file (a pipe or device?), not a reconstruction file")
    _check_member_sizes(_member_shapes(path, file), file)
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
            point_map_keys = [k for k in POINT_MAP_FIELDS if k in keys]
            if len(point_map_keys) == 1:
                other = next(k for k in POINT_MAP_FIELDS if k not in keys)
                fail(f"has '{point_map_keys[0]}' but not '{other}': the point map and its confidence go together")
            names = [name for name in FIELDS if name in REQUIRED_KEYS or name in point_map_keys]
            arrays = {name: z[name] for name in names}
            extra = {name: z[name] for name in sorted(keys - set(REQUIRED_KEYS) - set(point_map_keys))}
        except ReconstructionFileError:
            raise
        except Exception as exc:  # noqa: BLE001 - truncated/corrupted members: CRC, zlib, EOF, pickle...
            fail(f"damaged file, an entry cannot be read ({type(exc).__name__}: {exc})", exc)

    _check_fields(arrays, file, names)  # the stored derived arrays too: the file must conform to schema v1
    _check_finite(arrays, file)
    _check_alignment(extra, file)
    # Shot files (video / image sequence) carry optional keys in `extra`: see io/shot_fields.py.
    from .shot_fields import check_shot_fields

    check_shot_fields(extra, int(arrays["image_paths"].shape[0]), file)
    return Reconstruction(
        **{name: (arrays[name].tolist() if FIELDS[name][0] == "U" else arrays.get(name))
           for name in PRIMARY_FIELDS},
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
    no_point_map: bool = False,
    image_paths: Sequence[str | os.PathLike[str]] | None = None,
    display_paths: Sequence[str | os.PathLike[str]] | None = None,
    original_sizes: np.ndarray | None = None,
    pixel_map: np.ndarray | None = None,
    valid_box: np.ndarray | None = None,
    provenance: dict[str, Any] | str | None = None,
) -> Reconstruction:
    """Build a valid Reconstruction from the essentials, with defaults for everything not given.

    Defaults: identity pixel map (photo = model input), full valid box, original sizes = model size,
    point_map = world_points (none at all with `no_point_map`, as VGGT-Omega writes), confidences 1, grey colours, image paths `/images/image_<i>.png`, names = file
    stems, display paths = image paths. world_points, intrinsics and valid_mask are derived (geometry/derive.py).
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
    if isinstance(provenance, dict):
        provenance = json.dumps(provenance, sort_keys=True)
    rec = Reconstruction(
        image_paths=paths,
        display_paths=_as_str_list(display_paths) if display_paths is not None else list(paths),
        image_names=[Path(p).stem for p in paths],
        original_sizes=np.asarray(original_sizes, dtype=np.int32),
        model_size=np.array([w, h], dtype=np.int32),
        pixel_map=pixel_map,
        valid_box=valid_box,
        extrinsics=extrinsics,
        intrinsics_model=intrinsics_model,
        depth=depth,
        depth_conf=np.ones_like(depth) if depth_conf is None else np.asarray(depth_conf, dtype=np.float32),
        point_map=np.zeros((n, h, w, 3), np.float32) if point_map is None else np.asarray(point_map, np.float32),
        point_map_conf=(np.ones_like(depth) if point_map_conf is None
                        else np.asarray(point_map_conf, dtype=np.float32)),
        colors=(np.full((n, h, w, 3), 128, dtype=np.uint8) if colors is None
                else np.asarray(colors, dtype=np.uint8)),
        provenance=provenance if provenance is not None else "{}",
    )
    if no_point_map:
        rec.point_map = rec.point_map_conf = None
    elif point_map is None:
        rec.point_map = rec.world_points.copy()
    return rec


__all__ = [
    "SCHEMA", "SCHEMA_VERSION", "FIELDS", "REQUIRED_KEYS", "TEMP_PREFIX", "Reconstruction",
    "PRIMARY_FIELDS", "DERIVED_FIELDS", "POINT_MAP_FIELDS", "save_reconstruction", "load_reconstruction", "make_reconstruction",
    "make_provenance",
]
