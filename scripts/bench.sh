#!/usr/bin/env bash
# gwrap's figures, reproducibly: Go benchmarks of the hot paths, relay throughput against cat on
# the same input, and the idle CPU and RSS of gwrap, of gwrap serving /metrics (scraped every
# 15 s, with the scrape latency), of tini and of supervisord, each in front of the same Gunicorn,
# next to the floor: a Go program that only reads the files gwrap's sweep reads.
# And what recording each worker's requests costs: the recorder's own cost per request (a Python
# microbenchmark of the hook), and a hello-world app's requests per second under wrk, sync and
# gthread, gwrap with and without --record-requests, side by side in alternating rounds.
#   scripts/bench.sh                   all of it (about 11 minutes)
#   BENCH=idle scripts/bench.sh        only the side-by-side idle figures
#   BENCH=requests scripts/bench.sh    only the request-recording figures
#   IDLE_SECONDS=30 scripts/bench.sh   shorter idle measurements
#   ROUNDS=7 WRK_SECONDS=8             rounds of the request figures, and seconds of each wrk run
#   CLASSES=gthread                    only these worker classes (sync gthread)
#   GWRAP=/path/to/gwrap               measure that binary instead of building this tree
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh
out=$(mktemp -d /tmp/gwrap-bench.XXXXXX)
# Built as the Dockerfile builds it (static, no cgo: libc alone would add 1.4 MiB of RSS).
if [ -n "${GWRAP:-}" ]; then cp "$GWRAP" "$out/gwrap"; else CGO_ENABLED=0 go build -trimpath -ldflags="-s -w" -o "$out/gwrap" ./cmd/gwrap; fi
CGO_ENABLED=0 go build -trimpath -o "$out/procfloor" ./scripts/procfloor
ticks=$(getconf CLK_TCK)

if [ "${BENCH:-all}" = all ]; then

echo "== Go benchmarks"
go test -run '^$' -bench . -benchmem -count 1 ./gunicorn ./probes ./memwatch ./supervisor ./postmortem ./metrics ./inflight 2>&1 |
	grep -E '^(Benchmark|ok|FAIL|goos|cpu)' || true

echo "== relay throughput: 1,000,000 Gunicorn-like lines"
/usr/bin/python3 - "$out/lines.txt" <<'PY'
import sys
with open(sys.argv[1], "w") as f:
    for i in range(1_000_000):
        f.write(f"[2026-11-25 03:42:30 +0000] [{3600 + i % 8}] [INFO] GET /items/{i} 200 handled in {i % 97} ms\n")
PY
lines=1000000
rate() { # rate SECONDS -> lines per second
	/usr/bin/python3 -c "import sys; print(f'{$lines / float(sys.argv[1]):,.0f} lines/s ({float(sys.argv[1]):.2f} s)')" "$1"
}
timeit() { # timeit CMD... -> seconds
	local s e
	s=$(date +%s.%N)
	"$@" >/dev/null
	e=$(date +%s.%N)
	/usr/bin/python3 -c "print($e - $s)"
}
echo "cat:                 $(rate "$(timeit cat "$out/lines.txt")")"
echo "gwrap (JSON):        $(rate "$(timeit "$out/gwrap" --report-dir "$out/r" -- cat "$out/lines.txt")")"
echo "gwrap (text):        $(rate "$(timeit "$out/gwrap" --report-dir "$out/r" --log-format text -- cat "$out/lines.txt")")"
fi

if [ "${BENCH:-all}" = all ] || [ "${BENCH:-all}" = requests ]; then

echo "== recording a request: the hook's cost per request (Python microbenchmark, best of 7 runs)"
shm=$(mktemp -d /dev/shm/gwrap-bench.XXXXXX)
/usr/bin/python3 scripts/bench/reqcost.py pystack/sitecustomize.py "$shm"
rm -rf "$shm"

# reqrate NAME WORKERARGS GWRAPARGS: one Gunicorn worker (pinned to CPU 1 with gwrap) serving the
# hello-world app under gwrap, loaded by wrk on CPU 0 for $WRK_SECONDS; prints the requests per
# second and the worker's CPU time per request (µs, from /proc: less noisy than the rate on a
# shared machine).
reqrate() {
	local name=$1 wargs=$2 gargs=$3 port pid deadline master worker rps reqs t1 t2
	port=$(/usr/bin/python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
	# shellcheck disable=SC2086 # word splitting of the argument lists is intended
	taskset -c 1 "$out/gwrap" --report-dir "$out/r" $gargs -- /usr/bin/gunicorn --chdir "$PWD/scripts/bench" hello:app \
		--workers 1 $wargs --bind "127.0.0.1:$port" >"$out/req.log" 2>&1 &
	pid=$!
	deadline=$((SECONDS + 30))
	until curl -s -o /dev/null "http://127.0.0.1:$port/" || [ $SECONDS -gt $deadline ]; do sleep 0.2; done
	master=$(pgrep -P "$pid" | head -1 || true)
	worker=$(pgrep -P "${master:-0}" | head -1 || true) # gwrap → master → the worker
	if [ -z "$worker" ]; then
		echo "reqrate $name: no worker answered within 30 s; gwrap's output:" >&2
		cat "$out/req.log" >&2
		kill -TERM "$pid" 2>/dev/null || true
		wait "$pid" || true
		return 1
	fi
	t1=$(awk '{print $14 + $15}' "/proc/$worker/stat")
	taskset -c 0 wrk -t1 -c4 -d"${WRK_SECONDS:-8}s" "http://127.0.0.1:$port/" >"$out/wrk.txt"
	t2=$(awk '{print $14 + $15}' "/proc/$worker/stat")
	rps=$(awk '/Requests\/sec/ {print $2}' "$out/wrk.txt")
	reqs=$(awk '/requests in/ {print $1}' "$out/wrk.txt")
	kill -TERM "$pid"
	wait "$pid" || true
	echo "$name $rps $(((t2 - t1) * 1000000 / ticks / reqs))"
}

echo "== a hello-world app's requests per second under wrk, with and without recording: ${ROUNDS:-7} alternating rounds"
for class in ${CLASSES:-sync gthread}; do
	wargs="-k sync"
	[ "$class" = gthread ] && wargs="-k gthread --threads 4"
	: >"$out/rates.txt"
	for _ in $(seq "${ROUNDS:-7}"); do
		reqrate off "$wargs" "--record-requests=false" >>"$out/rates.txt"
		reqrate on "$wargs" "" >>"$out/rates.txt"
	done
	/usr/bin/python3 - "$class" "$out/rates.txt" <<'PY'
import statistics, sys
rows = [l.split() for l in open(sys.argv[2]) if l.strip()]
def col(name, i):
    return [float(r[i]) for r in rows if r[0] == name]
off, on = statistics.median(col("off", 1)), statistics.median(col("on", 1))
coff, con = statistics.median(col("off", 2)), statistics.median(col("on", 2))
print(f"{sys.argv[1]:<8} without recording {off:,.0f} req/s, with {on:,.0f} req/s: {on / off * 100:.1f} % "
      f"(rounds: {', '.join(f'{a:.0f}/{b:.0f}' for a, b in zip(col('off', 1), col('on', 1)))}); "
      f"worker CPU {coff:.0f} → {con:.0f} µs a request (rates from /proc ticks, 10 ms resolution)")
PY
done
fi

# cpu_ms PID SECONDS -> CPU milliseconds PID used over SECONDS: perf's task-clock when perf works
# (exact), else /proc ticks (10 ms resolution: too coarse for 0.05 % over a minute).
cpu_ms() {
	local pid=$1 secs=$2 u1 s1 u2 s2
	if command -v perf >/dev/null && perf stat -e task-clock -x, -p "$pid" -o "$out/perf.txt" -- sleep "$secs" 2>/dev/null; then
		awk -F, '/task-clock/ {print $1; exit}' "$out/perf.txt"
		return
	fi
	read -r u1 s1 < <(awk '{print $14, $15}' "/proc/$pid/stat")
	sleep "$secs"
	read -r u2 s2 < <(awk '{print $14, $15}' "/proc/$pid/stat")
	echo $(((u2 + s2 - u1 - s1) * 1000 / ticks))
}

# idle NAME SECONDS CMD... : run CMD (a process manager in front of Gunicorn's 8 idle sync workers
# on $port), then print the manager's own CPU as a share of one core and its RSS. With
# METRICS_PORT set, /metrics is scraped every 15 s meanwhile and the scrape latency printed.
idle() {
	local name=$1 secs=$2 pid cpu rss lat="" scraper="" deadline
	shift 2
	"$@" >"$out/idle.log" 2>&1 &
	pid=$!
	deadline=$((SECONDS + 20))
	until [ "$(pgrep -c -f "gunicorn.*127.0.0.1:$port" || true)" -ge 9 ] || [ $SECONDS -gt $deadline ]; do sleep 0.2; done
	sleep 3
	if [ -n "${METRICS_PORT:-}" ]; then
		(for _ in $(seq $((secs / 15))); do
			# As Prometheus does: it asks for gzip.
			curl -s -H 'Accept-Encoding: gzip' -o /dev/null -w '%{time_total}\n' "http://127.0.0.1:$METRICS_PORT/metrics" || echo fail
			sleep 15
		done) >"$out/scrapes.txt" &
		scraper=$!
	fi
	cpu=$(cpu_ms "$pid" "$secs")
	rss=$(awk '/VmRSS/ {print $2}' "/proc/$pid/status")
	if [ -n "$scraper" ]; then
		wait "$scraper" || true
		lat=$(/usr/bin/python3 -c "
import sys
v = [float(x) for x in open(sys.argv[1]) if x.strip() not in ('', 'fail')]
print(f', scraped every 15 s: {len(v)} ok, median {sorted(v)[len(v)//2]*1000:.1f} ms, max {max(v)*1000:.1f} ms' if v else ', /metrics not served')" "$out/scrapes.txt")
	fi
	kill -TERM "$pid"
	wait "$pid" || true
	/usr/bin/python3 -c "print(f'{\"$name\":<26} CPU {$cpu / 10 / $secs:.3f} % of one core, RSS {$rss / 1024:.1f} MiB$lat')"
}

if [ "${BENCH:-all}" = requests ]; then
	rm -rf "$out"
	exit 0
fi

# The same Gunicorn under each process manager, one after the other in one run; first the floor:
# a Go program that reads what gwrap's sweep reads once a second and does nothing else.
secs=${IDLE_SECONDS:-60}
gun=(/usr/bin/gunicorn --chdir "$PWD/demo" app:app --workers 8 --bind)
echo "== idle side by side: Debian's gunicorn, 8 idle sync workers, $secs s each"
port=$((20000 + RANDOM % 20000))
idle "floor: the reads alone" "$secs" "$out/procfloor" "${gun[@]}" "127.0.0.1:$port"
port=$((20000 + RANDOM % 20000))
idle "gwrap" "$secs" "$out/gwrap" --report-dir "$out/r" -- "${gun[@]}" "127.0.0.1:$port"
port=$((20000 + RANDOM % 20000))
METRICS_PORT=$((port + 1)) idle "gwrap --metrics-addr" "$secs" \
	"$out/gwrap" --report-dir "$out/r" --metrics-addr "127.0.0.1:$((port + 1))" -- "${gun[@]}" "127.0.0.1:$port"
if [ -x /usr/bin/tini ]; then
	port=$((20000 + RANDOM % 20000))
	idle "tini $(tini --version | awk '{print $3}')" "$secs" /usr/bin/tini -s -- "${gun[@]}" "127.0.0.1:$port"
fi
if [ -x /usr/bin/supervisord ]; then
	port=$((20000 + RANDOM % 20000))
	printf '[supervisord]\nnodaemon=true\nlogfile=%s\npidfile=%s\n[program:gunicorn]\ncommand=%s 127.0.0.1:%s\n' \
		"$out/supervisord.log" "$out/supervisord.pid" "${gun[*]}" "$port" >"$out/supervisord.conf"
	idle "supervisord $(supervisord --version)" "$secs" /usr/bin/supervisord -c "$out/supervisord.conf"
fi
rm -rf "$out"
