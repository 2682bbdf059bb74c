#!/usr/bin/env bash
# Builds the installable extension zip into dist/ (or $1) with Blender's own extension tool
# (the blender_ext.py shipped inside the bpy wheel: the same code as `blender --command extension build`).
# Works on a fresh checkout: when no bpy module is installed here, it downloads the pinned bpy wheel once
# (requirements/runtime.txt's version, no dependencies) and keeps only blender_ext.py, a stdlib-only script, in
# .work/blender_ext/ (git-ignored). It needs a Python >= 3.11 (tomllib) and pip.
# Usage: scripts/build_extension.sh [OUTPUT_DIR]
#   BLENDER_EXT=path/to/blender_ext.py uses that tool; PYTHON=... the Python that runs it.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-dist}

pick_python() {
  local candidate
  for candidate in "${PYTHON:-}" .venv/bin/python python3.11 python3.13 python3.12 python3; do
    [ -n "$candidate" ] || continue
    if command -v "$candidate" >/dev/null 2>&1 \
        && "$candidate" -c 'import sys; assert sys.version_info >= (3, 11)' 2>/dev/null; then
      echo "$candidate"; return 0
    fi
  done
  echo "error: scripts/build_extension.sh needs Python 3.11 or newer (set PYTHON=/path/to/python3)" >&2
  return 1
}
PY=$(pick_python)

TOOL=${BLENDER_EXT:-}
if [ -z "$TOOL" ]; then
  # A bpy already installed in one of this checkout's environments, else the one kept from an earlier build.
  for candidate in .venv*/lib/python3*/site-packages/bpy/*/scripts/addons_core/bl_pkg/cli/blender_ext.py \
                   .work/blender_ext/blender_ext.py; do
    [ -f "$candidate" ] && TOOL=$candidate
  done
fi
if [ -z "$TOOL" ]; then
  version=$(sed -n 's/^bpy==\([0-9.]*\).*/\1/p' requirements/runtime.txt)
  echo "Fetching Blender's extension tool from the bpy $version wheel (once; kept in .work/blender_ext/)"
  wheels=.work/bpy-wheel
  mkdir -p "$wheels" .work/blender_ext
  if ! "$PY" -m pip download -q --disable-pip-version-check --no-deps --only-binary=:all: \
      --python-version 3.11 -d "$wheels" "bpy==$version"; then
    echo "error: could not download the bpy $version wheel for blender_ext.py (offline? set" \
         "BLENDER_EXT=path/to/blender_ext.py from a Blender 4.2+ install: scripts/addons_core/bl_pkg/cli/)" >&2
    exit 1
  fi
  "$PY" - "$wheels" .work/blender_ext/blender_ext.py <<'EOF'
import glob, sys, zipfile
wheels, target = sys.argv[1], sys.argv[2]
for wheel in sorted(glob.glob(f"{wheels}/bpy-*.whl")):
    with zipfile.ZipFile(wheel) as archive:
        names = [n for n in archive.namelist() if n.endswith("/bl_pkg/cli/blender_ext.py")]
        if names:
            with open(target, "wb") as out:
                out.write(archive.read(names[0]))
            break
else:
    sys.exit(f"error: no blender_ext.py inside the bpy wheel in {wheels}")
EOF
  rm -rf "$wheels"  # ~375 MB: only the tool is needed
  TOOL=.work/blender_ext/blender_ext.py
fi
if [ ! -f "$TOOL" ]; then
  echo "error: $TOOL not found (BLENDER_EXT must name blender_ext.py)" >&2
  exit 1
fi
mkdir -p "$OUT"   # the tool requires an existing output folder
"$PY" "$TOOL" validate .
"$PY" "$TOOL" build --source-dir . --output-dir "$OUT"
