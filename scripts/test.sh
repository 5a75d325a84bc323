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

# runtests LOG ARGS...: go test -v ARGS into LOG, its results shown; fails on a failure or a skip.
runtests() {
	local log=$1 status=0
	shift
	go test -count=1 -v "$@" >"$log" 2>&1 || status=$?
	grep -E '^(ok|FAIL|--- FAIL|--- SKIP|panic:|PASS|SKIP)|^\s+\S+_test\.go:[0-9]+:' "$log" || true
	if [ "$status" -ne 0 ]; then
		echo "go test failed (full log: $log)"; exit "$status"
	fi
	if grep -q -- '--- SKIP' "$log"; then
		echo "some tests skipped on this machine; CI must run them all"; exit 1
	fi
}

echo "== go test -race"
log=$(mktemp)
# The cgroup v2 guest and the container engine run alone below: they take both cores.
mapfile -t pkgs < <(go list ./... | grep -v -e '/internal/v2test$' -e '/internal/containertest$')
# The live matrix (cmd/gwrap TestMatrix: three Gunicorn releases × four worker classes) is most
# of the time; hence the long -timeout. One package at a time (-p 1): CPU verdicts are judged on two
# cores, and another package's tests running beside them would skew them.
runtests "$log" -race -p 1 -timeout 40m "${pkgs[@]}"
pass=$(grep -c -- '--- PASS' "$log" || true)

echo "== cgroup v2 cases in a guest kernel (scripts/v2vm.sh)"
v2log=$(mktemp)
v2start=$SECONDS
runtests "$v2log" -timeout 30m ./internal/v2test
echo "cgroup v2 stage: $((SECONDS - v2start)) s"
pass=$((pass + $(grep -c -- '--- PASS' "$v2log" || true)))

echo "== gwrap as a container's ENTRYPOINT: podman with runc on this machine's cgroup (scripts/container.sh)"
ctlog=$(mktemp)
ctstart=$SECONDS
runtests "$ctlog" -timeout 30m -run '^(TestContainer|TestParseOOMKills)$' ./internal/containertest
echo "container stage: $((SECONDS - ctstart)) s"
pass=$((pass + $(grep -c -- '--- PASS' "$ctlog" || true)))

echo "== the container cases on cgroup v2: podman with crun in the guest (one boot)"
ct2log=$(mktemp)
ct2start=$SECONDS
runtests "$ct2log" -timeout 40m -run '^TestContainerCgroupV2$' ./internal/containertest
echo "container cgroup v2 stage: $((SECONDS - ct2start)) s"
pass=$((pass + $(grep -c -- '--- PASS' "$ct2log" || true)))

echo "== fuzz the log parser for 30s, the request files' parser for 15s"
go test -run '^$' -fuzz '^FuzzParseLine$' -fuzztime 30s ./gunicorn
go test -run '^$' -fuzz '^FuzzParse$' -fuzztime 15s ./inflight

echo "$pass passed, 0 failed"
