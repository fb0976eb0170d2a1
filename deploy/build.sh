#!/usr/bin/env bash
# Build what a Pi needs, on a workstation, from a checkout:
#   dist/edgemir-VERSION-py3-none-any.whl   the runtime package (no training extras)
#   dist/edgemir-bundles-VERSION.tar.gz     the bundles to deploy (edgemir/models/*.ts, or --models DIR)
set -euo pipefail
cd "$(dirname "$0")/.."
models="edgemir/models"
while [ $# -gt 0 ]; do
  case "$1" in
    --models) models="$2"; shift 2 ;;
    -h|--help) echo "usage: deploy/build.sh [--models DIR]"; exit 0 ;;
    *) echo "unknown option: $1" >&2; exit 2 ;;
  esac
done
py="${PYTHON:-python3}"
[ -x .venv/bin/python ] && py=.venv/bin/python
version="$("$py" -c 'import tomllib; print(tomllib.load(open("pyproject.toml","rb"))["project"]["version"])')"
mkdir -p dist
"$py" -m pip wheel --no-deps --no-build-isolation -q -w dist . 2>/dev/null || "$py" -m pip wheel --no-deps -q -w dist .
shopt -s nullglob
bundles=("$models"/*.ts)
if [ ${#bundles[@]} -eq 0 ]; then
  echo "no bundles in $models" >&2
  exit 2
fi
tar -czf "dist/edgemir-bundles-$version.tar.gz" -C "$models" "${bundles[@]##*/}"
echo "dist/edgemir-$version-py3-none-any.whl"
echo "dist/edgemir-bundles-$version.tar.gz (${#bundles[@]} bundles)"
