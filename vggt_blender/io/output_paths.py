"""Where a run's files go: the one rule for the output path and the folder beside it (stdlib only).

The command line, the worker and `reconstruct_to_file` resolve the output through `resolve_output`; the
job client names the upright-copies folder with `display_folder_for` instead of re-deriving it.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import RequestError

RECONSTRUCTION_SUFFIX = ".npz"


def resolve_output(path: str | os.PathLike[str], suffix: str | None = RECONSTRUCTION_SUFFIX) -> Path:
    """`path` made absolute (`~` expanded, symlinks resolved); with `suffix`, it must end in it."""
    output = Path(path).expanduser().resolve()
    if suffix is not None and output.suffix.lower() != suffix:
        raise RequestError(f"the output must be a {suffix} file: {output}", file=str(output))
    return output


def display_folder_for(output: str | os.PathLike[str]) -> Path:
    """Where upright copies of EXIF-rotated photos go: `<output stem>_images/` beside the output file."""
    output = Path(output)
    return output.with_name(f"{output.stem}_images")


__all__ = ["RECONSTRUCTION_SUFFIX", "resolve_output", "display_folder_for"]
