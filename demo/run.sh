#!/usr/bin/env bash
# gwrap's main job on a demo app: installs Debian's gunicorn and Flask (scripts/deps.sh, as root),
# builds gwrap, runs the demo app under it with a 5 s timeout, sends one request that waits past
# the timeout, prints the post-mortem gwrap writes, and stops Gunicorn with SIGTERM.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh
mkdir -p bin
go build -o bin/gwrap ./cmd/gwrap

port=${PORT:-8000}
reports=$(mktemp -d /tmp/gwrap-demo-reports.XXXXXX)
log=$(mktemp /tmp/gwrap-demo-log.XXXXXX)
echo "== gwrap -- gunicorn --chdir demo app:app --timeout 5 -w 2 (JSON log in $log)"
bin/gwrap --report-dir "$reports" -- /usr/bin/gunicorn --chdir demo app:app --timeout 5 --workers 2 \
	--bind "127.0.0.1:$port" --access-logfile - >"$log" 2>&1 &
gwrap_pid=$!
trap 'kill -TERM "$gwrap_pid" 2>/dev/null || true' EXIT

get() { /usr/bin/python3 -c 'import sys, urllib.request
try: print(urllib.request.urlopen(sys.argv[1], timeout=30).read().decode().strip())
except Exception as e: print("request failed:", e)' "$1"; }

for _ in $(seq 50); do grep -q '"worker.boot"' "$log" && break; sleep 0.2; done
get "http://127.0.0.1:$port/"
echo "== a request that waits 30 s on a 5 s timeout"
get "http://127.0.0.1:$port/sleep?s=30"
for _ in $(seq 100); do grep -q '"event":"postmortem"' "$log" && break; sleep 0.2; done
echo "== gwrap's events so far (Gunicorn's own lines are relayed as gunicorn.log)"
grep -v '"gunicorn.log"' "$log" || true
echo "== the post-mortem"
bin/gwrap report latest --report-dir "$reports"
kill -TERM "$gwrap_pid"
wait "$gwrap_pid" && echo "== gwrap exited 0 after SIGTERM; reports in $reports"
trap - EXIT
