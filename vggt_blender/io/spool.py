"""Big per-frame arrays of a long shot kept in a file instead of memory, and a reconstruction file
written from them piece by piece (numpy only).

A 600-frame shot at 518x294 has 1.1 GB of world points and as much point map (float32 xyz per pixel):
held in RAM next to depth, confidences and colours, a CPU run passes 4 GB. A `SpoolArray` writes each
frame into a temporary file with plain writes (the page cache, not this process's resident memory), reads
back the frames the chunk alignment needs, and `save_reconstruction_streamed` copies it into the .npz in
pieces. The file is the same schema-v1 .npz `save_reconstruction` writes (np.load reads it).
"""

from __future__ import annotations

import os
import tempfile
import zipfile
from pathlib import Path

import numpy as np

from .atomic import atomic_write
from .reconstruction import SCHEMA, SCHEMA_VERSION, Reconstruction
from ..errors import ReconstructionFileError

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

    def pieces(self):
        """The whole array's bytes, in pieces of at most 64 MB."""
        self._file.flush()
        self._file.seek(0)
        left = self.shape[0] * self.frame_bytes
        while left > 0:
            piece = self._file.read(min(_PIECE, left))
            if not piece:
                raise OSError(f"{self.path}: the spool file ended early")
            left -= len(piece)
            yield piece

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


def _write_member(zf: zipfile.ZipFile, name: str, array: np.ndarray | None = None,
                  spool: SpoolArray | None = None) -> None:
    with zf.open(f"{name}.npy", "w", force_zip64=True) as member:
        if spool is None:
            np.lib.format.write_array(member, np.asanyarray(array), allow_pickle=False)
            return
        header = {"descr": np.lib.format.dtype_to_descr(spool.dtype), "fortran_order": False,
                  "shape": spool.shape}
        np.lib.format.write_array_header_1_0(member, header)
        for piece in spool.pieces():
            member.write(piece)


def save_reconstruction_streamed(path: str | os.PathLike, rec: Reconstruction,
                                 spooled: dict[str, SpoolArray], compress: bool = False) -> Path:
    """`save_reconstruction` for a Reconstruction whose `spooled` fields live in SpoolArrays (their
    attributes on `rec` are the spools' read-only views): the same checks, members and atomic write."""
    path = Path(path)
    rec.validate(path)
    arrays = {"schema": np.array(SCHEMA), "schema_version": np.array(SCHEMA_VERSION, dtype=np.int64),
              "provenance": np.array(rec.provenance)}
    method = zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED
    with atomic_write(path, ReconstructionFileError, "the file", fsync=True) as fh:
        with zipfile.ZipFile(fh, mode="w", compression=method, allowZip64=True) as zf:
            for name, value in arrays.items():
                _write_member(zf, name, value)
            for name, value in rec._arrays().items():
                _write_member(zf, name, spool=spooled[name]) if name in spooled else _write_member(zf, name, value)
            for name, value in rec.extra.items():
                if name in arrays or hasattr(rec, name):
                    raise ReconstructionFileError(f"{path}: extra array '{name}' clashes with a schema key",
                                                  file=str(path))
                _write_member(zf, name, np.asarray(value))
    return path
