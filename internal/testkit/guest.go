package testkit

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// Guest is one boot of the cgroup v2 guest (scripts/v2vm.sh) that ran a test binary, and what
// its `-test.v` log said.
type Guest struct {
	Log, Console string
	Err          error                  // the guest run's (the command's exit status, a timeout)
	Results      map[string]GuestResult // by test name: "TestX", "TestX/case"
	Measures     []string               // the text after "MEASURE " of every line that has it
}

// GuestResult is a test's result in the guest.
type GuestResult struct{ Status, Duration string }

// resultLine is a test's result in `-test.v` output (subtests are indented).
var resultLine = regexp.MustCompile(`^\s*--- (PASS|FAIL|SKIP): (\S+) \(([0-9.]+s)\)`)

// BootGuest boots the guest once with script (scripts/v2vm.sh) and runs cmd there, a shell
// command that writes a test binary's `-test.v` output to /tmp/xchg/<logName>; xchg is the
// exchange directory here (the guest's /tmp/xchg), env are V2VM_* settings. It fails the test
// when the guest never got ready.
func BootGuest(t testing.TB, script, xchg, cmd, logName string, env ...string) *Guest {
	t.Helper()
	c := exec.Command(script, cmd)
	c.Env = append(append(os.Environ(), "V2VM_XCHG="+xchg), env...)
	var console bytes.Buffer
	c.Stdout, c.Stderr = &console, &console
	start := time.Now()
	g := &Guest{Err: c.Run(), Results: map[string]GuestResult{}}
	took := time.Since(start)
	g.Console = console.String()
	b, _ := os.ReadFile(filepath.Join(xchg, logName))
	g.Log = string(b)
	boot := regexp.MustCompile(`v2vm: ready ([0-9.]+s) after boot`).FindStringSubmatch(g.Console)
	if boot == nil {
		t.Fatalf("the guest did not get ready (%v); console:\n%s", g.Err, g.Console)
	}
	t.Logf("guest ready %s after power-on; the whole guest run took %v", boot[1], took.Round(100*time.Millisecond))
	for _, line := range strings.Split(g.Log, "\n") {
		if m := resultLine.FindStringSubmatch(line); m != nil {
			g.Results[m[2]] = GuestResult{Status: m[1], Duration: m[3]}
		}
		if _, rest, ok := strings.Cut(line, "MEASURE "); ok {
			g.Measures = append(g.Measures, rest)
		}
	}
	return g
}

// Report logs the guest's measurements and reports each named test as a subtest of t with its
// result there; it fails when one did not pass, when the guest ran a test that is none of them
// (nor a parent or a subtest of one), or when the guest run failed, and then shows the guest's
// log and console.
func (g *Guest) Report(t *testing.T, names []string) {
	t.Helper()
	for _, m := range g.Measures {
		t.Logf("measured: %s", m)
	}
	failed := g.Err != nil
	for _, name := range names {
		sub := name[strings.LastIndex(name, "/")+1:]
		t.Run(sub, func(t *testing.T) {
			r, ok := g.Results[name]
			switch {
			case !ok:
				failed = true
				t.Errorf("did not finish in the guest")
			case r.Status != "PASS":
				failed = true
				t.Errorf("%s in the guest after %s", r.Status, r.Duration)
			default:
				t.Logf("passed in the guest in %s", r.Duration)
			}
		})
	}
	for ran := range g.Results {
		known := false
		for _, name := range names {
			known = known || ran == name || strings.HasPrefix(name, ran+"/") || strings.HasPrefix(ran, name+"/")
		}
		if !known {
			t.Errorf("the guest ran a test not listed here: %s", ran)
		}
	}
	if failed {
		t.Errorf("guest run: %v; guest log:\n%s\nconsole:\n%s", g.Err, g.Log, g.Console)
	}
}
