"""Every VGGTError subclass carries a known code, and the code (not the message) is what travels."""

from __future__ import annotations

import importlib

import pytest

from vggt_blender import errors

# Every module that defines a VGGTError subclass on the pure side.
# Every module that defines an error class (a new one belongs here too).
MODULES = ("vggt_blender.errors", "vggt_blender.engine.devices", "vggt_blender.weights.download",
           "vggt_blender.runtime_setup", "vggt_blender.geometry.selection", "vggt_blender.model.config",
           "vggt_blender.geometry.alignment", "vggt_blender.io.colmap", "vggt_blender.shot.source",
           "vggt_blender.jobs.http_client", "vggt_blender.service.store")


def _subclasses(cls: type) -> list[type]:
    found = []
    for sub in cls.__subclasses__():
        found += [sub, *_subclasses(sub)]
    return found


def test_every_error_class_has_a_known_code() -> None:
    for name in MODULES:
        importlib.import_module(name)
    classes = _subclasses(errors.VGGTError)
    assert len(classes) >= 12
    unknown = {c.__qualname__: c.code for c in classes if c.code not in errors.ERROR_CODES}
    assert not unknown, f"codes missing from errors.ERROR_CODES: {unknown}"
    # Each class states its code itself or inherits the one that fits; no class falls back to "internal".
    assert all(c.code != "internal" for c in classes)


@pytest.mark.parametrize("exc, code", [
    (errors.OutOfMemoryError("out of memory"), "out_of_memory"),
    (errors.ImageLoadError("a.jpg: cancelled download of the photo"), "bad_image"),  # the text misleads, the code not
    (KeyboardInterrupt(), "cancelled"),
    (ValueError("bad_image"), "internal"),
])
def test_code_of(exc: BaseException, code: str) -> None:
    assert errors.code_of(exc) == code
