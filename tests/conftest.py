"""Shared test set-up: the repository root on sys.path so `import vggt_blender` works without installing."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).resolve().parent / "fixtures"

if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


# The bpy 4.2 module can crash while the interpreter shuts down (after every test has passed and pytest has
# printed its summary): leave with pytest's own exit status before that teardown runs.
_exit_status: list[int] = []


def pytest_sessionfinish(session, exitstatus) -> None:
    _exit_status.append(int(exitstatus))


def pytest_unconfigure(config) -> None:
    bpy = sys.modules.get("bpy")
    if bpy is not None and tuple(bpy.app.version[:2]) < (4, 3) and _exit_status:
        import os

        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(_exit_status[-1])
