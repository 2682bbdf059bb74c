"""The extension package: manifest validation with Blender's own tool, the built zip, and the pure runtime
set-up helpers (torch build choice, install steps, the background command runner, the runtime probe)."""

from __future__ import annotations

import glob
import os
import re
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest

from vggt_blender import runtime_setup

ROOT = Path(__file__).resolve().parent.parent
RUNTIME_PYTHON = os.environ.get("VGGT_TEST_RUNTIME_PYTHON", str(ROOT / ".venv" / "bin" / "python"))


def blender_ext_tool() -> Path:
    """blender_ext.py shipped in the bpy wheel of the Python running the tests (bpy 5.0 or 4.2)."""
    site = [p for p in sys.path if p.endswith("site-packages")]
    for folder in site + [str(ROOT / ".venv" / "lib" / "python3.11" / "site-packages")]:
        hits = sorted(glob.glob(os.path.join(folder, "bpy", "*", "scripts", "addons_core", "bl_pkg", "cli",
                                             "blender_ext.py")))
        if hits:
            return Path(hits[-1])
    pytest.skip("no bpy wheel with blender_ext.py in this environment")


def run_tool(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(blender_ext_tool()), *args], cwd=cwd,
                          capture_output=True, text=True, timeout=120)


def test_manifest_validates_with_blenders_tool():
    out = run_tool("validate", str(ROOT))
    assert out.returncode == 0, out.stdout + out.stderr
    text = (ROOT / "blender_manifest.toml").read_text()
    for needle in ('id = "vggt_blender"', 'blender_version_min = "4.2.0"', '"SPDX:GPL-3.0-or-later"',
                   "network =", "files ="):
        assert needle in text


def test_validator_rejects_a_broken_manifest(tmp_path):
    # The check has teeth: a trailing full stop in a permission reason is refused.
    shutil.copy(ROOT / "__init__.py", tmp_path / "__init__.py")
    text = re.sub(r'^(network = ".*)"$', r'\1."', (ROOT / "blender_manifest.toml").read_text(), flags=re.M)
    assert 'request."' in text
    (tmp_path / "blender_manifest.toml").write_text(text)
    out = run_tool("validate", str(tmp_path))
    assert out.returncode != 0
    assert "network" in (out.stdout + out.stderr)


def test_build_script_makes_a_clean_zip(tmp_path):
    out_dir = tmp_path / "dist"  # the script must create it: the tool needs an existing folder
    env = dict(os.environ, BLENDER_EXT=str(blender_ext_tool()), PYTHON=sys.executable)
    out = subprocess.run(["bash", str(ROOT / "scripts" / "build_extension.sh"), str(out_dir)], cwd=ROOT,
                         capture_output=True, text=True, timeout=120, env=env)
    assert out.returncode == 0, out.stdout + out.stderr
    zips = list(out_dir.glob("vggt_blender-*.zip"))
    assert len(zips) == 1
    names = zipfile.ZipFile(zips[0]).namelist()
    for required in ("blender_manifest.toml", "__init__.py", "preferences.py", "properties.py", "runtime.py",
                     "operators/__init__.py", "operators/reconstruct.py", "operators/runtime.py",
                     "panels/main_panel.py", "vggt_blender/__init__.py", "vggt_blender/runtime_setup.py",
                     "vggt_blender/jobs/local.py"):
        assert required in names, required
    forbidden = ("tests/", "bench/", "scripts/", "docs/", ".ci/", ".venv", "fixtures", "__pycache__", ".pyc",
                 "requirements/", "pytest.ini", ".git")
    leaked = [n for n in names if any(f in n for f in forbidden)]
    assert leaked == []
    assert zips[0].stat().st_size < 2_000_000  # code only: no weights, photos or test data


def _fake_bpy_wheel(folder: Path, version: str) -> None:
    """A wheel named like bpy's holding only Blender's extension tool, for a pip with no index."""
    folder.mkdir()
    dist = f"bpy-{version}.dist-info"
    with zipfile.ZipFile(folder / f"bpy-{version}-py3-none-any.whl", "w") as wheel:
        wheel.write(blender_ext_tool(), f"bpy/{version[:3]}/scripts/addons_core/bl_pkg/cli/blender_ext.py")
        wheel.writestr(f"{dist}/METADATA", f"Metadata-Version: 2.1\nName: bpy\nVersion: {version}\n")
        wheel.writestr(f"{dist}/WHEEL", "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\n"
                                        "Tag: py3-none-any\n")
        wheel.writestr(f"{dist}/RECORD", "")


def test_build_script_sets_up_its_tool_on_a_fresh_checkout(tmp_path):
    """Run first, in a checkout with no environment, the script fetches the pinned bpy wheel's
    blender_ext.py itself (here from a local wheel folder: no network) and builds the zip."""
    checkout = tmp_path / "checkout"
    files = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    for name in files.splitlines():
        if name.startswith(("tests/", "bench/")) or not (ROOT / name).is_file():
            continue
        (checkout / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, checkout / name)
    version = re.search(r"^bpy==([\d.]+)", (ROOT / "requirements" / "runtime.txt").read_text(), re.M).group(1)
    _fake_bpy_wheel(tmp_path / "wheels", version)
    env = {k: v for k, v in os.environ.items() if k not in ("BLENDER_EXT", "PYTHON") and not k.startswith("PIP_")}
    env.update(PIP_NO_INDEX="1", PIP_FIND_LINKS=str(tmp_path / "wheels"), PYTHON=sys.executable)
    out = subprocess.run(["bash", "scripts/build_extension.sh"], cwd=checkout, capture_output=True, text=True,
                         timeout=180, env=env)
    assert out.returncode == 0, out.stdout + out.stderr
    assert len(list((checkout / "dist").glob("vggt_blender-*.zip"))) == 1
    assert (checkout / ".work" / "blender_ext" / "blender_ext.py").is_file()
    assert not (checkout / ".work" / "bpy-wheel").exists()  # the big wheel is not kept


def test_blender_side_uses_relative_imports_only():
    # Installed, the package is bl_ext.<repo>.vggt_blender: an absolute import of our own modules breaks.
    files = [ROOT / "__init__.py", ROOT / "preferences.py", ROOT / "properties.py", ROOT / "runtime.py"]
    files += sorted((ROOT / "operators").glob("*.py")) + sorted((ROOT / "panels").glob("*.py"))
    for path in files:
        for line in path.read_text().splitlines():
            stripped = line.strip()
            for own in ("vggt_blender", "operators", "panels", "scene", "runtime", "properties", "preferences"):
                assert not stripped.startswith((f"from {own}", f"import {own}")), f"{path.name}: {stripped}"


# ---- runtime set-up helpers (pure) ----

def test_torch_build_choice(monkeypatch):
    monkeypatch.delenv("VGGT_TORCH_INDEX_URL", raising=False)
    assert runtime_setup.torch_index_url("Linux", nvidia=True).endswith("/cu128")
    assert runtime_setup.torch_index_url("Windows", nvidia=True).endswith("/cu128")
    assert runtime_setup.torch_index_url("Linux", nvidia=False).endswith("/cpu")
    assert runtime_setup.torch_index_url("Windows", nvidia=False).endswith("/cpu")
    assert runtime_setup.torch_index_url("Darwin", nvidia=False) is None
    monkeypatch.setenv("VGGT_TORCH_INDEX_URL", "https://example.invalid/whl/cu126")
    assert runtime_setup.torch_index_url("Linux", nvidia=False) == "https://example.invalid/whl/cu126"


def test_install_steps(tmp_path):
    steps = runtime_setup.install_commands("/usr/bin/python3", tmp_path / "venv",
                                           runtime_setup.PYPI_TORCH_CPU_INDEX, system="Linux")
    labels = [label for label, _ in steps]
    assert labels[0] == "Creating the virtual environment"
    assert steps[0][1] == ["/usr/bin/python3", "-m", "venv", str(tmp_path / "venv")]
    venv_py = str(tmp_path / "venv" / "bin" / "python")
    torch_step = next(argv for label, argv in steps if "torch" in label)
    assert torch_step[:4] == [venv_py, "-m", "pip", "install"]
    assert "torch" in torch_step and torch_step[-2:] == ["--index-url", runtime_setup.PYPI_TORCH_CPU_INDEX]
    last = steps[-1][1]
    assert {"numpy", "pillow", "safetensors"} <= set(last)
    win = runtime_setup.install_commands("C:/py/python.exe", tmp_path / "v", None, system="Windows")
    assert win[1][1][0].endswith(os.path.join("Scripts", "python.exe"))
    assert "--index-url" not in next(argv for label, argv in win if "torch" in label)


def test_python_version_check(tmp_path):
    assert runtime_setup.check_python_version(sys.executable) >= (3, 10)
    with pytest.raises(runtime_setup.RuntimeSetupError, match="does not exist"):
        runtime_setup.check_python_version(tmp_path / "nope" / "python")
    old = tmp_path / "python2"
    old.write_text("#!/bin/sh\necho 2 7\n")
    old.chmod(0o755)
    with pytest.raises(runtime_setup.RuntimeSetupError, match="too old"):
        runtime_setup.check_python_version(old)


def test_command_sequence_streams_output_to_log(tmp_path):
    py = sys.executable
    steps = [("first", [py, "-c", "print('hello from one')"]),
             ("second", [py, "-c", "import sys; print('line a'); print('line b'); sys.stdout.flush()"])]
    job = runtime_setup.CommandSequence(steps, tmp_path / "logs" / "install.log")
    job.start()
    assert job.wait(60) == 0
    assert job.done and job.fraction == 1.0 and job.error is None
    log = (tmp_path / "logs" / "install.log").read_text()
    assert "hello from one" in log and "line b" in log and "== second" in log
    assert job.last_line == "line b"


def test_command_sequence_reports_a_failing_step(tmp_path):
    py = sys.executable
    steps = [("ok", [py, "-c", "pass"]),
             ("pip install torch", [py, "-c", "import sys; print('ERROR: no matching distribution'); sys.exit(3)"]),
             ("never", [py, "-c", "print('must not run')"])]
    job = runtime_setup.CommandSequence(steps, tmp_path / "install.log")
    job.start()
    assert job.wait(60) == 3
    assert job.error.startswith("pip install torch failed (exit code 3)")
    assert "no matching distribution" in job.error
    assert "must not run" not in (tmp_path / "install.log").read_text()


def test_command_sequence_cancel_stops_the_running_step(tmp_path):
    steps = [("slow", [sys.executable, "-c", "import time; print('started', flush=True); time.sleep(60)"])]
    job = runtime_setup.CommandSequence(steps, tmp_path / "install.log")
    t0 = time.monotonic()
    job.start()
    while "started" not in job.last_line and time.monotonic() - t0 < 20:
        time.sleep(0.02)
    job.cancel()
    assert job.wait(20) == 130
    assert job.error == "cancelled"
    assert time.monotonic() - t0 < 20


def test_probe_parsing_and_summary():
    info = runtime_setup.parse_probe_output(
        'noise\nVGGT_PROBE {"python": "3.11.9", "torch": "2.13.0", "cuda": true, "gpu": "NVIDIA H100", '
        '"gpu_memory_gb": 79.1, "mps": false, "weights": "/w/model.pt"}\n')
    assert runtime_setup.probe_summary(info) == "torch 2.13.0, NVIDIA H100 (79.1 GB), weights found"
    info = {"python": "3.11", "torch": "2.13.0", "cuda": False, "mps": False, "weights_error": "no VGGT weights"}
    assert runtime_setup.probe_summary(info) == "torch 2.13.0, CPU only, no weights"
    bad = runtime_setup.parse_probe_output("", "Traceback...\nModuleNotFoundError: x", "/py")
    assert bad["error"] == "/py: the runtime check failed (ModuleNotFoundError: x)"


@pytest.mark.skipif(not Path(RUNTIME_PYTHON).is_file(), reason="no runtime Python with torch")
def test_probe_a_real_runtime(tmp_path):
    weights = tmp_path / "model.pt"
    weights.write_bytes(b"not really weights")  # the probe only resolves the path
    info = runtime_setup.probe_runtime(RUNTIME_PYTHON, ROOT, str(weights))
    assert "error" not in info, info
    import json as _json
    versions = subprocess.run([RUNTIME_PYTHON, "-c", "import json, torch, sys; print(json.dumps("
                               "[torch.__version__, sys.version.split()[0]]))"],
                              capture_output=True, text=True, timeout=120)
    torch_version, py_version = _json.loads(versions.stdout)
    assert info["torch"] == torch_version and info["python"] == py_version
    assert info["weights"] == str(weights.resolve())
    assert info["cuda"] is False or info.get("gpu")
    missing = runtime_setup.probe_runtime(RUNTIME_PYTHON, ROOT, str(tmp_path / "absent.pt"))
    assert "weights" not in missing and "absent.pt" in missing["weights_error"]
    assert runtime_setup.probe_runtime(tmp_path / "none" / "python", ROOT)["error"].endswith("does not exist")


def _find_python313(tmp_path: Path, **env: str) -> subprocess.CompletedProcess:
    clean = {"PATH": env.pop("PATH", str(tmp_path / "bin") + ":/usr/bin:/bin"), "HOME": str(tmp_path / "home"),
             "PYENV_ROOT": str(tmp_path / "pyenv"), **env}
    return subprocess.run(["bash", str(ROOT / "scripts" / "find_python313.sh")], capture_output=True, text=True,
                          timeout=60, env=clean)


def test_python313_search_for_bpy_5_1_and_newer(tmp_path):
    # None anywhere it looks: one clear line naming the places and the override.
    (tmp_path / "bin").mkdir()
    if any(Path(p).exists() for p in ("/usr/bin/python3.13", "/usr/local/bin/python3.13")):
        pytest.skip("this machine has a system Python 3.13")
    out = _find_python313(tmp_path)
    assert out.returncode == 1 and out.stdout == ""
    assert "no Python 3.13 found" in out.stderr and "PYTHON313=" in out.stderr and len(out.stderr.splitlines()) == 1
    # An override that is not 3.13 (this one fails the version check like a 3.12 would) is refused, not used.
    other = tmp_path / "bin" / "python3.12"
    other.write_text("#!/bin/sh\nexit 1\n")
    other.chmod(0o755)
    out = _find_python313(tmp_path, PYTHON313=str(other))
    assert out.returncode == 1 and "is not a working Python 3.13" in out.stderr
    # pyenv's folder layout is found without pyenv on the PATH (how these machines provide 3.13).
    fake = tmp_path / "pyenv" / "versions" / "3.13.0" / "bin" / "python3.13"
    fake.parent.mkdir(parents=True)
    fake.write_text("#!/bin/sh\n# answers the version check like a 3.13 would\nexit 0\n")
    fake.chmod(0o755)
    out = _find_python313(tmp_path)
    assert out.returncode == 0 and out.stdout.strip() == str(fake)
