#!/usr/bin/env bash
# Installs libtorch 2.11.0 (from the PyPI wheel torch==2.11.0) into one virtual environment in a
# per-user cache folder shared by every checkout, once. Prints the venv's python path on stdout.
#
#   AUTOSAMPLER_TORCH_VENV   where the venv lives (default: ${XDG_CACHE_HOME:-~/.cache}/autosampler/torch-2.11.0)
#   PYTHON                   the interpreter that creates the venv (default: python3)
set -euo pipefail
TORCH_VERSION=2.11.0
cache=${XDG_CACHE_HOME:-$HOME/.cache}
venv=${AUTOSAMPLER_TORCH_VENV:-$cache/autosampler/torch-$TORCH_VERSION}
py=${PYTHON:-python3}
stamp="$venv/.autosampler-complete"

if [ -f "$stamp" ] && [ -x "$venv/bin/python" ]; then
  echo "$venv/bin/python"
  exit 0
fi

mkdir -p "$(dirname "$venv")"
# Serialise concurrent set-ups of the same venv (two checkouts, or CI next to a developer).
exec 9>"$venv.lock"
flock 9
if [ -f "$stamp" ] && [ -x "$venv/bin/python" ]; then
  echo "$venv/bin/python"
  exit 0
fi

echo "autosampler: installing torch==$TORCH_VERSION into $venv (once; about 2.7 GB download)" >&2
rm -rf "$venv"
"$py" -m venv "$venv" >&2
"$venv/bin/python" -m pip install --quiet --upgrade pip >&2
"$venv/bin/python" -m pip install --progress-bar off "torch==$TORCH_VERSION" numpy pillow safetensors >&2
"$venv/bin/python" -c "import torch; assert torch.__version__.startswith('$TORCH_VERSION'), torch.__version__" >&2
touch "$stamp"
echo "$venv/bin/python"
