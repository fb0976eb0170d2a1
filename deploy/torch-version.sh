#!/usr/bin/env bash
# The torch version edgemir installs on this machine (or on ARCH): the one place that decides it,
# used by the Makefile (`make run`, `make test`), deploy/install-pi.sh and deploy/pi-check.sh.
#   x86_64   2.13.0  the CPU build (the bundles are exported with it)
#   aarch64  2.9.1   PyPI's aarch64 2.13.0 is a CUDA 13 build: 2.7 GB to download, 4.6 GB installed, and
#                    its BLAS uses ARMv8.1 atomics that a Pi 4 (Cortex-A72) lacks (SIGILL). 2.9.1 is a CPU
#                    build (about 720 MB installed) that loads the 2.13 bundles (docs/pi-check.txt).
# Usage: deploy/torch-version.sh [ARCH]
set -euo pipefail
case "${1:-$(uname -m)}" in
  aarch64|arm64) echo 2.9.1 ;;
  *) echo 2.13.0 ;;
esac
