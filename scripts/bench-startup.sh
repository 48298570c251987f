#!/usr/bin/env bash
# bench-startup.sh: how long the real zhangban binary takes from exec to a
# 200 on /readyz,
#   (a) cold: on an empty data directory (initdb, migrations, key generation,
#       first administrator), and
#   (b) warm: restarting on that same directory after a graceful stop
#       (SIGTERM, wait for exit).
# Each of RUNS rounds uses a fresh data directory: cold start, SIGTERM, warm
# restart, SIGTERM. It prints every round and the medians.
#
# usage: scripts/bench-startup.sh [-n RUNS] [-b BINARY] [-p PORT]
#   -n RUNS    rounds (default 5, env RUNS)
#   -b BINARY  zhangban binary to measure; default: go build ./cmd/zhangban
#              into a temporary directory (env ZHANGBAN_BIN)
#   -p PORT    127.0.0.1 port for the server (default 18473, env PORT); must
#              be free, or /readyz would be answered by someone else
#
# The managed PostgreSQL runs as the "postgres" user when this runs as root,
# so each data directory is made with mktemp -d under /tmp and chmod 755: that
# user must be able to traverse it. Times come from date +%s%N around the
# exec and a poll of /readyz every POLL_S seconds (default 0.05), so they
# include up to one poll interval of slack.
set -euo pipefail

runs=${RUNS:-5}
bin=${ZHANGBAN_BIN:-}
port=${PORT:-18473}
poll=${POLL_S:-0.05}
start_timeout_s=${START_TIMEOUT_S:-120}

while getopts "n:b:p:h" opt; do
	case $opt in
	n) runs=$OPTARG ;;
	b) bin=$OPTARG ;;
	p) port=$OPTARG ;;
	h) sed -n '2,25p' "$0"; exit 0 ;;
	*) exit 2 ;;
	esac
done
[[ $runs =~ ^[1-9][0-9]*$ ]] || { echo "bench-startup: -n wants a positive number" >&2; exit 2; }
command -v curl >/dev/null || { echo "bench-startup: needs curl" >&2; exit 2; }

repo=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d /tmp/zb-bench-XXXXXX)
chmod 755 "$work"
server_pid=""
data=""
elapsed=""

# stop_server sends SIGTERM and waits for the exit; after 30 s it kills.
# zhangban stops its PostgreSQL itself, and the postmaster has a
# parent-death signal, so killing zhangban does not orphan it.
stop_server() {
	[[ -n $server_pid ]] || return 0
	kill -TERM "$server_pid" 2>/dev/null || true
	local waited=0
	while kill -0 "$server_pid" 2>/dev/null; do
		if ((waited >= 600)); then
			echo "bench-startup: server $server_pid ignored SIGTERM for 30 s; killing it" >&2
			kill -KILL "$server_pid" 2>/dev/null || true
		fi
		sleep 0.05
		waited=$((waited + 1))
	done
	wait "$server_pid" 2>/dev/null || true
	server_pid=""
}

# wait_postgres_gone waits until no postmaster runs in the data directory,
# so that removing it never pulls files from under a live server.
wait_postgres_gone() {
	local pidfile=$1/postgres/postmaster.pid i
	for ((i = 0; i < 400; i++)); do
		[[ -e $pidfile ]] || return 0
		sleep 0.05
	done
	echo "bench-startup: PostgreSQL in $1 still running after 20 s" >&2
}

cleanup() {
	local rc=$?
	stop_server
	[[ -n $data ]] && wait_postgres_gone "$data"
	rm -rf "$work"
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

if [[ -z $bin ]]; then
	echo "building zhangban into $work ..." >&2
	(cd "$repo" && go build -o "$work/zhangban" ./cmd/zhangban)
	bin=$work/zhangban
fi
[[ -x $bin ]] || { echo "bench-startup: $bin is not executable" >&2; exit 2; }

port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

now_ns() { date +%s%N; }

# seconds prints the time from $1 to $2 (nanoseconds) in seconds.
seconds() { awk -v d=$(($2 - $1)) 'BEGIN { printf "%.3f", d / 1e9 }'; }

# start_server starts zhangban on $data and sets elapsed to the seconds it
# took to answer /readyz. (Not printed: a $(…) subshell would lose
# server_pid and make the server a grandchild that wait cannot reap.)
start_server() {
	local log=$1 t0 t1 deadline
	if port_in_use "$port"; then
		echo "bench-startup: port $port is in use; pick another with -p" >&2
		return 1
	fi
	t0=$(now_ns)
	ZHANGBAN_ADDR=127.0.0.1:$port ZHANGBAN_DATA_DIR=$data ZHANGBAN_LOG_LEVEL=warn \
		ZHANGBAN_BOOTSTRAP_ADMIN=admin:bench-admin-password \
		"$bin" serve >>"$log" 2>&1 &
	server_pid=$!
	deadline=$((t0 + start_timeout_s * 1000000000))
	until curl -fsS -o /dev/null --max-time 2 "http://127.0.0.1:$port/readyz" 2>/dev/null; do
		if ! kill -0 "$server_pid" 2>/dev/null; then
			echo "bench-startup: server exited before it was ready; log tail:" >&2
			tail -n 20 "$log" >&2
			server_pid=""
			return 1
		fi
		if (($(now_ns) > deadline)); then
			echo "bench-startup: not ready after ${start_timeout_s}s; log tail:" >&2
			tail -n 20 "$log" >&2
			return 1
		fi
		sleep "$poll"
	done
	t1=$(now_ns)
	elapsed=$(seconds "$t0" "$t1")
}

# timed_stop stops the server and sets elapsed to the seconds it took.
timed_stop() {
	local t0 t1
	t0=$(now_ns)
	stop_server
	t1=$(now_ns)
	elapsed=$(seconds "$t0" "$t1")
}

median() { sort -g | awk '{ v[NR] = $1 } END { if (NR % 2) printf "%.3f", v[(NR + 1) / 2]; else printf "%.3f", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

echo "zhangban startup: $runs rounds, binary $bin, port $port, $(nproc) CPUs, $(date -u +%Y-%m-%dT%H:%M:%SZ)"
printf "%-5s %14s %10s %16s %10s\n" run cold_ready_s stop_s warm_ready_s stop_s
cold=() warm=() stops=()
for ((i = 1; i <= runs; i++)); do
	data=$(mktemp -d "$work/data-XXXXXX")
	chmod 755 "$data"
	log=$work/server-$i.log
	start_server "$log"
	c=$elapsed
	timed_stop
	s1=$elapsed
	start_server "$log"
	w=$elapsed
	timed_stop
	s2=$elapsed
	wait_postgres_gone "$data"
	rm -rf "$data"
	data=""
	if grep -q '"level":"ERROR"' "$log"; then
		echo "bench-startup: the server logged errors in round $i:" >&2
		grep '"level":"ERROR"' "$log" >&2
	fi
	printf "%-5s %14s %10s %16s %10s\n" "$i" "$c" "$s1" "$w" "$s2"
	cold+=("$c") warm+=("$w") stops+=("$s1" "$s2")
done
printf "%-5s %14s %10s %16s\n" median \
	"$(printf '%s\n' "${cold[@]}" | median)" \
	"$(printf '%s\n' "${stops[@]}" | median)" \
	"$(printf '%s\n' "${warm[@]}" | median)"
echo "goals: cold start to /readyz <= 15 s, warm restart to /readyz <= 2 s"
