"""Where a run's files go: the output rule (io/output_paths.py) and the panel's collision-free names."""

from __future__ import annotations

import importlib
import importlib.util
from pathlib import Path

import pytest

from vggt_blender.errors import RequestError
from vggt_blender.io.output_paths import display_folder_for, resolve_output


def test_resolve_output_is_absolute_and_checks_the_suffix(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    assert resolve_output("link/Scene.NPZ") == tmp_path / "real" / "Scene.NPZ"
    monkeypatch.setenv("HOME", str(tmp_path))
    assert resolve_output("~/a.npz") == tmp_path / "a.npz"
    with pytest.raises(RequestError, match=r"the output must be a \.npz file: .*scene\.blend"):
        resolve_output("scene.blend")
    assert resolve_output("scene.blend", suffix=None) == tmp_path / "scene.blend"
    assert display_folder_for(tmp_path / "garden.npz") == tmp_path / "garden_images"


@pytest.mark.skipif(importlib.util.find_spec("bpy") is None, reason="bpy is not installed")
def test_unique_output_path_never_reuses_an_earlier_runs_names(tmp_path: Path) -> None:
    from vggt_blender.extension_package import load_extension_package

    ext = load_extension_package("_vggt_ext_tests")
    unique = importlib.import_module(f"{ext.__name__}.operators.reconstruct").unique_output_path

    assert unique(tmp_path, "garden") == tmp_path / "garden.npz"
    (tmp_path / "garden.npz").write_bytes(b"earlier")
    assert unique(tmp_path, "garden") == tmp_path / "garden_2.npz"
    # A failed run leaves only its log; another left only its upright copies: both names stay taken.
    (tmp_path / "garden_2.log").write_text("worker log")
    (tmp_path / "garden_3_images").mkdir()
    assert unique(tmp_path, "garden") == tmp_path / "garden_4.npz"
    # Names are made safe for any file system, and never empty.
    assert unique(tmp_path, "my garden/2024: day 1") == tmp_path / "my_garden_2024__day_1.npz"
    assert unique(tmp_path, "..") == tmp_path / "vggt.npz"
    assert unique(tmp_path, "") == tmp_path / "vggt.npz"
    assert unique(tmp_path, "Été") == tmp_path / "Été.npz"  # letters of any script are kept
