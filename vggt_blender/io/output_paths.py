"""Where a run's files go: the one rule for the output path and the folder beside it (stdlib only).

The command line, the worker and `reconstruct_to_file` resolve the output through `resolve_output`; the
job client names the upright-copies folder with `display_folder_for` instead of re-deriving it.

Each run puts its upright copies in a folder of its own, `<stem>_images/<run id>/` (`RunFolder`): written under a
temporary name, renamed to the run id just before the .npz is swapped in. The .npz swap is the one moment the new
result appears, so a run that fails or is cancelled leaves the old .npz pointing at the old, untouched copies, and
a run never removes a folder another run writes into. The copies of earlier runs are kept (a refined file made
from an earlier run may name them); deleting `<stem>_images/` with its .npz removes them all.
"""

from __future__ import annotations

import os
import secrets
import time
from pathlib import Path

from ..errors import RequestError
from .atomic import own_temp_prefix

RECONSTRUCTION_SUFFIX = ".npz"


def resolve_output(path: str | os.PathLike[str], suffix: str | None = RECONSTRUCTION_SUFFIX) -> Path:
    """`path` made absolute (`~` expanded, symlinks resolved); with `suffix`, it must end in it."""
    output = Path(path).expanduser().resolve()
    if suffix is not None and output.suffix.lower() != suffix:
        raise RequestError(f"the output must be a {suffix} file: {output}", file=str(output))
    if output.is_dir():  # said now, not when the finished run cannot replace it
        raise RequestError(f"{output}: is a folder; the output must name a file", file=str(output))
    return output


def display_folder_for(output: str | os.PathLike[str]) -> Path:
    """Where upright copies of EXIF-rotated photos go: `<output stem>_images/` beside the output file."""
    output = Path(output)
    return output.with_name(f"{output.stem}_images")


def run_marker(pid: int | None = None) -> str:
    """The part of a run id naming the process that made it (`-p<pid>-`), for the clean-up after a kill."""
    return f"-p{os.getpid() if pid is None else pid}-"


class RunFolder:
    """One run's folder of upright copies: `root/<run id>`, written as `root/.vggt_tmp_<pid>_<run id>` until
    `publish()`. Nothing is created until `staging_dir()` is first asked for (no rotated photo, no folder)."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self.name = f"{time.strftime('%Y%m%d-%H%M%S')}{run_marker()}{secrets.token_hex(3)}"
        self.final = self.root / self.name
        self.staging = self.root / f"{own_temp_prefix()}{self.name}"
        self.root_existed = self.root.exists()
        self.created = False
        self.published = False

    def staging_dir(self) -> Path:
        """The temporary folder the copies are written into (made on first use)."""
        if not self.created:
            self.root.mkdir(parents=True, exist_ok=True)
            self.staging.mkdir()  # a fresh name: never a folder another run uses
            self.created = True
        return self.staging

    def publish(self) -> None:
        """Give the written copies their final name (before the .npz naming them is swapped in)."""
        if self.created and not self.published:
            os.rename(self.staging, self.final)
            self.published = True

    def discard(self) -> None:
        """Remove what this run wrote (its own folder only) and `root` if this run made it and it is empty."""
        import shutil

        if self.created:
            shutil.rmtree(self.final if self.published else self.staging, ignore_errors=True)
        if not self.root_existed:
            try:
                self.root.rmdir()  # refuses when another run has put something in it
            except OSError:
                pass


__all__ = ["RECONSTRUCTION_SUFFIX", "resolve_output", "display_folder_for", "run_marker", "RunFolder"]
