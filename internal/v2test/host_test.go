//go:build !v2guest

package v2test

import (
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/gwrap/gwrap/internal/testkit"
)

// TestCgroupV2InGuest builds the guest cases (tag v2guest) and gwrap, boots the cgroup v2 guest
// once with scripts/v2vm.sh, runs them there and reports each case as a subtest with what it
// measured. It needs root and Linux/amd64 (qemu, apt for the guest's packages); elsewhere it skips,
// and under GWRAP_STRICT=1 that is a failure.
func TestCgroupV2InGuest(t *testing.T) {
	if runtime.GOOS != "linux" || runtime.GOARCH != "amd64" {
		testkit.Unavailable(t, "the cgroup v2 guest runs on linux/amd64, not %s/%s", runtime.GOOS, runtime.GOARCH)
	}
	testkit.RequireRoot(t)
	script, err := filepath.Abs(filepath.Join("..", "..", "scripts", "v2vm.sh"))
	if err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(script, "--build").CombinedOutput(); err != nil {
		testkit.Unavailable(t, "cannot build the cgroup v2 guest: %v\n%s", err, out)
	}

	xchg := t.TempDir()
	guestBin, gwrapBin := filepath.Join(xchg, "v2guest.test"), filepath.Join(xchg, "gwrap")
	for _, args := range [][]string{
		{"test", "-c", "-tags", "v2guest", "-o", guestBin, "."},
		{"build", "-o", gwrapBin, "../../cmd/gwrap"},
	} {
		if out, err := exec.Command("go", args...).CombinedOutput(); err != nil {
			t.Fatalf("go %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	list, err := exec.Command(guestBin, "-test.list", ".").Output()
	if err != nil {
		t.Fatalf("listing the guest cases: %v", err)
	}
	cases := strings.Fields(string(list))
	if len(cases) == 0 {
		t.Fatal("no guest cases")
	}

	// In the guest the exchange directory is /tmp/xchg; the guest's own /tmp is a fresh tmpfs.
	guestCmd := "cd /tmp && GWRAP_BIN=/tmp/xchg/gwrap /tmp/xchg/v2guest.test -test.v -test.count=1 -test.timeout=20m >/tmp/xchg/guest.log 2>&1"
	testkit.BootGuest(t, script, xchg, guestCmd, "guest.log", "V2VM_TIMEOUT=1500").Report(t, cases)
}
