#!/usr/bin/env bash
# Wheels for running the project on an offline GPU machine whose Python already has torch
# (CUDA build), numpy, rich, typer and jinja2: what the orchestrator needs besides those,
# downloaded here (where PyPI answers) into .whl/ for the target's Python version.
#
#   scripts/gpu-wheels.sh [PYTHON_VERSION]      # default 3.12
#   # carry the project folder with .whl/ to the GPU machine, then there:
#   make gpu-check                              # installs .whl/ into .site/ and runs the check
set -euo pipefail
cd "$(dirname "$0")/.."
PYVER=${1:-3.12}
PIP=${PIP:-$( [ -x .venv/bin/pip ] && echo .venv/bin/pip || echo "python3 -m pip" )}
mkdir -p .whl
$PIP download -q --no-deps --only-binary=:all: --python-version "$PYVER" \
    --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux_2_28_x86_64 --platform any -d .whl \
    unidiff cmaes optuna alembic sqlalchemy colorlog mako pyyaml tqdm \
    pydantic pydantic-core annotated-types typing-inspection docker requests urllib3 \
    certifi charset-normalizer idna psutil packaging typing-extensions markupsafe
# The default corpus's held-out source (baseline_train/prepare.py, HELD_OUT): make gpu-check
# moves it into the private cache folder, out of every trial's sight.
PYTHON=$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )
HELD=$($PYTHON -c 'import sys; sys.path.insert(0, "baseline_train"); import prepare
h = prepare.HELD_OUT; print("%s==%s --hash=sha256:%s" % (h["name"], h["version"], h["sha256"]))')
echo "$HELD" > .whl/held-out.txt
$PIP download -q --no-deps --no-binary=:all: --require-hashes -r .whl/held-out.txt -d .whl
rm .whl/held-out.txt
ls .whl | wc -l | xargs echo "gpu-wheels: wheels and archives in .whl/:"
