#!/usr/bin/env bash
# compare.sh runs moonattack's attacks against two moonwire binaries, one
# fresh server per run, and prints one table row per attack and binary.
#
#   cmd/moonattack/compare.sh OLD_BINARY NEW_BINARY [attack...]
#   cmd/moonattack/compare.sh /tmp/moonwire-old /tmp/moonwire-new pingflood inflate
#
# Attacks: pingflood, inflate, slowbody, chatstore (default: all four, in
# that order). Each runs with moonattack's defaults for that attack; ARGS
# (environment, word-split) adds flags to every run, e.g. ARGS="-settle 5s".
#
# For each attack and binary: cmd/moonattack/testdata, with moonwire's own
# scripts/echo.lua and scripts/chat.lua, is copied to a fresh folder under OUT (default a new temporary folder), its server.listen set
# to a free port on 127.0.0.1, and the binary started on it with
# "ulimit -v 8388608" (8 GiB of address space: a runaway server fails
# there instead of taking the machine) and its log in OUT/logs. Once it
# answers an HTTP request, moonattack runs with -pid; then the
# server gets SIGTERM, and SIGKILL 10 s later if it is still there. Runs
# are strictly one at a time, and a trap kills the server on any exit.
# OUT/results.jsonl keeps every run's JSON line. Rows, logs and run
# folders are labelled with each binary's basename, or old-NAME and
# new-NAME when the two share one.
set -euo pipefail

if [[ $# -lt 2 ]]; then
	echo "usage: $0 OLD_BINARY NEW_BINARY [pingflood|inflate|slowbody|chatstore ...]" >&2
	exit 2
fi
root=$(cd "$(dirname "$0")/../.." && pwd)
bins=("$(realpath "$1")" "$(realpath "$2")")
shift 2
attacks=("$@")
if [[ ${#attacks[@]} -eq 0 ]]; then
	attacks=(pingflood inflate slowbody chatstore)
fi
for a in "${attacks[@]}"; do
	case $a in
	pingflood | inflate | slowbody | chatstore) ;;
	*)
		echo "compare.sh: unknown attack $a (pingflood, inflate, slowbody, chatstore)" >&2
		exit 2
		;;
	esac
done
read -r -a extra <<<"${ARGS:-}"
OUT=${OUT:-$(mktemp -d)}
mkdir -p "$OUT/logs"
results=$OUT/results.jsonl
: >"$results"
testdata=$root/cmd/moonattack/testdata

# prepare DIR: testdata and the scripts it routes to (moonwire's own
# scripts/echo.lua and scripts/chat.lua) in a fresh DIR.
prepare() {
	rm -rf "$1"
	cp -r "$testdata" "$1"
	cp "$root/scripts/echo.lua" "$root/scripts/chat.lua" "$1/"
}

(cd "$root" && go build -o "$OUT/moonattack" ./cmd/moonattack)

server_pid=
# stop_server: SIGTERM, then SIGKILL after 10 s; waits for the process.
stop_server() {
	if [[ -z $server_pid ]]; then
		return 0
	fi
	kill -TERM "$server_pid" 2>/dev/null || true
	for _ in $(seq 100); do
		kill -0 "$server_pid" 2>/dev/null || break
		sleep 0.1
	done
	if kill -0 "$server_pid" 2>/dev/null; then
		echo "compare.sh: server $server_pid still running 10 s after SIGTERM: SIGKILL" >&2
		kill -KILL "$server_pid" 2>/dev/null || true
	fi
	wait "$server_pid" 2>/dev/null || true
	server_pid=
}
trap stop_server EXIT
trap 'exit 130' INT TERM

# free_port: a port on 127.0.0.1 that nothing accepts on now.
free_port() {
	local p
	for _ in $(seq 100); do
		p=$((20000 + RANDOM % 30000))
		if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
			echo "$p"
			return 0
		fi
	done
	echo "compare.sh: no free port found" >&2
	return 1
}

# answers PORT: the server on PORT answers an HTTP request for /.
answers() (
	exec 3<>"/dev/tcp/127.0.0.1/$1" || exit 1
	printf 'GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n' >&3
	IFS= read -r -t 2 line <&3 || true
	[[ $line == "HTTP/1."[01]" "* ]]
)

# start_server BINARY NAME: a fresh server on a copy of testdata; sets
# server_pid and port.
start_server() {
	local bin=$1 name=$2 dir=$OUT/run-$2
	for _ in 1 2 3; do
		prepare "$dir"
		port=$(free_port)
		sed -i "s/^listen = .*/listen = \"127.0.0.1:$port\"/" "$dir/moonwire.toml"
		(ulimit -v 8388608 && exec "$bin" -config "$dir/moonwire.toml" -log-level warn) \
			>>"$OUT/logs/$name.log" 2>&1 </dev/null &
		server_pid=$!
		for _ in $(seq 100); do
			if ! kill -0 "$server_pid" 2>/dev/null; then
				break
			fi
			if answers "$port" 2>/dev/null; then
				return 0
			fi
			sleep 0.1
		done
		echo "compare.sh: $bin did not answer on 127.0.0.1:$port (see $OUT/logs/$name.log); retrying" >&2
		stop_server
	done
	return 1
}

prepare "$OUT/check"
for bin in "${bins[@]}"; do
	if ! "$bin" check -config "$OUT/check/moonwire.toml" >&2; then
		echo "compare.sh: $bin refuses $testdata/moonwire.toml" >&2
		exit 1
	fi
done

path_of() {
	case $1 in
	pingflood | inflate) echo /echo ;;
	slowbody) echo /x ;;
	chatstore) echo /chat ;;
	esac
}

# Rows, logs and run folders are named by the binaries' basenames, or,
# when both have the same one (a/moonwire, b/moonwire), old-NAME and
# new-NAME.
labels=("$(basename "${bins[0]}")" "$(basename "${bins[1]}")")
if [[ ${labels[0]} == "${labels[1]}" ]]; then
	labels=("old-${labels[0]}" "new-${labels[1]}")
fi

"$OUT/moonattack" -table /dev/null
for a in "${attacks[@]}"; do
	for i in 0 1; do
		bin=${bins[i]} label=${labels[i]}
		start_server "$bin" "$a-$label"
		echo "-- $a/$label: moonattack -attack $a -url ws://127.0.0.1:$port$(path_of "$a") -pid $server_pid ${extra[*]}" >&2
		if ! line=$("$OUT/moonattack" -attack "$a" -url "ws://127.0.0.1:$port$(path_of "$a")" -pid "$server_pid" \
			-label "$label" -json "${extra[@]}"); then
			echo "| $a | $label | moonattack failed (see above) |"
			stop_server
			continue
		fi
		echo "$line" >>"$results"
		"$OUT/moonattack" -table - <<<"$line" | tail -n 1
		stop_server
	done
done

echo
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //'), $(uname -sr), $(. /etc/os-release && echo "$PRETTY_NAME")"
echo "results: $results"
echo
"$OUT/moonattack" -table "$results"
