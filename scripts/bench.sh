#!/usr/bin/env bash
# gwrap's figures, reproducibly: Go benchmarks of the hot paths, relay throughput against cat on
# the same input, and gwrap's idle CPU and RSS while Gunicorn runs idle workers.
#   scripts/bench.sh            all of it (about 3 minutes)
#   IDLE_SECONDS=10 scripts/bench.sh   a shorter idle measurement
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh
out=$(mktemp -d /tmp/gwrap-bench.XXXXXX)
go build -o "$out/gwrap" ./cmd/gwrap
ticks=$(getconf CLK_TCK)

echo "== Go benchmarks"
go test -run '^$' -bench . -benchmem -count 1 ./gunicorn ./probes ./memwatch ./supervisor ./postmortem 2>&1 |
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

idle() { # idle WORKERS SECONDS
	local workers=$1 secs=$2 port pid kids
	port=$((20000 + RANDOM % 20000))
	"$out/gwrap" --report-dir "$out/r" -- /usr/bin/gunicorn --chdir demo app:app --workers "$workers" \
		--bind "127.0.0.1:$port" >"$out/idle.log" 2>&1 &
	pid=$!
	sleep 5
	read -r u1 s1 < <(awk '{print $14, $15}' "/proc/$pid/stat")
	sleep "$secs"
	read -r u2 s2 < <(awk '{print $14, $15}' "/proc/$pid/stat")
	rss=$(awk '/VmRSS/ {print $2}' "/proc/$pid/status")
	hwm=$(awk '/VmHWM/ {print $2}' "/proc/$pid/status")
	kids=$(grep -c '"worker.boot"' "$out/idle.log" || true)
	kill -TERM "$pid"
	wait "$pid" || true
	/usr/bin/python3 -c "
cpu = ($u2 + $s2 - $u1 - $s1) / $ticks / $secs * 100
print(f'gwrap idle, {$workers} workers ({$kids} seen), {$secs} s at 1 Hz: CPU {cpu:.3f} % of one core, RSS {$rss/1024:.1f} MiB (peak {$hwm/1024:.1f} MiB)')"
}
echo "== gwrap idle with Gunicorn running idle workers"
idle 4 "${IDLE_SECONDS:-60}"
idle 8 "${IDLE_SECONDS:-60}"
rm -rf "$out"
