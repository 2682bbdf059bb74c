#!/usr/bin/env bash
# Prints the path of a Python 3.13 interpreter (bpy 5.1 and newer exist only for 3.13), or one line saying
# where it looked and exits 1. Order: $PYTHON313, python3.13 on the PATH, pyenv, the usual install folders.
# Sourced by scripts/test.sh; runnable on its own.
find_python313() {
  local candidate
  if [ -n "${PYTHON313:-}" ]; then
    if "$PYTHON313" -c 'import sys; assert sys.version_info[:2] == (3, 13)' 2>/dev/null; then
      echo "$PYTHON313"; return 0
    fi
    echo "scripts/test.sh: PYTHON313=$PYTHON313 is not a working Python 3.13" >&2
    return 1
  fi
  for candidate in \
      "$(command -v python3.13 2>/dev/null || true)" \
      "$(PYENV_VERSION=3.13 pyenv which python3.13 2>/dev/null || true)" \
      "${PYENV_ROOT:-$HOME/.pyenv}"/versions/3.13*/bin/python3.13 \
      /usr/local/bin/python3.13 /usr/bin/python3.13 /opt/homebrew/bin/python3.13 \
      /Library/Frameworks/Python.framework/Versions/3.13/bin/python3.13; do
    if [ -n "$candidate" ] && [ -x "$candidate" ] \
        && "$candidate" -c 'import sys; assert sys.version_info[:2] == (3, 13)' 2>/dev/null; then
      echo "$candidate"; return 0
    fi
  done
  echo "scripts/test.sh: no Python 3.13 found for bpy 5.1/5.2 (looked for python3.13 on PATH, pyenv," \
       "\$PYENV_ROOT/versions/3.13*, /usr/local/bin, /usr/bin, Homebrew, python.org); install one or set" \
       "PYTHON313=/path/to/python3.13, or leave those versions out with VGGT_BLENDERS=\"4.2 4.5\"" >&2
  return 1
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
  find_python313
fi
