#!/usr/bin/env bash
# Sets up the pinned test environment (.venv, Python 3.11, bpy 5.0) and runs the whole test suite. Then, for a
# full run, runs the Blender-side tests (tests/test_scene_*.py, tests/test_extension_*.py) again on every other
# Blender artists use, each in its own environment with bpy + numpy + pytest only (requirements/bpyNN.txt); the
# inference worker in those tests still runs with .venv/bin/python, which has torch:
#   .venv-bpy42  Blender 4.2 LTS  Python 3.11
#   .venv-bpy45  Blender 4.5 LTS  Python 3.11
#   .venv-bpy51  Blender 5.1      Python 3.13
#   .venv-bpy52  Blender 5.2 LTS  Python 3.13
# bpy 5.1 and newer exist only for Python 3.13: set PYTHON313 to its interpreter, else it is looked for as
# python3.13 on the PATH, through pyenv, and in the usual install folders.
# Usage: scripts/test.sh [pytest args...]
#   With pytest args only the first pass runs, unless VGGT_BLENDERS is set.
#   VGGT_BLENDERS="4.2 4.5 5.1 5.2" (the default) picks the extra Blender passes; VGGT_BLENDERS="" skips them.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3.11}

source scripts/find_python313.sh  # find_python313: $PYTHON313, python3.13, pyenv, usual folders

if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --disable-pip-version-check -r requirements/test.txt
status=0
.venv/bin/python -m pytest "$@" || status=$?

if [ $# -eq 0 ] || [ -n "${VGGT_BLENDERS+set}" ]; then
  blenders=${VGGT_BLENDERS-4.2 4.5 5.1 5.2}
else
  blenders=""
fi
shopt -s nullglob
blender_tests=(tests/test_scene_*.py tests/test_extension_*.py)
for version in $blenders; do
  [ ${#blender_tests[@]} -gt 0 ] || break
  tag=${version//./}
  venv=.venv-bpy$tag
  requirements=requirements/bpy$tag.txt
  if [ ! -f "$requirements" ]; then
    echo "scripts/test.sh: no $requirements: Blender $version is not one of the tested versions" >&2
    status=1; continue
  fi
  if [ ! -x "$venv/bin/python" ]; then
    case "$version" in
      4.*|5.0) base=$PY ;;
      *) base=$(find_python313) || { status=1; continue; } ;;
    esac
    "$base" -m venv "$venv"
  fi
  "$venv/bin/python" -m pip install -q --disable-pip-version-check -r "$requirements"
  echo "== Blender-side tests again on bpy $version ($venv)"
  VGGT_TEST_BLENDER=$version VGGT_TEST_RUNTIME_PYTHON="$PWD/.venv/bin/python" \
    "$venv/bin/python" -m pytest "${blender_tests[@]}" || status=$?
done
exit $status
