#!/usr/bin/env bash
# .whl/ (what `make gpu-wheels` fetched) installed into .site/ for PYTHONPATH, on a machine
# without this project's venv; installed again whenever the set of wheels changed (a stamp of
# their names and hashes in .site/.wheels), so a stale .site never runs beside new wheels.
#
#   scripts/gpu-site.sh [PYTHON]        # default python3; does nothing without .whl/
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${1:-python3}
shopt -s nullglob
wheels=(.whl/*.whl)
[ ${#wheels[@]} -gt 0 ] || exit 0
stamp=$(sha256sum "${wheels[@]}" | sha256sum | cut -c1-64)
if [ -f .site/.wheels ] && [ "$(cat .site/.wheels)" = "$stamp" ]; then
    exit 0
fi
rm -rf .site
"$PYTHON" -m pip install -q --no-index --no-deps --target .site "${wheels[@]}"
echo "$stamp" > .site/.wheels
echo "gpu-site: ${#wheels[@]} wheels installed into .site/" >&2
