#!/usr/bin/env bash
# run.sh BINARY PROBE...: for each probe (loadstring concat json gsub trim
# find, see probes.lua), a fresh moonwire BINARY on 127.0.0.1 with the
# default limits, under "ulimit -v 12582912" (12 GiB of address space: a
# runaway fails there rather than taking the machine). Python's websockets
# (Debian: python3-websockets) sends the probe's name and waits up to 90 s.
# Prints the answer or close code, VmRSS before and VmHWM after, then sends
# SIGTERM and reports how long the process took to exit (SIGKILL at 20 s).
# Each server gets a port nothing accepts on; if it exits, or does not
# accept within 10 s, run.sh prints its log and fails.
set -euo pipefail
bin=$(realpath "$1"); shift
here=$(cd "$(dirname "$0")" && pwd)
dir=$(mktemp -d)
pid=
trap '[[ -n $pid ]] && kill -KILL $pid 2>/dev/null; rm -rf "$dir"' EXIT
mkdir "$dir/scripts"
cp "$here/probes.lua" "$dir/scripts/"
# free_port: a port on 127.0.0.1 that nothing accepts on now (as in
# compare.sh).
free_port() {
	local p
	for _ in $(seq 100); do
		p=$((20000 + RANDOM % 30000))
		if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
			echo "$p"
			return 0
		fi
	done
	echo "run.sh: no free port found" >&2
	return 1
}
for probe in "$@"; do
	port=$(free_port)
	printf '[server]\nlisten = "127.0.0.1:%d"\n[[routes]]\npath = "/t"\nscript = "probes.lua"\n' "$port" >"$dir/moonwire.toml"
	(ulimit -v 12582912 && exec "$bin" -config "$dir/moonwire.toml" -log-level warn) >"$dir/log" 2>&1 &
	pid=$!
	# Ready once our server (still alive: not another process that took
	# the port) accepts on the port.
	ready=
	for _ in $(seq 100); do
		kill -0 "$pid" 2>/dev/null || break
		if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
			ready=1
			break
		fi
		sleep 0.1
	done
	if [[ -z $ready ]]; then
		if kill -0 "$pid" 2>/dev/null; then
			echo "run.sh: $bin did not accept on 127.0.0.1:$port within 10 s; log:" >&2
			kill -KILL "$pid" 2>/dev/null || true
		else
			echo "run.sh: $bin exited before accepting on 127.0.0.1:$port; log:" >&2
		fi
		cat "$dir/log" >&2
		wait "$pid" 2>/dev/null || true
		pid=
		exit 1
	fi
	before=$(awk '/VmRSS/ {print $2}' "/proc/$pid/status")
	printf '%s %s: ' "$(basename "$bin")" "$probe"
	timeout 100 /usr/bin/python3 - "$port" "$probe" <<'PY' || true
import asyncio, sys, time, websockets
async def main(port, probe):
    async with websockets.connect(f"ws://127.0.0.1:{port}/t", max_size=None) as ws:
        t = time.monotonic()
        await ws.send(probe)
        try:
            r = await asyncio.wait_for(ws.recv(), 90)
            print("answer %r after %.2f s;" % (r[:150], time.monotonic() - t), end=" ")
        except websockets.ConnectionClosed as e:
            print("closed %s after %.2f s;" % (e.rcvd.code if e.rcvd else None, time.monotonic() - t), end=" ")
        except asyncio.TimeoutError:
            print("no answer in 90 s;", end=" ")
asyncio.run(main(int(sys.argv[1]), sys.argv[2]))
PY
	if ! kill -0 "$pid" 2>/dev/null; then
		echo "server died: $(grep -m1 -i 'fatal\|panic\|out of memory' "$dir/log" | cut -c1-150)"
		wait "$pid" 2>/dev/null || true
		pid=
		continue
	fi
	printf 'RSS before %d MiB, peak %d MiB; ' $((before / 1024)) $(($(awk '/VmHWM/ {print $2}' "/proc/$pid/status") / 1024))
	start=$(date +%s%N)
	kill -TERM "$pid"
	for _ in $(seq 200); do
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.1
	done
	if kill -0 "$pid" 2>/dev/null; then
		echo "SIGTERM: still running after 20 s, killed"
		kill -KILL "$pid"
	else
		echo "SIGTERM: exited in $(( ($(date +%s%N) - start) / 1000000 )) ms"
	fi
	wait "$pid" 2>/dev/null || true
	pid=
done
