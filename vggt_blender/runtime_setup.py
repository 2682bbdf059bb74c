"""The inference runtime: a Python with torch that runs the worker outside Blender (stdlib only, no bpy).

Blender-side code uses these helpers to
- create a private virtual environment and pip-install torch + numpy + pillow + safetensors + pycolmap into it
  (`install_commands`, `CommandSequence`), choosing the torch build for the machine (`torch_index_url`);
- check what a runtime Python can do (`probe_runtime`: torch version, GPU, weights) with a tiny subprocess.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
import threading
from collections import deque
from pathlib import Path
from typing import Any, Sequence

from .errors import VGGTError

MIN_PYTHON = (3, 10)
PYPI_TORCH_CPU_INDEX = "https://download.pytorch.org/whl/cpu"
# CUDA 12.8 wheels run on every NVIDIA generation torch supports, RTX 50xx (Blackwell) included.
PYPI_TORCH_CUDA_INDEX = "https://download.pytorch.org/whl/cu128"
# pycolmap (pinned, wheels for CPython 3.10-3.13 on Linux, macOS, Windows): camera refinement and features.
# av: PyAV decodes videos for shot reconstruction (an abi3 wheel: one build for Python 3.11 and 3.13).
RUNTIME_PACKAGES = ("numpy", "pillow", "safetensors", "pycolmap==4.2.1", "av==18.1.0")


class RuntimeSetupError(VGGTError):
    code = "no_runtime"



def _no_window() -> dict:
    """Popen keyword arguments that keep a console window from popping up on Windows (as worker_client does)."""
    from .jobs.local import NO_WINDOW_FLAGS

    return {"creationflags": NO_WINDOW_FLAGS} if NO_WINDOW_FLAGS else {}

def venv_python(venv_dir: str | os.PathLike, system: str | None = None) -> Path:
    """The interpreter inside a virtual environment folder (Scripts\\python.exe on Windows)."""
    system = system or platform.system()
    venv_dir = Path(venv_dir)
    if system == "Windows":
        return venv_dir / "Scripts" / "python.exe"
    return venv_dir / "bin" / "python"


def has_nvidia_gpu(timeout: float = 10.0) -> bool:
    """True when `nvidia-smi` exists and lists at least one GPU (the NVIDIA driver is installed)."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return False
    try:
        out = subprocess.run([exe, "-L"], capture_output=True, text=True, timeout=timeout,
                             **_no_window())
    except (OSError, subprocess.SubprocessError):
        return False
    return out.returncode == 0 and "GPU" in out.stdout


def torch_index_url(system: str | None = None, nvidia: bool | None = None) -> str | None:
    """The pip index for torch: CUDA build with an NVIDIA GPU (Linux/Windows), PyPI's default on macOS
    (Apple silicon builds with MPS), else the small CPU-only build. `VGGT_TORCH_INDEX_URL` overrides."""
    override = os.environ.get("VGGT_TORCH_INDEX_URL")
    if override:
        return override
    system = system or platform.system()
    if system == "Darwin":
        return None
    if nvidia is None:
        nvidia = has_nvidia_gpu()
    return PYPI_TORCH_CUDA_INDEX if nvidia else PYPI_TORCH_CPU_INDEX


def describe_torch_build(index_url: str | None) -> str:
    if index_url is None:
        return "default build (macOS: Metal/MPS)"
    if "/cu" in index_url:
        return "CUDA build (" + index_url.rsplit("/", 1)[-1] + ")"
    if index_url.rstrip("/").endswith("cpu"):
        return "CPU-only build"
    return f"build from {index_url}"


def install_commands(
    base_python: str | os.PathLike,
    venv_dir: str | os.PathLike,
    index_url: str | None,
    system: str | None = None,
) -> list[tuple[str, list[str]]]:
    """(label, argv) steps that create the venv and install the runtime packages into it."""
    py = str(venv_python(venv_dir, system))
    pip = [py, "-m", "pip", "install", "--disable-pip-version-check", "--progress-bar", "off"]
    torch_cmd = pip + ["torch"]
    if index_url:
        torch_cmd += ["--index-url", index_url]
    steps = []
    if not venv_python(venv_dir, system).exists():
        steps.append(("Creating the virtual environment", [str(base_python), "-m", "venv", str(venv_dir)]))
    steps += [
        ("Updating pip", pip + ["--upgrade", "pip"]),
        (f"Installing torch ({describe_torch_build(index_url)})", torch_cmd),
        ("Installing numpy, pillow, safetensors, pycolmap, av", pip + list(RUNTIME_PACKAGES)),
    ]
    return steps


def check_python_version(python_exe: str | os.PathLike, timeout: float = 30.0) -> tuple[int, int]:
    """The (major, minor) of an interpreter; raises RuntimeSetupError if it is missing or older than 3.10."""
    python_exe = str(python_exe)
    if not Path(python_exe).is_file():
        raise RuntimeSetupError(f"{python_exe}: the runtime Python does not exist", file=python_exe)
    try:
        out = subprocess.run(
            [python_exe, "-c", "import sys; print(sys.version_info[0], sys.version_info[1])"],
            capture_output=True, text=True, timeout=timeout, **_no_window(),
        )
        major, minor = (int(v) for v in out.stdout.split())
    except (OSError, subprocess.SubprocessError, ValueError) as exc:
        raise RuntimeSetupError(f"{python_exe}: cannot run this Python ({exc})", file=python_exe) from None
    if (major, minor) < MIN_PYTHON:
        raise RuntimeSetupError(
            f"{python_exe}: Python {major}.{minor} is too old, the runtime needs Python "
            f"{MIN_PYTHON[0]}.{MIN_PYTHON[1]} or newer", file=python_exe)
    return major, minor


class CommandSequence:
    """Runs (label, argv) steps one after another in the background, copying their output to a log file.

    `poll()` never blocks, so a Blender timer/modal operator can show progress while pip works.
    """

    def __init__(self, steps: Sequence[tuple[str, list[str]]], log_path: str | os.PathLike,
                 env: dict[str, str] | None = None) -> None:
        self.steps = list(steps)
        self.log_path = Path(log_path)
        self.env = env
        self.step_index = 0
        self.last_line = ""
        self.returncode: int | None = None
        self.error: str | None = None
        self._tail: deque[str] = deque(maxlen=20)
        self._cancelled = threading.Event()
        self._proc: subprocess.Popen | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    @property
    def done(self) -> bool:
        return self.returncode is not None

    @property
    def fraction(self) -> float:
        if self.done:
            return 1.0
        return self.step_index / max(len(self.steps), 1)

    @property
    def label(self) -> str:
        if self.step_index < len(self.steps):
            return self.steps[self.step_index][0]
        return "Done"

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._thread = threading.Thread(target=self._run, name="vggt-runtime-install", daemon=True)
        self._thread.start()

    def cancel(self) -> None:
        self._cancelled.set()
        with self._lock:
            proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.terminate()

    def wait(self, timeout: float | None = None) -> int | None:
        if self._thread is not None:
            self._thread.join(timeout)
        return self.returncode

    def tail(self) -> str:
        return "\n".join(self._tail)

    def _run(self) -> None:
        with open(self.log_path, "a", encoding="utf-8", errors="replace") as log:
            for index, (label, argv) in enumerate(self.steps):
                self.step_index = index
                log.write(f"== {label}: {' '.join(argv)}\n")
                log.flush()
                if self._cancelled.is_set():
                    break
                try:
                    proc = subprocess.Popen(
                        argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                        errors="replace", env=self.env, bufsize=1, **_no_window(),
                    )
                except OSError as exc:
                    self.error = f"{label} failed: cannot start {argv[0]} ({exc})"
                    log.write(self.error + "\n")
                    self.returncode = 1
                    return
                with self._lock:
                    self._proc = proc
                assert proc.stdout is not None
                for line in proc.stdout:
                    log.write(line)
                    log.flush()
                    line = line.strip()
                    if line:
                        self.last_line = line
                        self._tail.append(line)
                rc = proc.wait()
                if self._cancelled.is_set():
                    break
                if rc != 0:
                    self.error = f"{label} failed (exit code {rc}): {self.last_line[:200]}"
                    log.write(self.error + "\n")
                    self.returncode = rc
                    return
            if self._cancelled.is_set():
                self.error = "cancelled"
                log.write("cancelled\n")
                self.returncode = 130
                return
            self.step_index = len(self.steps)
            self.returncode = 0


# Runs inside the runtime Python: report what it has, as one JSON line. Keep it tiny and tolerant.
PROBE_CODE = r"""
import json, sys
info = {"python": sys.version.split()[0], "executable": sys.executable}
try:
    import torch
    info["torch"] = torch.__version__
    info["cuda"] = bool(torch.cuda.is_available())
    if info["cuda"]:
        p = torch.cuda.get_device_properties(0)
        info["gpu"] = p.name
        info["gpu_memory_gb"] = round(p.total_memory / 2**30, 1)
    mps = getattr(torch.backends, "mps", None)
    info["mps"] = bool(mps is not None and mps.is_available())
except Exception as exc:
    info["torch_error"] = f"{type(exc).__name__}: {exc}"
for mod in ("numpy", "PIL", "safetensors"):
    try:
        __import__(mod)
    except Exception as exc:
        info.setdefault("missing", []).append(mod)
weights_arg = sys.argv[1] if len(sys.argv) > 1 and sys.argv[1] else None
checkpoint = sys.argv[2] if len(sys.argv) > 2 and sys.argv[2] else "vggt-1b"
try:
    from vggt_blender.weights.discovery import default_cache_dir, resolve_weights
    info["cache_dir"] = str(default_cache_dir())
    info["weights"] = str(resolve_weights(weights_arg, checkpoint))
except Exception as exc:
    info["weights_error"] = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
print("VGGT_PROBE " + json.dumps(info))
"""


def probe_runtime(
    python_exe: str | os.PathLike,
    package_root: str | os.PathLike,
    weights: str | None = None,
    checkpoint: str = "vggt-1b",
    timeout: float = 120.0,
) -> dict[str, Any]:
    """Ask a runtime Python what it has. Never raises: problems come back as `{"error": "..."}`."""
    python_exe = str(python_exe)
    if not Path(python_exe).is_file():
        return {"error": f"{python_exe}: the runtime Python does not exist"}
    env = dict(os.environ)
    env["PYTHONPATH"] = str(package_root) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.pop("PYTHONHOME", None)  # Blender sets it for its own Python; it would break another interpreter
    try:
        out = subprocess.run(
            [python_exe, "-c", PROBE_CODE, weights or "", checkpoint],
            capture_output=True, text=True, timeout=timeout, env=env, **_no_window(),
        )
    except subprocess.TimeoutExpired:
        return {"error": f"{python_exe}: the runtime did not answer within {timeout:.0f} s"}
    except OSError as exc:
        return {"error": f"{python_exe}: cannot run it ({exc})"}
    return parse_probe_output(out.stdout, out.stderr, python_exe)


def parse_probe_output(stdout: str, stderr: str = "", python_exe: str = "python") -> dict[str, Any]:
    for line in stdout.splitlines():
        if line.startswith("VGGT_PROBE "):
            try:
                return json.loads(line[len("VGGT_PROBE "):])
            except json.JSONDecodeError:
                break
    last = (stderr.strip().splitlines() or ["no output"])[-1]
    return {"error": f"{python_exe}: the runtime check failed ({last[:200]})"}


def probe_summary(info: dict[str, Any]) -> str:
    """One status line, e.g. "torch 2.13.0, NVIDIA H100 (79.1 GB), weights found"."""
    if "error" in info:
        return info["error"]
    if "torch_error" in info:
        return f"Python {info.get('python', '?')} found, but torch is not usable: {info['torch_error'][:120]}"
    parts = [f"torch {info.get('torch', '?')}"]
    if info.get("gpu"):
        parts.append(f"{info['gpu']} ({info.get('gpu_memory_gb', '?')} GB)")
    elif info.get("mps"):
        parts.append("Apple GPU (MPS)")
    else:
        parts.append("CPU only")
    if info.get("missing"):
        parts.append("missing: " + ", ".join(info["missing"]))
    parts.append("weights found" if info.get("weights") else "no weights")
    return ", ".join(parts)


def blender_python() -> str:
    """The interpreter running this code (inside Blender: Blender's bundled Python)."""
    return sys.executable
