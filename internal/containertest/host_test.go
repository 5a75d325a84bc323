//go:build !v2guest

package containertest

import (
	"bytes"
	"fmt"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/gwrap/gwrap/internal/testkit"
)

// script is scripts/container.sh.
func script(t *testing.T) string {
	t.Helper()
	p, err := filepath.Abs(filepath.Join("..", "..", "scripts", "container.sh"))
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// buildImage runs scripts/container.sh image (the engine set up, the base image from Debian's
// packages, the Dockerfile's gwrap-build stage, the test image) and returns the image's name.
func buildImage(t *testing.T) string {
	t.Helper()
	if runtime.GOOS != "linux" || runtime.GOARCH != "amd64" {
		testkit.Unavailable(t, "the container cases run on linux/amd64 (Debian's podman), not %s/%s", runtime.GOOS, runtime.GOARCH)
	}
	testkit.RequireRoot(t)
	var stdout, stderr bytes.Buffer
	cmd := exec.Command(script(t), "image")
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	start := time.Now()
	if err := cmd.Run(); err != nil {
		testkit.Unavailable(t, "scripts/container.sh image: %v\n%s", err, stderr.String())
	}
	t.Logf("scripts/container.sh image took %v:\n%s", time.Since(start).Round(100*time.Millisecond), stderr.String())
	image := strings.TrimSpace(stdout.String())
	size, err := strconv.ParseFloat(podman(t, "image", "inspect", "--format", "{{.Size}}", image), 64)
	if err != nil {
		t.Fatal(err)
	}
	measure(t, "image_size", "%s: %.1f MiB", image, size/(1<<20))
	return image
}

// TestContainer runs every case on this machine's cgroup, with the engine scripts/container.sh
// configured (runc here).
func TestContainer(t *testing.T) {
	e := &engine{image: buildImage(t), runtime: "runc", cgroup: 1, slow: 1, timeout: 3}
	var fs unix.Statfs_t
	if err := unix.Statfs("/sys/fs/cgroup", &fs); err == nil && fs.Type == unix.CGROUP2_SUPER_MAGIC {
		e.cgroup = 2
	}
	e.check(t)
	for _, c := range cases {
		if c.where&onHost != 0 {
			t.Run(c.name, func(t *testing.T) { c.run(t, e) })
		}
	}
}

// TestContainerCgroupV2 runs the cases that apply to cgroup v2 in the guest of scripts/v2vm.sh
// (Debian's kernel, pure cgroup v2) with crun: the image is built here once and loaded there once
// (podman save, podman load), and this package's test binary (tag v2guest: TestInGuest) runs
// them all in one boot. Each case is reported as a subtest with what it measured.
func TestContainerCgroupV2(t *testing.T) {
	image := buildImage(t)
	v2vm, err := filepath.Abs(filepath.Join("..", "..", "scripts", "v2vm.sh"))
	if err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(v2vm, "--build").CombinedOutput(); err != nil {
		testkit.Unavailable(t, "cannot build the cgroup v2 guest: %v\n%s", err, out)
	}
	xchg := t.TempDir()
	start := time.Now()
	podman(t, "save", "--quiet", "-o", filepath.Join(xchg, "image.tar"), image)
	t.Logf("podman save took %v", time.Since(start).Round(100*time.Millisecond))
	if out, err := exec.Command("go", "test", "-c", "-tags", "v2guest", "-o", filepath.Join(xchg, "containertest.test"), ".").CombinedOutput(); err != nil {
		t.Fatalf("building the guest cases: %v\n%s", err, out)
	}
	var names []string
	for _, c := range cases {
		if c.where&onV2 != 0 {
			names = append(names, "TestInGuest/"+c.name)
		}
	}
	// In the guest: podman's config and storage on its tmpfs, the image loaded, the cases run.
	cmd := fmt.Sprintf(`set -e; eval "$(%s guest-config /tmp/podman)"; t0=$(date +%%s%%N); podman load --quiet -i /tmp/xchg/image.tar >/dev/null; `+
		`echo "MEASURE podman_load $(( ($(date +%%s%%N) - t0) / 1000000 )) ms" >/tmp/xchg/guest.log; `+
		`cd /tmp && GWRAP_TEST_IMAGE=%s /tmp/xchg/containertest.test -test.v -test.count=1 -test.run '^TestInGuest$' -test.timeout=25m >>/tmp/xchg/guest.log 2>&1`,
		script(t), image)
	testkit.BootGuest(t, v2vm, xchg, cmd, "guest.log", "V2VM_MEM=2048", "V2VM_TIMEOUT=1800").Report(t, names)
}
