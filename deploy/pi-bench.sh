#!/usr/bin/env bash
# Run `edgemir bench` on a Pi over ssh and copy the JSON back:  deploy/pi-bench.sh pi@raspberrypi.local [OUT.json]
set -euo pipefail
host="${1:?usage: deploy/pi-bench.sh HOST [OUT.json]}"
out="${2:-bench-$(echo "$host" | tr -c 'a-zA-Z0-9\n' '_').json}"
ssh "$host" "/opt/edgemir/venv/bin/edgemir bench /opt/edgemir/models --seconds 20 --json /tmp/edgemir-bench.json"
scp "$host:/tmp/edgemir-bench.json" "$out"
echo "$out"
