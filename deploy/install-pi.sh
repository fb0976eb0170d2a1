#!/usr/bin/env bash
# Install or upgrade edgemir as a service on a Raspberry Pi (Raspberry Pi OS 64-bit, bookworm) or any
# Debian. Idempotent: run it again to upgrade; the config in /etc/edgemir is kept.
#
#   install-pi.sh --wheel edgemir-*.whl --bundles edgemir-bundles-*.tar.gz   install / upgrade
#   install-pi.sh ... --dry-run                                              print the plan only
#   install-pi.sh --uninstall                                                remove all but the config
#   --prefix DIR   install under DIR (a throw-away root for tests: no apt, no user, no systemctl)
#   --torch SPEC   the torch requirement (default: torch==$(torch-version.sh): 2.13.0 on x86_64, 2.9.1 on
#                  aarch64, the CPU build on PyPI — PyPI's aarch64 torch 2.13.0 is a 2.7 GB CUDA build)
set -euo pipefail

prefix=""
wheel=""
bundles=""
dry=0
uninstall=0
torch_spec=""
while [ $# -gt 0 ]; do
  case "$1" in
    --wheel) wheel="$2"; shift 2 ;;
    --bundles) bundles="$2"; shift 2 ;;
    --prefix) prefix="$(realpath -m "$2")"; shift 2 ;;
    --torch) torch_spec="$2"; shift 2 ;;
    --dry-run) dry=1; shift ;;
    --uninstall) uninstall=1; shift ;;
    -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
    *) echo "install-pi.sh: unknown option $1" >&2; exit 2 ;;
  esac
done

here="$(cd "$(dirname "$0")" && pwd)"
opt="$prefix/opt/edgemir"
etc="$prefix/etc/edgemir"
unit_dir="$prefix/etc/systemd/system"
unit_src="$here/edgemir.service"
[ -f "$unit_src" ] || unit_src="$here/../systemd/edgemir.service"
config_src="$here/edgemir.toml"
if [ -z "$torch_spec" ]; then
  torch_spec="torch==$(bash "$here/torch-version.sh")"
fi

run() {
  if [ "$dry" = 1 ]; then
    printf '  would run: %s\n' "$*"
  else
    "$@"
  fi
}
step() { printf '%s\n' "- $*"; }

if [ "$(id -u)" != 0 ] && [ -z "$prefix" ]; then
  echo "install-pi.sh: run as root (sudo), or give --prefix for a test install" >&2
  exit 2
fi

if [ "$uninstall" = 1 ]; then
  step "uninstall edgemir (config in $etc is kept)"
  if [ -z "$prefix" ] && command -v systemctl >/dev/null; then
    run systemctl disable --now edgemir.service || true
  fi
  run rm -f "$unit_dir/edgemir.service"
  run rm -rf "$opt"
  if [ -z "$prefix" ] && id edgemir >/dev/null 2>&1; then
    run userdel edgemir
  fi
  [ -z "$prefix" ] && command -v systemctl >/dev/null && run systemctl daemon-reload
  exit 0
fi

[ -n "$wheel" ] || { echo "install-pi.sh: --wheel is required (build it with deploy/build.sh)" >&2; exit 2; }
[ -f "$wheel" ] || { echo "install-pi.sh: wheel not found: $wheel" >&2; exit 2; }
[ -z "$bundles" ] || [ -f "$bundles" ] || { echo "install-pi.sh: bundles not found: $bundles" >&2; exit 2; }

[ "$dry" = 1 ] && echo "edgemir install plan (dry run; nothing is changed):"
if [ -z "$prefix" ]; then
  step "system packages: libportaudio2 python3-venv"
  missing=""
  for p in libportaudio2 python3-venv; do dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"; done
  if [ -n "$missing" ]; then
    run apt-get update -qq
    # shellcheck disable=SC2086
    run env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing
  fi
  step "system user edgemir in group audio"
  if ! id edgemir >/dev/null 2>&1; then
    run useradd --system --home-dir /var/lib/edgemir --no-create-home --shell /usr/sbin/nologin --groups audio edgemir
  fi
fi

step "virtual environment $opt/venv with $torch_spec and $(basename "$wheel")"
run mkdir -p "$opt"
if [ ! -x "$opt/venv/bin/python" ]; then
  run python3 -m venv "$opt/venv"
fi
run "$opt/venv/bin/python" -m pip install -q --upgrade pip
run "$opt/venv/bin/python" -m pip install -q "$torch_spec"
run "$opt/venv/bin/python" -m pip install -q --force-reinstall --no-deps "$wheel"
run "$opt/venv/bin/python" -m pip install -q "$wheel"

if [ -n "$bundles" ]; then
  step "bundles into $opt/models"
  run mkdir -p "$opt/models"
  run tar -xzf "$bundles" -C "$opt/models"
fi

step "config $etc/edgemir.toml (kept if present)"
run mkdir -p "$etc"
if [ ! -f "$etc/edgemir.toml" ]; then
  run install -m 0644 "$config_src" "$etc/edgemir.toml"
fi

step "unit $unit_dir/edgemir.service"
run mkdir -p "$unit_dir"
if [ "$dry" = 1 ]; then
  printf '  would write %s (ExecStart=%s/venv/bin/edgemir)\n' "$unit_dir/edgemir.service" "$opt"
else
  sed -e "s#/opt/edgemir#$opt#g" -e "s#/etc/edgemir#$etc#g" "$unit_src" > "$unit_dir/edgemir.service"
fi
if [ -z "$prefix" ] && command -v systemctl >/dev/null && [ -d /run/systemd/system ]; then
  step "enable and (re)start the service"
  run systemctl daemon-reload
  run systemctl enable edgemir.service
  run systemctl restart edgemir.service
fi
[ "$dry" = 1 ] || echo "edgemir installed in $opt"
