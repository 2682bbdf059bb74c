#!/usr/bin/env bash
# Sets up the pinned test environment (.venv, Python 3.11) and runs the whole test suite.
# Then, for a full run, runs the Blender-side tests (tests/test_scene_*.py, tests/test_extension_*.py) a second
# time on Blender 4.2 LTS: a second environment .venv-bpy42 (bpy 4.2 + numpy + pytest only; the inference
# worker in those tests still runs with .venv/bin/python, which has torch).
# Usage: scripts/test.sh [pytest args...]
#   With pytest args only the first pass runs, unless VGGT_BPY42=1. VGGT_SKIP_BPY42=1 skips the second pass.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3.11}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --disable-pip-version-check -r requirements/test.txt
status=0
.venv/bin/python -m pytest "$@" || status=$?

if [ "${VGGT_SKIP_BPY42:-0}" != "1" ] && { [ $# -eq 0 ] || [ "${VGGT_BPY42:-0}" = "1" ]; }; then
  if [ ! -x .venv-bpy42/bin/python ]; then
    "$PY" -m venv .venv-bpy42
  fi
  .venv-bpy42/bin/python -m pip install -q --disable-pip-version-check -r requirements/bpy42.txt
  shopt -s nullglob
  blender_tests=(tests/test_scene_*.py tests/test_extension_*.py)
  if [ ${#blender_tests[@]} -gt 0 ]; then
    echo "== Blender-side tests again on bpy 4.2 LTS (.venv-bpy42)"
    VGGT_TEST_BLENDER=4.2 VGGT_TEST_RUNTIME_PYTHON="$PWD/.venv/bin/python" \
      .venv-bpy42/bin/python -m pytest "${blender_tests[@]}" || status=$?
  fi
fi
exit $status
