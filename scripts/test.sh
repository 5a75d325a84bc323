#!/usr/bin/env bash
# Runs every gwrap check and test, as CI does. Run it as root on Debian: it installs what the tests
# need (scripts/deps.sh), and the kernel tests (cgroups, OOM kills, PID namespaces) need root.
# GWRAP_STRICT=1 (the default here) turns every "prerequisite missing" skip into a failure, and
# any skipped test fails the run: on this machine everything must really run.
set -euo pipefail
cd "$(dirname "$0")/.."
export GWRAP_STRICT="${GWRAP_STRICT:-1}"
scripts/deps.sh

echo "== gofmt, go vet, go mod tidy, shellcheck"
unformatted=$(git ls-files -z '*.go' | xargs -0 gofmt -l)
[ -z "$unformatted" ] || { echo "gofmt would change: $unformatted"; exit 1; }
go vet ./...
cp go.mod /tmp/gwrap-go.mod.orig && cp go.sum /tmp/gwrap-go.sum.orig
go mod tidy
if ! cmp -s go.mod /tmp/gwrap-go.mod.orig || ! cmp -s go.sum /tmp/gwrap-go.sum.orig; then
	echo "go mod tidy changed go.mod/go.sum: commit the tidy result"; git --no-pager diff go.mod go.sum; exit 1
fi
shellcheck entrypoint.sh scripts/*.sh demo/*.sh .ci/run

# The live matrix (cmd/gwrap TestMatrix: three Gunicorn releases × four worker classes) alone
# takes about ten minutes of real Gunicorn runs; hence the long -timeout.
echo "== go test -race"
log=$(mktemp)
status=0
go test -race -count=1 -timeout 40m -v ./... >"$log" 2>&1 || status=$?
grep -E '^(ok|FAIL|--- FAIL|--- SKIP|panic:|PASS|SKIP)|^\s+\S+_test\.go:[0-9]+:' "$log" || true
if [ "$status" -ne 0 ]; then
	echo "go test failed (full log: $log)"; exit "$status"
fi
if grep -q -- '--- SKIP' "$log"; then
	echo "some tests skipped on this machine; CI must run them all"; exit 1
fi
pass=$(grep -c -- '--- PASS' "$log" || true)

echo "== fuzz the log parser for 30s"
go test -run '^$' -fuzz '^FuzzParseLine$' -fuzztime 30s ./gunicorn

echo "$pass passed, 0 failed"
