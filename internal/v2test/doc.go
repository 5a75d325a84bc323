// Package v2test runs gwrap's cgroup v2 cases on a real cgroup v2 kernel: a small guest booted by
// scripts/v2vm.sh (Debian's kernel under qemu), since the machines the suite runs on are cgroup
// v1. The host test builds this package's guest cases (build tag v2guest) and the gwrap binary,
// boots the guest once, runs the cases there and reports each one's result and measurements.
// The guest's emulated CPU takes both cores for a few minutes: scripts/test.sh runs this package
// alone, after the others; by hand, run it under the lock the CPU-judging tests share:
//
//	flock /tmp/gwrap-live.lock go test -count=1 -v ./internal/v2test
package v2test
