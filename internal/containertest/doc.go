// Package containertest runs gwrap the way its users do: as the ENTRYPOINT of a container image,
// started by a real container engine (Debian's podman, as root) with a memory limit, stopped,
// killed, restarted, read-only, as a non-root user, without capabilities. Its cases drive podman
// from outside the container and judge gwrap's JSON log, its report files and the termination
// message, never gwrap's insides.
//
// The image is built by scripts/container.sh (a base from Debian's packages, the Dockerfile's
// gwrap-build stage, gwrap added as README tells users). The same cases run on this machine's
// cgroup (v1 here, with runc) and, those that apply, on cgroup v2 in the guest of
// scripts/v2vm.sh with crun (TestContainerCgroupV2, which runs this package's test binary there,
// built with the tag v2guest). Both take the CPU for minutes: scripts/test.sh runs this package
// alone; by hand, run it under the lock the CPU-judging tests share:
//
//	flock /tmp/gwrap-live.lock go test -count=1 -v -run 'TestContainer$' ./internal/containertest
package containertest
