#!/usr/bin/env bash
# Starts three moonwire nodes of the cluster example on this machine:
#   ./start.sh [redis|nats]
# WebSocket on 127.0.0.1:8801-8803, admin (/metrics, /healthz) on
# 127.0.0.1:9801-9803. Needs Redis at 127.0.0.1:6379 or NATS with
# JetStream at 127.0.0.1:4222. Ctrl-C stops the three.
set -euo pipefail
cd "$(dirname "$0")"
kind="${1:-redis}"
case "$kind" in
  redis) config=moonwire.toml ;;
  nats) config=nats.toml ;;
  *) echo "usage: $0 [redis|nats]" >&2; exit 2 ;;
esac
bin="${TMPDIR:-/tmp}/moonwire-cluster-example"
(cd ../.. && go build -o "$bin" ./cmd/moonwire)
pids=()
trap 'kill "${pids[@]}" 2>/dev/null; wait' EXIT INT TERM
for n in 1 2 3; do
  "$bin" -config "$config" -listen "127.0.0.1:880$n" -admin-listen "127.0.0.1:980$n" \
    2> >(sed "s/^/node$n: /" >&2) &
  pids+=($!)
done
echo "three nodes over $kind: ws://127.0.0.1:8801/chat/ROOM, :8802, :8803 (Ctrl-C stops them)"
wait
