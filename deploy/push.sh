#!/usr/bin/env bash
# shellcheck disable=SC2029  # $remote is meant to expand on this side
# Build on this workstation, copy to a Pi and install there:  deploy/push.sh pi@raspberrypi.local
set -euo pipefail
host="${1:?usage: deploy/push.sh HOST}"
cd "$(dirname "$0")/.."
out="$(deploy/build.sh)"
wheel="$(printf '%s\n' "$out" | grep '\.whl$')"
bundles="$(printf '%s\n' "$out" | grep 'bundles' | cut -d' ' -f1)"
remote=/tmp/edgemir-deploy
ssh "$host" "mkdir -p $remote"
scp "$wheel" "$bundles" deploy/install-pi.sh deploy/torch-version.sh deploy/edgemir.toml systemd/edgemir.service "$host:$remote/"
ssh "$host" "sudo bash $remote/install-pi.sh --wheel $remote/$(basename "$wheel") --bundles $remote/$(basename "$bundles")"
