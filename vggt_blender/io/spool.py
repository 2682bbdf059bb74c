"""Big per-frame arrays of a long shot kept in a file instead of memory, and a shot's reconstruction file
written piece by piece (numpy only).

A 600-frame shot at 518x294 has 1.1 GB of point map (float32 xyz per pixel, the model's own point head) and
as much again of world points when they are derived: held in RAM next to depth, confidences and colours, a
CPU run passes 4 GB. A `SpoolArray` writes each frame of the point map into a temporary file with plain writes
(the page cache, not this process's resident memory). `save_reconstruction_streamed` writes the .npz member
by member: arrays mapped from such a file in pieces (their pages dropped again), and the derived arrays
(world points, valid mask, photo intrinsics) block of frames by block of frames through geometry/derive.py,
so the whole world-point array never exists. The file is the same schema-v1 .npz `save_reconstruction` writes.
"""

from __future__ import annotations

import mmap
import os
import tempfile
import zipfile
from pathlib import Path

import numpy as np

from .atomic import atomic_write
from .reconstruction import DERIVED_FIELDS, PRIMARY_FIELDS, SCHEMA, SCHEMA_VERSION, FIELDS, Reconstruction
from ..errors import ReconstructionFileError
from ..geometry.derive import derive

_PIECE = 64 * 1024 * 1024


class SpoolArray:
    """A [N, ...] array in a temporary file: `spool[i] = frame`, `spool[a:b]` reads frames back."""

    def __init__(self, shape: tuple[int, ...], dtype: np.dtype | type, folder: str | os.PathLike | None = None,
                 name: str = "spool") -> None:
        self.shape = tuple(int(s) for s in shape)
        self.dtype = np.dtype(dtype)
        self.frame_shape = self.shape[1:]
        self.frame_bytes = int(np.prod(self.frame_shape, dtype=np.int64)) * self.dtype.itemsize
        fd, self.path = tempfile.mkstemp(prefix=f".vggt_{name}_", suffix=".raw", dir=folder)
        self._file = os.fdopen(fd, "r+b")
        self._file.truncate(self.shape[0] * self.frame_bytes)

    def __len__(self) -> int:
        return self.shape[0]

    def __setitem__(self, index: int, frame: np.ndarray) -> None:
        data = np.ascontiguousarray(frame, dtype=self.dtype)
        if data.shape != self.frame_shape:
            raise ValueError(f"frame of shape {data.shape}, expected {self.frame_shape}")
        self._file.seek(int(index) * self.frame_bytes)
        self._file.write(data.tobytes())

    def __getitem__(self, index: slice) -> np.ndarray:
        start, stop, step = index.indices(self.shape[0])
        if step != 1:
            raise IndexError("only contiguous slices are read back")
        self._file.flush()
        self._file.seek(start * self.frame_bytes)
        raw = self._file.read((stop - start) * self.frame_bytes)
        return np.frombuffer(raw, dtype=self.dtype).reshape((stop - start,) + self.frame_shape)

    def view(self) -> np.ndarray:
        """A read-only memory map of the array (pages are only read when touched)."""
        self._file.flush()
        return np.memmap(self.path, dtype=self.dtype, mode="r", shape=self.shape)

    def close(self) -> None:
        try:
            self._file.close()
        finally:
            try:
                os.unlink(self.path)
            except OSError:  # Windows keeps a mapped file; the temporary folder is cleaned later
                pass


def _mapping(array: np.ndarray) -> mmap.mmap | None:
    """The file mapping behind `array` (a SpoolArray view or a view of one), if any."""
    base = array
    while base is not None:
        if isinstance(base, np.memmap) and isinstance(getattr(base, "_mmap", None), mmap.mmap):
            return base._mmap
        base = getattr(base, "base", None)
    return None


def _write_header(member, dtype: np.dtype, shape: tuple[int, ...]) -> None:
    header = {"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)), "fortran_order": False, "shape": shape}
    np.lib.format.write_array_header_1_0(member, header)


def _frames_per_piece(shape: tuple[int, ...], dtype: np.dtype) -> int:
    frame_bytes = int(np.prod(shape[1:], dtype=np.int64)) * np.dtype(dtype).itemsize
    return max(1, _PIECE // max(frame_bytes, 1))


def _write_member(zf: zipfile.ZipFile, name: str, array: np.ndarray) -> None:
    """One .npy member; a file-mapped array goes in pieces, each piece's pages dropped after it is written."""
    with zf.open(f"{name}.npy", "w", force_zip64=True) as member:
        mapping = _mapping(array) if isinstance(array, np.ndarray) and array.ndim > 0 else None
        if mapping is None:
            np.lib.format.write_array(member, np.asanyarray(array), allow_pickle=False)
            return
        _write_header(member, array.dtype, array.shape)
        step = _frames_per_piece(array.shape, array.dtype)
        for a in range(0, len(array), step):
            member.write(np.ascontiguousarray(array[a:a + step]).tobytes())
            if hasattr(mapping, "madvise") and hasattr(mmap, "MADV_DONTNEED"):
                mapping.madvise(mmap.MADV_DONTNEED)  # clean file pages: this process's memory stays flat


def _write_derived(zf: zipfile.ZipFile, name: str, rec: Reconstruction) -> None:
    """A derived array (geometry/derive.py), computed and written block of frames by block of frames."""
    n, (h, w) = rec.num_images, rec.model_hw
    dtype, template = FIELDS[name]
    sizes = {"N": n, "H": h, "W": w}
    shape = tuple(sizes[t] if isinstance(t, str) else t for t in template)
    step = _frames_per_piece(shape, np.dtype(dtype))
    with zf.open(f"{name}.npy", "w", force_zip64=True) as member:
        _write_header(member, np.dtype(dtype), shape)
        for a in range(0, n, step):
            block = slice(a, a + step)
            part = derive(name, rec.depth[block], rec.extrinsics[block], rec.intrinsics_model[block],
                          rec.pixel_map[block], rec.valid_box[block])
            member.write(np.ascontiguousarray(part, dtype=dtype).tobytes())


def save_reconstruction_streamed(path: str | os.PathLike, rec: Reconstruction, compress: bool = False) -> Path:
    """`save_reconstruction` member by member (see the module text): the same checks, members and atomic
    write, without ever holding a whole derived array or reading a spooled one into resident memory."""
    path = Path(path)
    rec.validate(path)
    header = {"schema": np.array(SCHEMA), "schema_version": np.array(SCHEMA_VERSION, dtype=np.int64),
              "provenance": np.array(rec.provenance)}
    primaries = rec._arrays(rec._present(PRIMARY_FIELDS))
    for name, value in rec.extra.items():
        if name in header or name in FIELDS:
            raise ReconstructionFileError(f"{path}: extra array '{name}' clashes with a schema key", file=str(path))
        if np.asarray(value).dtype.hasobject:
            raise ReconstructionFileError(f"{path}: extra array '{name}' holds Python objects", file=str(path))
    method = zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED
    with atomic_write(path, ReconstructionFileError, "the file", fsync=True) as fh:
        with zipfile.ZipFile(fh, mode="w", compression=method, allowZip64=True) as zf:
            for name, value in header.items():
                _write_member(zf, name, value)
            for name in rec._present():  # the schema's order, as save_reconstruction writes it
                if name in DERIVED_FIELDS:
                    _write_derived(zf, name, rec)
                else:
                    _write_member(zf, name, primaries[name])
            for name, value in rec.extra.items():
                _write_member(zf, name, np.asarray(value))
    return path
