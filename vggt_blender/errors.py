"""User-facing error types. Each message names the file (when there is one) and the problem."""

from __future__ import annotations


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
