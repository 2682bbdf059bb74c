"""The import tiers of vggt_blender (docs/ARCHITECTURE.md): Blender's Python has numpy but no torch and no Pillow.

Each torch-free module is imported in a fresh interpreter with the forbidden packages blocked
(`sys.modules[name] = None` makes any import of them raise ImportError), so a module that reaches torch or
PIL, even indirectly or through a package `__init__`, fails here rather than in Blender.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# Standard library only: the Blender UI, the job client and the setup code import these before numpy matters.
STDLIB_TIER = (
    "vggt_blender",
    "vggt_blender.options",
    "vggt_blender.cli",  # its commands import the engine lazily: `info` and `export-ply` run without torch
    "vggt_blender.errors",
    "vggt_blender.progress",
    "vggt_blender.io.atomic",
    "vggt_blender.io.photo_paths",
    "vggt_blender.io.output_paths",
    "vggt_blender.io.exif_orientation",
    "vggt_blender.weights",
    "vggt_blender.weights.registry",
    "vggt_blender.weights.discovery",
    "vggt_blender.weights.download",
    "vggt_blender.jobs",
    "vggt_blender.jobs.local",
    "vggt_blender.jobs.protocol",
    "vggt_blender.jobs.interface",
    "vggt_blender.jobs.remote",
    "vggt_blender.jobs.http_client",
    "vggt_blender.runtime_setup",
    "vggt_blender.extension_package",
)
# numpy, but neither torch nor Pillow: the reconstruction file, exporters and geometry.
NUMPY_TIER = (
    "vggt_blender.io",
    "vggt_blender.io.reconstruction",
    "vggt_blender.io.ply",
    "vggt_blender.io.summary",
    "vggt_blender.geometry",
    "vggt_blender.geometry.cameras",
    "vggt_blender.geometry.derive",
    "vggt_blender.geometry.selection",
    "vggt_blender.geometry.blender_camera",
    "vggt_blender.geometry.alignment",
    "vggt_blender.geometry.lens_check",
    "vggt_blender.io.colmap",
    "vggt_blender.io.shot_fields",
    "vggt_blender.io.spool",
    "vggt_blender.shot.align",
    "vggt_blender.shot.chunks",
    "vggt_blender.shot.selection",
)
# Camera refinement: numpy and pycolmap (it runs in the worker or the CLI), but never torch.
REFINE_TIER = (
    "vggt_blender.refine",
    "vggt_blender.refine.features",
    "vggt_blender.refine.intrinsics",
    "vggt_blender.refine.matching",
    "vggt_blender.refine.pipeline",
    "vggt_blender.refine.solve",
    "vggt_blender.refine.tracks",
)
ENGINE_ONLY = ("torch", "PIL", "safetensors", "bpy")


def _import_blocked(modules: tuple[str, ...], blocked: tuple[str, ...]) -> subprocess.CompletedProcess:
    code = textwrap.dedent(f"""
        import importlib, sys
        for name in {blocked!r}:
            sys.modules[name] = None  # any import of it now raises ImportError
        failed = []
        for module in {modules!r}:
            try:
                importlib.import_module(module)
            except ImportError as exc:
                failed.append(f"{{module}}: {{exc}}")
        print("\\n".join(failed))
        sys.exit(1 if failed else 0)
    """)
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("tier, modules, blocked", [
    ("stdlib", STDLIB_TIER, ENGINE_ONLY + ("numpy",)),
    ("numpy", NUMPY_TIER, ENGINE_ONLY),
    ("refine", REFINE_TIER, ("torch", "safetensors", "bpy")),
])
def test_tier_imports_nothing_above_it(tier: str, modules: tuple[str, ...], blocked: tuple[str, ...]) -> None:
    result = _import_blocked(modules, blocked)
    assert result.returncode == 0, f"{tier} tier reaches {', '.join(blocked)}:\n{result.stdout}{result.stderr}"


def test_the_check_catches_a_forbidden_import(tmp_path: Path) -> None:
    # The blocking itself works: a module importing torch (here, the engine's devices) is reported.
    result = _import_blocked(("vggt_blender.engine.devices",), ENGINE_ONLY)
    assert result.returncode == 1 and "vggt_blender.engine.devices" in result.stdout


def test_every_torch_free_module_is_listed() -> None:
    # A new module in a torch-free folder must join a tier above (or this list of engine modules).
    engine = {"vggt_blender.__main__", "vggt_blender.preprocess", "vggt_blender.jobs.worker",
              "vggt_blender.weights.loading", "vggt_blender.shot", "vggt_blender.shot.source"}
    listed = set(STDLIB_TIER) | set(NUMPY_TIER) | set(REFINE_TIER) | engine
    for folder in ("io", "geometry", "weights", "jobs", "refine", "shot"):
        for path in (ROOT / "vggt_blender" / folder).glob("*.py"):
            name = "vggt_blender." + folder + ("" if path.stem == "__init__" else "." + path.stem)
            assert name in listed, f"{name}: add it to a tier in tests/test_tiers.py"
    for path in (ROOT / "vggt_blender").glob("*.py"):
        name = "vggt_blender" + ("" if path.stem == "__init__" else "." + path.stem)
        assert name in listed, f"{name}: add it to a tier in tests/test_tiers.py"
