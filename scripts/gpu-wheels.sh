#!/usr/bin/env bash
# Wheels for running the project on an offline GPU machine whose Python already has torch
# (CUDA build), numpy, rich, typer, jinja2, psutil, scipy and matplotlib: the rest, pinned to
# the versions of this project's venv (scripts/gpu_wheels.py: one set that pip resolved, every
# requirement between them checked), downloaded for the target's Python into a fresh .whl/.
#
#   scripts/gpu-wheels.sh [PYTHON_VERSION]      # default 3.12
#   # carry the project folder with .whl/ to the GPU machine, then there:
#   make gpu-check      # scripts/gpu-site.sh installs .whl/ into .site/ (again when it changed)
set -euo pipefail
cd "$(dirname "$0")/.."
PYVER=${1:-3.12}
if [ ! -x .venv/bin/python ]; then
    echo "gpu-wheels: no .venv here: run \`make install\` first (the pins come from it)" >&2
    exit 1
fi
PIP=${PIP:-.venv/bin/pip}
pins=$(mktemp)
trap 'rm -f "$pins"' EXIT
.venv/bin/python scripts/gpu_wheels.py --python-version "$PYVER" > "$pins"
rm -rf .whl  # wheels of an older set would be installed beside the new ones
mkdir -p .whl
$PIP download -q --no-deps --only-binary=:all: --python-version "$PYVER" \
    --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux_2_28_x86_64 --platform any -d .whl -r "$pins"
# The default corpus's held-out source (baseline_train/prepare.py, HELD_OUT): make gpu-check
# moves it into the private cache folder, out of every trial's sight.
HELD=$(.venv/bin/python -c 'import sys; sys.path.insert(0, "baseline_train"); import prepare
h = prepare.HELD_OUT; print("%s==%s --hash=sha256:%s" % (h["name"], h["version"], h["sha256"]))')
echo "$HELD" > "$pins"
$PIP download -q --no-deps --no-binary=:all: --require-hashes -r "$pins" -d .whl
ls .whl | wc -l | xargs echo "gpu-wheels: wheels and archives in .whl/:"
