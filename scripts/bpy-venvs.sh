#!/usr/bin/env bash
# Creates (or reuses) one Python venv per Blender version with PyPI's `bpy`
# wheel, and a `blender`-like launcher beside each, for the version matrix of
# the tests (see README, "Tests"). Test infrastructure only: herd itself only
# needs "a blender executable".
#
#   scripts/bpy-venvs.sh [VERSION...]     # default: 4.2.23 4.5.15 5.0.1
#
# The cache lives outside the clone: $HERD_BPY_CACHE, else /var/cache/herd/bpy
# for root, else ~/.cache/herd/bpy (about 370 MB a version). A venv whose bpy imports is reused as it is; a
# broken or half-made one is made again. The launcher script is copied in on
# every run, so a change to it reaches the cache at once.
#
# Prints one line per version, `X.Y=/path/to/blender-X.Y`, and on the last
# line the HERD_TEST_BLENDERS value the tests read:
#   HERD_TEST_BLENDERS=4.2=/var/cache/herd/bpy/blender-4.2,...
# bpy wheels for these versions need CPython 3.11 (5.1 and later need 3.13):
# set HERD_BPY_PYTHON to use another interpreter.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
if [ -n "${HERD_BPY_CACHE:-}" ]; then
  cache="$HERD_BPY_CACHE"
elif [ "$(id -u)" = 0 ]; then
  cache=/var/cache/herd/bpy
else
  cache="${XDG_CACHE_HOME:-$HOME/.cache}/herd/bpy"
fi
python="${HERD_BPY_PYTHON:-python3}"
versions=("$@")
if [ ${#versions[@]} -eq 0 ]; then
  versions=(4.2.23 4.5.15 5.0.1)
fi
mkdir -p "$cache"
blenders=()
for version in "${versions[@]}"; do
  short="${version%.*}"
  venv="$cache/bpy-$version"
  launcher="$cache/blender-$short"
  if ! "$venv/bin/python" -c "import bpy, sys; sys.exit(bpy.app.version_string.split()[0] != '$version')" \
      >/dev/null 2>&1; then
    echo "bpy $version: creating $venv" >&2
    rm -rf "$venv"
    "$python" -m venv "$venv"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "bpy==$version" >&2
    "$venv/bin/python" -c "import bpy; print('bpy', bpy.app.version_string, 'ready')" >&2
  fi
  cp "$here/bpy-blender.py" "$venv/herd-blender.py"
  # The launcher: a `blender` executable as far as herd's command lines go.
  tmp="$launcher.$$"
  printf '#!/bin/sh\nexec "%s/bin/python" "%s/herd-blender.py" "$@"\n' "$venv" "$venv" >"$tmp"
  chmod 755 "$tmp"
  mv "$tmp" "$launcher"
  echo "$short=$launcher"
  blenders+=("$short=$launcher")
done
(IFS=,; echo "HERD_TEST_BLENDERS=${blenders[*]}")
