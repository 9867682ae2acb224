#!/usr/bin/env bash
# The hot-reload proof, reproducible: 1,000 chat clients on loopback keep
# exchanging messages while the route's script is rewritten 100 times,
# alternating valid and broken versions, and saved to disk the way an
# editor does; the file watcher applies each save. It checks that no
# connection drops, no message is lost or duplicated (per-sender sequence
# numbers), every valid version serves, and no broken version ever does,
# then prints the figures.
#
#   examples/reload/proof.sh                 # the full proof (about 30 s)
#   examples/reload/proof.sh -reload.via=call   # apply with Node.Reload, as SIGHUP does
#
# Extra arguments go to the test (-reload.clients, -reload.rewrites,
# -reload.interval, -reload.room).
set -euo pipefail
cd "$(dirname "$0")/../.."
exec go test ./internal/node/ -run '^TestReloadUnderLoad$' -count=1 -v \
  -reload.clients=1000 -reload.rewrites=100 -reload.via=watch "$@" 2>&1 |
  grep -E '^(=== RUN|--- |PASS|FAIL|ok|\s+proof_test)'
