"""Atomic file writes: the data goes to a temporary file beside the target, renamed over it only when complete.

The target is therefore the old file, the new one, or absent: never half written, also when the process is
interrupted (the temporary file is removed on any exception). A process killed outright can leave a
`TEMP_PREFIX` file behind; its hidden name never matches an output name, and it carries the writing process's id
(`own_temp_prefix`) so that whoever cleans up after a killed worker removes that process's files and no other's.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import BinaryIO, Iterator

from ..errors import VGGTError

TEMP_PREFIX = ".vggt_tmp_"


def own_temp_prefix(pid: int | None = None) -> str:
    """The prefix of the temporary names process `pid` (default: this one) makes: `.vggt_tmp_<pid>_`."""
    return f"{TEMP_PREFIX}{os.getpid() if pid is None else pid}_"


def make_shareable(path: str | os.PathLike[str]) -> None:
    """Give a file made by mkstemp (mode 0600) the mode a plain open() would: 0o666 minus the umask."""
    mask = os.umask(0)
    os.umask(mask)  # reading the umask means setting it; put it straight back
    os.chmod(path, 0o666 & ~mask)


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike[str], error: type[VGGTError], what: str = "the file",
                 fsync: bool = False) -> Iterator[BinaryIO]:
    """Yield a binary file handle; on success it replaces `path`. OS errors become `error` naming `path`."""
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    try:
        fd, tmp = tempfile.mkstemp(prefix=own_temp_prefix(), suffix=path.suffix, dir=folder)
    except OSError as exc:
        raise error(f"{path}: cannot write in folder {folder}: {exc.strerror or exc}", file=str(path)) from exc
    try:
        with os.fdopen(fd, "wb") as fh:
            yield fh
            fh.flush()
            if fsync:
                os.fsync(fh.fileno())
        make_shareable(tmp)
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(exc, OSError):
            raise error(f"{path}: cannot write {what}: {exc.strerror or exc}", file=str(path)) from exc
        raise
