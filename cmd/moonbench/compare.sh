#!/usr/bin/env bash
# compare.sh runs moonbench's scenarios against moonwire and against the
# baselines, one fresh server per run, on this machine, and prints the
# figures side by side with moonwire's ratio to each baseline. It is how
# the README's Performance table is made.
#
#   cmd/moonbench/compare.sh                  # every scenario
#   cmd/moonbench/compare.sh echo handshake   # some of them
#
# Scenarios: echo (100 connections), echo-big, broadcast, idle, handshake.
# Environment: DURATION (default 10s) is each run's window; BIG (default
# 10000) is the connection count of echo-big and idle and the subscriber
# count of broadcast; IDLE_HOLD (default 30s) is how long idle holds them;
# REPEAT (default 1) runs each scenario's set of servers that many times,
# alternating, and the table shows each figure's median (this machine's
# neighbours come and go: take 3 for figures worth quoting); OUT (default a
# new temporary folder) receives the binaries, the logs and results.jsonl,
# one JSON line per run.
#
# Servers listen on 127.0.0.1 (moonwire on 8765, the Python and Node echo
# servers on 8766 and 8767); the baselines run as moonbench's children.
# The Python (python3-websockets) and Node (node-ws) references run when
# their libraries are installed.
set -euo pipefail

root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
DURATION=${DURATION:-10s}
BIG=${BIG:-10000}
IDLE_HOLD=${IDLE_HOLD:-30s}
REPEAT=${REPEAT:-1}
OUT=${OUT:-$(mktemp -d)}
mkdir -p "$OUT"
results=$OUT/results.jsonl
: >"$results"
testdata=$root/cmd/moonbench/testdata

go build -o "$OUT/moonwire" ./cmd/moonwire
go build -o "$OUT/moonbench" ./cmd/moonbench

server_pid=
stop_server() {
	if [[ -n $server_pid ]]; then
		kill "$server_pid" 2>/dev/null || true
		wait "$server_pid" 2>/dev/null || true
		server_pid=
	fi
}
trap stop_server EXIT

# wait_port PORT: until something accepts on 127.0.0.1:PORT (10s at most).
wait_port() {
	for _ in $(seq 100); do
		if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then
			return 0
		fi
		sleep 0.1
	done
	echo "compare.sh: nothing listens on 127.0.0.1:$1" >&2
	return 1
}

# start_moonwire CONFIG: a fresh moonwire on one of testdata's configs.
start_moonwire() {
	stop_server
	"$OUT/moonwire" -config "$testdata/$1" -log-level warn 2>>"$OUT/moonwire.log" >/dev/null &
	server_pid=$!
	wait_port 8765
}

# run LABEL ARGS...: one moonbench run, its JSON line kept.
run() {
	local label=$1
	shift
	echo "-- $label: moonbench $*" >&2
	"$OUT/moonbench" "$@" -json -label "$label" | tee -a "$results"
}

have_python() { /usr/bin/python3 -c 'import websockets' 2>/dev/null; }
have_node() { NODE_PATH=/usr/share/nodejs node -e 'require("ws")' 2>/dev/null; }

scenario_echo() {
	local args=(-scenario echo -conns 100 -size 32 -inflight 8 -duration "$DURATION")
	start_moonwire echo.toml
	run echo/moonwire "${args[@]}" -url ws://127.0.0.1:8765/echo -pid "$server_pid"
	stop_server
	run echo/baseline "${args[@]}" -baseline
	run echo/baseline-bufio "${args[@]}" -baseline -baseline-bufio
	if have_python; then
		/usr/bin/python3 cmd/moonbench/reference/echo_server.py 127.0.0.1 8766 >/dev/null 2>>"$OUT/python.log" &
		server_pid=$!
		wait_port 8766
		run echo/python-websockets "${args[@]}" -url ws://127.0.0.1:8766/echo -pid "$server_pid"
		stop_server
	fi
	if have_node; then
		NODE_PATH=/usr/share/nodejs node cmd/moonbench/reference/echo_server.js 127.0.0.1 8767 >/dev/null 2>>"$OUT/node.log" &
		server_pid=$!
		wait_port 8767
		run echo/node-ws "${args[@]}" -url ws://127.0.0.1:8767/echo -pid "$server_pid"
		stop_server
	fi
}

scenario_echo-big() {
	local args=(-scenario echo -conns "$BIG" -size 32 -inflight 8 -duration "$DURATION")
	start_moonwire echo.toml
	run echo-big/moonwire "${args[@]}" -url ws://127.0.0.1:8765/echo -pid "$server_pid"
	stop_server
	run echo-big/baseline "${args[@]}" -baseline
	run echo-big/baseline-bufio "${args[@]}" -baseline -baseline-bufio
}

scenario_broadcast() {
	local args=(-scenario broadcast -subs "$BIG" -pubs 1 -size 64 -rate 10 -duration "$DURATION")
	start_moonwire broadcast.toml
	run broadcast/moonwire "${args[@]}" -url ws://127.0.0.1:8765/room -pid "$server_pid"
	stop_server
	run broadcast/baseline "${args[@]}" -baseline -url ws://127.0.0.1/room
	run broadcast/baseline-bufio "${args[@]}" -baseline -baseline-bufio -url ws://127.0.0.1/room
}

scenario_idle() {
	local args=(-scenario idle -conns "$BIG" -duration "$IDLE_HOLD")
	start_moonwire idle.toml
	run idle/moonwire "${args[@]}" -url ws://127.0.0.1:8765/echo -pid "$server_pid"
	stop_server
	run idle/baseline "${args[@]}" -baseline
}

scenario_handshake() {
	local args=(-scenario handshake -conns 8 -duration "$DURATION")
	start_moonwire auth.toml
	run handshake/moonwire-auth "${args[@]}" -url ws://127.0.0.1:8765/auth -header 'X-Auth-Token: token_123' -pid "$server_pid"
	start_moonwire auth.toml
	run handshake/moonwire-plain "${args[@]}" -url ws://127.0.0.1:8765/echo -pid "$server_pid"
	stop_server
	run handshake/baseline "${args[@]}" -baseline
}

scenarios=("$@")
if [[ ${#scenarios[@]} -eq 0 ]]; then
	scenarios=(echo echo-big broadcast idle handshake)
fi
for s in "${scenarios[@]}"; do
	if ! declare -F "scenario_$s" >/dev/null; then
		echo "compare.sh: unknown scenario $s (echo, echo-big, broadcast, idle, handshake)" >&2
		exit 2
	fi
	for _ in $(seq "$REPEAT"); do
		"scenario_$s"
	done
done
stop_server

echo
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //'), $(uname -sr)"
/usr/bin/env python3 - "$results" <<'EOF'
import json, statistics, sys

# Every run of a label, then each figure's median over them.
byLabel = {}
for line in open(sys.argv[1]):
    line = line.strip()
    if line.startswith("{"):
        j = json.loads(line)
        byLabel.setdefault(j["label"], []).append(j)
runs = {}
for label, js in byLabel.items():
    keys = {k for j in js for k, v in j.items() if isinstance(v, (int, float))}
    runs[label] = {k: statistics.median([j[k] for j in js if k in j]) for k in keys}
    runs[label]["n"] = len(js)

def fmt(v, unit=""):
    return "-" if v is None else (f"{v:,.0f}{unit}" if abs(v) >= 100 else f"{v:.2f}{unit}")

def ratio(a, b, higher_better):
    if a is None or b in (None, 0) or a == 0:
        return "-"
    return f"{(a / b) if higher_better else (b / a):.2f}x"

# (scenario, metric key, unit, higher is better, what it means)
metrics = {
    "echo": [("round_trips_per_s", "/s", True, "round trips"), ("p99_us", "µs", False, "p99 latency"), ("server_cpu_us_per_op", "µs", False, "server CPU per round trip")],
    "echo-big": [("round_trips_per_s", "/s", True, "round trips"), ("p99_us", "µs", False, "p99 latency"), ("server_cpu_us_per_op", "µs", False, "server CPU per round trip")],
    "broadcast": [("server_cpu_s_per_million_deliveries", "s", False, "server CPU per 1M deliveries"), ("p99_us", "µs", False, "p99 delivery latency"), ("lost", "", False, "lost")],
    "idle": [("rss_per_conn_bytes", "B", False, "server RSS per connection"), ("held", "", True, "held")],
    "handshake": [("connects_per_s", "/s", True, "connects"), ("server_cpu_us_per_op", "µs", False, "server CPU per connect"), ("p99_us", "µs", False, "p99 handshake latency")],
}
print()
print(f"{'run (median of n)':34} {'metric':30} {'value':>14}  {'moonwire is':>12}")
for scen, ms in metrics.items():
    labels = [l for l in runs if l.startswith(scen + "/")]
    if not labels:
        continue
    mw = runs.get(scen + "/moonwire") or runs.get(scen + "/moonwire-auth")
    for l in labels:
        for key, unit, hb, what in ms:
            v = runs[l].get(key)
            r = "" if l.split("/")[1].startswith("moonwire") else ratio(mw.get(key) if mw else None, v, hb)
            print(f"{l + ' (' + str(runs[l]['n']) + ')':34} {what:30} {fmt(v, unit):>14}  {r:>12}")
    print()
print("'moonwire is' = moonwire's figure against that run's, as a speed-up (higher is better for moonwire).")
EOF
echo "results: $results"
