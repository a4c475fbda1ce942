#!/usr/bin/env bash
# End-to-end demo on built-in synthetic data; called by `make demo` with the venv on PATH.
set -euo pipefail
out=${1:-demo-out}
rm -rf "$out"; mkdir -p "$out"
fmdata --version
