"""User-facing error types. Each message names the file (when there is one) and the problem.

Every VGGTError subclass carries a `code` from ERROR_CODES: the code, not the message text, is what travels
(worker protocol line, Blender's job state) and what callers branch on. `code_of` gives it for any exception.
"""

from __future__ import annotations


# code -> what it means (the worker protocol documents the same list).
ERROR_CODES: dict[str, str] = {
    "internal": "a bug or an unexpected failure (the traceback goes to the log)",
    "bad_request": "the request or an option is wrong (unknown device, output not writable, ...)",
    "bad_image": "a photo cannot be read",
    "bad_checkpoint": "the weights file is not a usable checkpoint",
    "no_weights": "no weights file was found",
    "download_failed": "the checkpoint download did not complete",
    "bad_file": "a reconstruction file is damaged or not one",
    "out_of_memory": "the device ran out of memory",
    "cancelled": "the user cancelled",
    "no_runtime": "no Python with torch to run the model in",
    "refine_failed": "camera refinement (bundle adjustment) could not improve the cameras",
    "export_failed": "an export (COLMAP model, PLY) could not be written",
    "bad_video": "a video file or image sequence cannot be read",
    "server_error": "the reconstruction server could not be reached or answered with an error",
    "store_failed": "the server's job store (its data folder) could not be read or written",
}


class VGGTError(Exception):
    """Base class for errors shown to the user as one readable line."""

    code = "internal"

    def __init__(self, message: str, file: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.file = file

    def __str__(self) -> str:
        return self.message


class ImageLoadError(VGGTError):
    code = "bad_image"


class CheckpointError(VGGTError):
    code = "bad_checkpoint"


class WeightsNotFoundError(VGGTError):
    code = "no_weights"


class ReconstructionFileError(VGGTError):
    code = "bad_file"


class OutOfMemoryError(VGGTError):
    code = "out_of_memory"


class CancelledError(VGGTError):
    code = "cancelled"


class RequestError(VGGTError):
    code = "bad_request"


class RefinementError(VGGTError):
    code = "refine_failed"


def code_of(exc: BaseException) -> str:
    """The protocol code for an exception: its own for a VGGTError, "cancelled" for KeyboardInterrupt,
    "internal" otherwise (and for a code missing from ERROR_CODES)."""
    if isinstance(exc, VGGTError):
        return exc.code if exc.code in ERROR_CODES else "internal"
    if isinstance(exc, KeyboardInterrupt):
        return "cancelled"
    return "internal"
