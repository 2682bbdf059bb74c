"""Shared test set-up: the repository root on sys.path so `import vggt_blender` works without installing."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).resolve().parent / "fixtures"

if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


@pytest.fixture(scope="module")
def tiny_vggt():
    """The tiny parity model (fixtures/parity/tiny) with its weights in float32, eval mode, one per test module."""
    import torch
    from safetensors.torch import load_file

    from vggt_blender.model import VGGT, VGGTConfig

    torch.set_num_threads(1)
    tiny = FIXTURES / "parity" / "tiny"
    net = VGGT(VGGTConfig.load(tiny / "config.json")).eval()
    net.load_state_dict({k: v.float() for k, v in load_file(str(tiny / "weights.safetensors")).items()}, strict=True)
    return net


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
