"""Test-only faults for worker subprocesses: on the worker's PYTHONPATH, this patches the engine as it is
imported (the package itself has no test hooks).

VGGT_TEST_FAULT=oom    the model call raises torch.OutOfMemoryError
VGGT_TEST_DELAY=<s>    every stage sleeps this long after its first progress report
"""

import importlib.abc
import importlib.util
import os
import sys
import time

TARGET = "vggt_blender.engine.inference"


def _patch(module):
    fault = os.environ.get("VGGT_TEST_FAULT", "")
    delay = float(os.environ.get("VGGT_TEST_DELAY", "0") or 0)
    if fault == "oom":
        import torch

        def out_of_memory(*_args, **_kwargs):
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB (simulated)")

        module._forward = out_of_memory
    if delay:
        real = module.reconstruct_to_file

        def slow(images, output, *, progress=None, **options):
            def report(stage, fraction, message=""):
                if progress is not None:
                    progress(stage, fraction, message)
                if fraction == 0.0:
                    time.sleep(delay)

            return real(images, output, progress=report, **options)

        module.reconstruct_to_file = slow


class _Finder(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name != TARGET:
            return None
        sys.meta_path.remove(self)
        try:
            spec = importlib.util.find_spec(name)
        finally:
            sys.meta_path.insert(0, self)
        if spec is None or spec.loader is None:
            return spec
        loader = spec.loader
        real_exec = loader.exec_module

        def exec_module(module):
            real_exec(module)
            _patch(module)

        loader.exec_module = exec_module
        return spec


if os.environ.get("VGGT_TEST_FAULT") or os.environ.get("VGGT_TEST_DELAY"):
    sys.meta_path.insert(0, _Finder())
