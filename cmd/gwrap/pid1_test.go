package main

import (
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gwrap/gwrap/internal/testkit"
)

// startAsPID1 runs gwrap as PID 1 of a new PID namespace and returns the process and gwrap's pid
// as seen from here.
func startAsPID1(t *testing.T, args ...string) (*proc, int) {
	t.Helper()
	testkit.RequireRoot(t)
	unshare, err := exec.LookPath("unshare")
	if err != nil {
		testkit.Unavailable(t, "unshare not installed")
	}
	p := startCmd(t, exec.Command(unshare, append([]string{"--pid", "--fork", "--mount-proc", gwrapBin}, args...)...), nil)
	start := p.stdout.waitEvent(t, 10*time.Second, "gwrap.start", isEvent("gwrap.start"))
	if start["gwrap_pid"] != float64(1) {
		t.Fatalf("gwrap is not PID 1 in its namespace: %v", start)
	}
	var pid int
	deadline := time.Now().Add(5 * time.Second)
	for pid == 0 && time.Now().Before(deadline) {
		kids := children(p.cmd.Process.Pid)
		if len(kids) == 1 {
			pid = kids[0]
		}
	}
	if pid == 0 {
		t.Fatal("cannot find gwrap under unshare")
	}
	return p, pid
}

// children lists a process's children from /proc/<pid>/task/*/children.
func children(pid int) []int {
	var out []int
	tasks, _ := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	for _, task := range tasks {
		b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/children", pid, task.Name()))
		for _, f := range strings.Fields(string(b)) {
			if n, err := strconv.Atoi(f); err == nil {
				out = append(out, n)
			}
		}
	}
	return out
}

// state is the one-letter state of a process (stat field 3), "" when it is gone.
func state(pid int) string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return ""
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 || i+2 >= len(s) {
		return ""
	}
	return s[i+2 : i+3]
}

// TestPID1ReapsOrphansAndHandlesTERM: as PID 1, gwrap adopts orphaned grandchildren and reaps
// them (no zombie left), and a SIGTERM sent from outside the namespace is handled (a Go PID 1 that
// does not handle it would ignore it) and forwarded: the child dies of it, gwrap exits 143.
func TestPID1ReapsOrphansAndHandlesTERM(t *testing.T) {
	script := `for i in 1 2 3 4 5; do (sleep 0.2 &); done; sleep 1; echo orphans-done; exec sleep 100`
	p, gwrapPID := startAsPID1(t, "--report-dir", t.TempDir(), "--", "/bin/sh", "-c", script)
	p.stdout.waitEvent(t, 10*time.Second, "the child's line", func(m map[string]any) bool { return m["line"] == "orphans-done" })
	// The orphans exited 0.8 s ago; only the main child may remain, and nothing may be a zombie.
	deadline := time.Now().Add(3 * time.Second)
	for {
		kids := children(gwrapPID)
		zombies := 0
		for _, k := range kids {
			if state(k) == "Z" {
				zombies++
			}
		}
		if len(kids) == 1 && zombies == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("gwrap (PID 1) still has %d children, %d zombies: %v", len(kids), zombies, kids)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err := syscall.Kill(gwrapPID, syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code := p.wait(t, 15*time.Second); code != 128+int(syscall.SIGTERM) {
		t.Fatalf("exit %d, want 143 (the child died of the forwarded TERM); stderr %s", code, p.stderr)
	}
	if last := lastEvent(t, p); last["event"] != "gwrap.exit" || last["exit_code"] != float64(143) {
		t.Errorf("last line %v", last)
	}
}

// TestPID1Gunicorn: Debian's gunicorn under gwrap as PID 1 stops gracefully on TERM, exit 0.
func TestPID1Gunicorn(t *testing.T) {
	gunicorn := testkit.Gunicorn(t)
	dir := writeApp(t, testApp)
	port := freePort(t)
	p, gwrapPID := startAsPID1(t, "--report-dir", t.TempDir(), "--", gunicorn, "--chdir", dir, "app:app",
		"--workers", "2", "--bind", fmt.Sprintf("127.0.0.1:%d", port))
	waitHTTP(t, fmt.Sprintf("http://127.0.0.1:%d/", port), 15*time.Second)
	if err := syscall.Kill(gwrapPID, syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code := p.wait(t, 20*time.Second); code != 0 {
		t.Fatalf("exit %d after TERM, want 0", code)
	}
}

// TestStopBudgetKillsAChildIgnoringTERM: the child ignores TERM; when the budget runs out gwrap
// SIGKILLs its process group and exits 137, on time.
func TestStopBudgetKillsAChildIgnoringTERM(t *testing.T) {
	p := startGwrap(t, nil, "--report-dir", t.TempDir(), "--stop-budget", "1s", "--",
		"/bin/sh", "-c", `trap "" TERM; echo ready; while :; do sleep 0.1; done`)
	p.stdout.waitEvent(t, 10*time.Second, "ready", func(m map[string]any) bool { return m["line"] == "ready" })
	start := time.Now()
	p.signal(t, syscall.SIGTERM)
	code := p.wait(t, 10*time.Second)
	if code != 137 {
		t.Fatalf("exit %d, want 137", code)
	}
	if took := time.Since(start); took < time.Second || took > 5*time.Second {
		t.Errorf("stopped after %v with a 1s budget", took)
	}
}
