//go:build !v2guest

package v2test

import (
	"bytes"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/gwrap/gwrap/internal/testkit"
)

// resultLine is a top-level test's result in `-test.v` output.
var resultLine = regexp.MustCompile(`^--- (PASS|FAIL|SKIP): (Test\w+) \(([0-9.]+s)\)`)

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
	cmd := exec.Command(script, guestCmd)
	cmd.Env = append(os.Environ(), "V2VM_XCHG="+xchg, "V2VM_TIMEOUT=1500")
	var console bytes.Buffer
	cmd.Stdout, cmd.Stderr = &console, &console
	start := time.Now()
	runErr := cmd.Run()
	elapsed := time.Since(start)
	logb, _ := os.ReadFile(filepath.Join(xchg, "guest.log"))
	guestLog := string(logb)
	boot := regexp.MustCompile(`v2vm: ready ([0-9.]+s) after boot`).FindStringSubmatch(console.String())
	if boot == nil {
		t.Fatalf("the guest did not get ready (%v); console:\n%s", runErr, console.String())
	}
	t.Logf("guest ready %s after power-on; the whole guest run took %v", boot[1], elapsed.Round(100*time.Millisecond))

	results := map[string][]string{} // case → result, duration
	for _, line := range strings.Split(guestLog, "\n") {
		if m := resultLine.FindStringSubmatch(line); m != nil {
			results[m[2]] = m[1:]
		}
		if _, rest, ok := strings.Cut(line, "MEASURE "); ok {
			t.Logf("measured: %s", rest)
		}
	}
	failed := runErr != nil
	for _, name := range cases {
		t.Run(name, func(t *testing.T) {
			r, ok := results[name]
			switch {
			case !ok:
				failed = true
				t.Errorf("did not finish in the guest")
			case r[0] != "PASS":
				failed = true
				t.Errorf("%s in the guest after %s", r[0], r[2])
			default:
				t.Logf("passed in the guest in %s", r[2])
			}
		})
	}
	if extra := slices.DeleteFunc(slices.Collect(maps.Keys(results)), func(k string) bool { return slices.Contains(cases, k) }); len(extra) > 0 {
		t.Errorf("the guest ran cases not listed here: %v", extra)
	}
	if failed {
		t.Errorf("guest run: %v; guest log:\n%s\nconsole:\n%s", runErr, guestLog, console.String())
	}
}
