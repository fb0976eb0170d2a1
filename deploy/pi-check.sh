#!/usr/bin/env bash
# Prove the Raspberry Pi path here, under emulated aarch64 (qemu-user, a Debian bookworm arm64 userland
# like Raspberry Pi OS 64-bit, the torch that deploy/torch-version.sh picks for aarch64 and edgemir's
# runtime dependencies from PyPI), on a Pi 4 (Cortex-A72) and a Pi 5 (Cortex-A76) CPU model:
#   1. every bundle's front-end and network on the demo clip, 1 and 4 threads, against this machine's
#      outputs (max abs difference <= 1e-4);
#   2. `edgemir analyze` of the demo clip gives the same output files as on this machine.
# Needs root and ../shared/tools/aarch64 (or AARCH64_TOOLS); about 6 min once set up (the first set-up
# downloads about 300 MB). Not part of `make test`.
#   deploy/pi-check.sh [--out FILE]     default: docs/pi-check.txt
set -euo pipefail
cd "$(dirname "$0")/.."
out=docs/pi-check.txt
while [ $# -gt 0 ]; do
  case "$1" in
    --out) out="$2"; shift 2 ;;
    -h|--help) sed -n '2,10p' "$0"; exit 0 ;;
    *) echo "pi-check.sh: unknown option $1" >&2; exit 2 ;;
  esac
done
tools="${AARCH64_TOOLS:-../shared/tools/aarch64}"
[ -x "$tools/run_aarch64.sh" ] || { echo "pi-check.sh: no emulation tools in $tools (set AARCH64_TOOLS)" >&2; exit 2; }
[ -x .venv/bin/python ] || { echo "pi-check.sh: run 'make test' once first (it sets up .venv)" >&2; exit 2; }

AARCH64_TORCH_VERSION="$(bash deploy/torch-version.sh aarch64)"
# edgemir's runtime dependencies (pyproject.toml), numpy and torch come with the tool's venv
AARCH64_EXTRA_PKGS="sounddevice soundfile soxr rich python-osc"
AARCH64_HOST_PYTHON="$PWD/.venv/bin/python"
AARCH64_PASS_ENV="PYTHONPATH"
PYTHONPATH=/work
export AARCH64_TORCH_VERSION AARCH64_EXTRA_PKGS AARCH64_HOST_PYTHON AARCH64_PASS_ENV PYTHONPATH

work=logs/pi-check
rm -rf "$work"
mkdir -p "$work" "$(dirname "$out")"
host_py=.venv/bin/python
rc=0
{
  echo "# deploy/pi-check.sh at $(git rev-parse --short HEAD 2>/dev/null || echo '?'), $(date -u +%Y-%m-%d)"
  echo "# emulated aarch64 (qemu-user, Debian bookworm arm64) with torch $AARCH64_TORCH_VERSION vs this $(uname -m) machine"
  PYTHONPATH=. "$host_py" deploy/pi_check.py outputs "$work/host.pt"
  PYTHONPATH=. "$host_py" -m edgemir analyze edgemir/data/demo.wav --out "$work/analyze-host" --threads 1 >/dev/null
  for model in pi4 pi5; do
    echo
    echo "## $model"
    t0=$SECONDS
    AARCH64_PI_MODEL=$model "$tools/run_aarch64.sh" --bind . python -c \
      'import torch, platform; print("aarch64 python", platform.python_version(), "torch", torch.__version__, "cpu_capability", torch.backends.cpu.get_cpu_capability())'
    AARCH64_PI_MODEL=$model "$tools/run_aarch64.sh" --bind . python deploy/pi_check.py outputs "/work/$work/$model.pt"
    "$host_py" deploy/pi_check.py compare "$work/host.pt" "$work/$model.pt" || rc=1
    AARCH64_PI_MODEL=$model "$tools/run_aarch64.sh" --bind . python -m edgemir analyze /work/edgemir/data/demo.wav \
      --out "/work/$work/analyze-$model" --threads 1
    echo "edgemir analyze demo.wav, $model vs $(uname -m):"
    "$host_py" deploy/pi_check.py events "$work/analyze-host" "$work/analyze-$model" || rc=1
    echo "($model: $((SECONDS - t0)) s under emulation)"
  done
  echo
  echo "## footprint"
  "$tools/run_aarch64.sh" --bind . python deploy/pi_check.py footprint
  echo "edgemir wheel: $(du -sh --exclude=__pycache__ edgemir | cut -f1) (code, bundles and the demo clip)"
  echo
  [ $rc = 0 ] && echo "RESULT: all bundles match on pi4 and pi5 at 1 and 4 threads; analyze events identical" \
    || echo "RESULT: MISMATCH (see above)"
  exit $rc
} 2>&1 | tee "$out"
exit "${PIPESTATUS[0]}"
