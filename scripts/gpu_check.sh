#!/usr/bin/env bash
# What only a GPU can show (scripts/gpu_check.py): every GPU overlay fits, the ResNet-50 benchmark,
# ddp.yaml on one device, an exact resume; one results file, $OUT/results.json. Under 8 minutes
# on one H100.
#   make gpu-wheels                    # where there is a network: the wheels, in .gpu_wheels/
#   scripts/gpu_check.sh               # on the GPU machine (or: make gpu-check)
#   DRY_RUN=1 scripts/gpu_check.sh     # on a CPU: the same steps at toy sizes
# A GPU machine with torch and lightning but no jsonargparse or mnist1d (and no network) gets
# them from .gpu_wheels/, installed into $OUT/site, not into its Python.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
WHEELS=${WHEELS:-.gpu_wheels}
OUT=$(mkdir -p "${OUT:-logs/gpu_check}" && cd "${OUT:-logs/gpu_check}" && pwd)
# the project's pure-Python needs that such a machine may lack: import name=package name
missing=$("$PYTHON" - <<'PY'
import importlib.util
wanted = {"jsonargparse": "jsonargparse", "docstring_parser": "docstring-parser",
          "typeshed_client": "typeshed-client", "mnist1d": "mnist1d"}
print(" ".join(package for name, package in wanted.items() if importlib.util.find_spec(name) is None))
PY
)
if [[ -n $missing ]]; then
  if ! compgen -G "$WHEELS/*.whl" >/dev/null; then
    echo "gpu_check: missing $missing and no wheels in $WHEELS/: run 'make gpu-wheels' first" >&2
    exit 2
  fi
  echo "gpu_check: installing $missing from $WHEELS/ into $OUT/site"
  "$PYTHON" -m pip install --quiet --no-index --no-deps --find-links "$WHEELS" \
    --target "$OUT/site" $missing
fi
export PYTHONPATH=$PWD:$OUT/site${PYTHONPATH:+:$PYTHONPATH}
dry=(); [[ ${DRY_RUN:-0} == 1 ]] && dry=(--dry-run)
exec "$PYTHON" scripts/gpu_check.py --out "$OUT" "${dry[@]}"
