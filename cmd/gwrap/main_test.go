package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gwrap/gwrap/internal/testkit"
)

func TestUsageErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		env  []string
		want string
	}{
		{"no command", nil, nil, "no command to run"},
		{"unknown flag", []string{"--frobnicate", "true"}, nil, "frobnicate"},
		{"bad log format", []string{"--log-format", "xml", "true"}, nil, "--log-format"},
		{"bad duration", []string{"--stop-budget", "soon", "true"}, nil, "stop-budget"},
		{"bad env", []string{"true"}, []string{"GWRAP_INTERVAL=fast"}, "GWRAP_INTERVAL"},
		{"threshold out of range", []string{"--near-limit", "1.5", "true"}, nil, "--near-limit"},
		{"explain without file", []string{"explain"}, nil, "explain takes exactly one"},
		{"report without verb", []string{"report"}, nil, "report needs"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cmd := exec.Command(gwrapBin, tc.args...)
			cmd.Env = append(os.Environ(), tc.env...)
			var stdout, stderr strings.Builder
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			err := cmd.Run()
			if code := cmd.ProcessState.ExitCode(); code != 2 {
				t.Fatalf("exit code %d (%v), want 2; stderr:\n%s", code, err, stderr.String())
			}
			if !strings.Contains(stderr.String(), tc.want) {
				t.Errorf("stderr does not say %q:\n%s", tc.want, stderr.String())
			}
			if stdout.Len() != 0 {
				t.Errorf("nothing may start on a usage error, stdout:\n%s", stdout.String())
			}
		})
	}
}

func TestCommandNotFoundAndNotExecutable(t *testing.T) {
	dir := t.TempDir()
	notExec := filepath.Join(dir, "script")
	if err := os.WriteFile(notExec, []byte("#!/bin/sh\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		cmd  string
		code int
	}{{"no-such-command-gwrap-test", 127}, {notExec, 126}} {
		p := startGwrap(t, nil, "--report-dir", t.TempDir(), "--", tc.cmd)
		if code := p.wait(t, 10*time.Second); code != tc.code {
			t.Errorf("%s: exit %d, want %d", tc.cmd, code, tc.code)
		}
		last := lastEvent(t, p)
		if last["event"] != "gwrap.exit" || last["exit_code"] != float64(tc.code) {
			t.Errorf("%s: last line %v, want gwrap.exit with exit_code %d", tc.cmd, last, tc.code)
		}
	}
}

func lastEvent(t *testing.T, p *proc) map[string]any {
	t.Helper()
	evs := p.stdout.events(t)
	if len(evs) == 0 {
		t.Fatal("no output")
	}
	return evs[len(evs)-1]
}

// TestExitCodes runs a shell that exits with each code (and one killed by each common signal):
// gwrap exits the same way, and its last line says why.
func TestExitCodes(t *testing.T) {
	codes := []int{0, 1, 2, 3, 4, 42, 126, 127, 128, 255}
	for _, c := range codes {
		p := startGwrap(t, nil, "--report-dir", t.TempDir(), "--", "/bin/sh", "-c", fmt.Sprintf("exit %d", c))
		if got := p.wait(t, 10*time.Second); got != c {
			t.Errorf("child exit %d: gwrap exit %d", c, got)
		}
	}
	for _, sig := range []syscall.Signal{syscall.SIGKILL, syscall.SIGSEGV, syscall.SIGABRT} {
		p := startGwrap(t, nil, "--report-dir", t.TempDir(), "--", "/bin/sh", "-c", fmt.Sprintf("kill -%d $$", int(sig)))
		if got := p.wait(t, 10*time.Second); got != 128+int(sig) {
			t.Errorf("child killed by %v: gwrap exit %d, want %d", sig, got, 128+int(sig))
		}
		if r, _ := lastEvent(t, p)["reason"].(string); !strings.Contains(r, "SIG") && !strings.Contains(r, "signal") {
			t.Errorf("gwrap.exit reason %q does not name the signal", r)
		}
	}
}

// TestEveryLineIsContractJSON runs a child printing plain, empty and invalid-UTF-8 lines and
// checks every stdout line has the contract's fields, and that the bytes survive.
func TestEveryLineIsContractJSON(t *testing.T) {
	script := `printf 'plain\n\n\377\376 bytes\n[2026-11-25 03:42:30 +0000] [3679] [INFO] Starting gunicorn 22.0.0\n' ; printf 'to stderr\n' >&2`
	p := startGwrap(t, nil, "--report-dir", t.TempDir(), "--", "/bin/sh", "-c", script)
	if code := p.wait(t, 10*time.Second); code != 0 {
		t.Fatalf("exit %d", code)
	}
	var lines []map[string]any
	for _, ev := range p.stdout.events(t) {
		for _, k := range []string{"time", "level", "event", "message"} {
			if _, ok := ev[k]; !ok {
				t.Errorf("line without %q: %v", k, ev)
			}
		}
		if ts, _ := ev["time"].(string); !strings.HasSuffix(ts, "Z") {
			t.Errorf("time %q is not RFC 3339 UTC", ts)
		} else if _, err := time.Parse(time.RFC3339Nano, ts); err != nil {
			t.Errorf("time %q: %v", ts, err)
		}
		if ev["event"] == "gunicorn.log" {
			lines = append(lines, ev)
		}
	}
	if len(lines) != 5 {
		t.Fatalf("relayed %d lines, want 5: %v", len(lines), lines)
	}
	var invalid map[string]any
	for _, l := range lines {
		if strings.HasSuffix(l["line"].(string), " bytes") {
			invalid = l
		}
	}
	if invalid == nil || invalid["line_b64"] != "//4gYnl0ZXM=" {
		t.Errorf("invalid UTF-8 line: %v, want the exact bytes in line_b64", invalid)
	}
	var boot map[string]any
	for _, l := range lines {
		if strings.Contains(l["line"].(string), "Starting gunicorn") {
			boot = l
		}
	}
	if boot == nil || boot["gunicorn_pid"] != float64(3679) || boot["gunicorn_level"] != "INFO" {
		t.Errorf("Gunicorn's line not parsed: %v", boot)
	}
}

// TestGunicornUnderGwrap runs Debian's gunicorn: boot lines are relayed as JSON with their pid
// and level, workers are seen booting, TTIN adds a worker, HUP reloads and it keeps serving, and
// TERM gives Gunicorn's graceful stop and exit 0. No report is written for any of it.
func TestGunicornUnderGwrap(t *testing.T) {
	gunicorn := testkit.Gunicorn(t)
	dir := writeApp(t, testApp)
	port := freePort(t)
	p := startGwrap(t, nil, "--report-dir", t.TempDir(), "--", gunicorn, "--chdir", dir, "app:app",
		"--workers", "2", "--timeout", "30", "--bind", fmt.Sprintf("127.0.0.1:%d", port))
	start := p.stdout.waitEvent(t, 10*time.Second, "gwrap.start", isEvent("gwrap.start"))
	if start["timeout_s"] != float64(30) || start["workers"] != float64(2) {
		t.Errorf("gwrap.start does not carry Gunicorn's settings: %v", start)
	}
	booted := p.stdout.waitEvent(t, 15*time.Second, "a relayed Booting worker line", func(m map[string]any) bool {
		l, _ := m["line"].(string)
		return m["event"] == "gunicorn.log" && strings.Contains(l, "Booting worker") && m["gunicorn_level"] == "INFO"
	})
	if booted["gunicorn_pid"] == nil {
		t.Errorf("no gunicorn_pid on %v", booted)
	}
	p.stdout.waitEvent(t, 15*time.Second, "worker.boot", isEvent("worker.boot"))
	url := fmt.Sprintf("http://127.0.0.1:%d/", port)
	waitHTTP(t, url, 15*time.Second)
	master := children(p.cmd.Process.Pid)[0]

	// TTIN: one more worker.
	p.signal(t, syscall.SIGTTIN)
	deadline := time.Now().Add(10 * time.Second)
	for len(children(master)) != 3 {
		if time.Now().After(deadline) {
			t.Fatalf("after TTIN the master has %d workers, want 3", len(children(master)))
		}
		time.Sleep(50 * time.Millisecond)
	}
	// HUP: Gunicorn reloads (new workers) and keeps serving.
	before := children(master)
	p.signal(t, syscall.SIGHUP)
	p.stdout.waitEvent(t, 10*time.Second, "Gunicorn's Hang up line", func(m map[string]any) bool {
		l, _ := m["line"].(string)
		return strings.Contains(l, "Hang up: Master")
	})
	deadline = time.Now().Add(15 * time.Second)
	for {
		after := children(master)
		replaced := len(after) > 0
		for _, w := range after {
			if containsInt(before, w) {
				replaced = false
			}
		}
		if replaced {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("workers not replaced by HUP: before %v after %v", before, after)
		}
		time.Sleep(50 * time.Millisecond)
	}
	waitHTTP(t, url, 10*time.Second)
	p.signal(t, syscall.SIGTERM)
	if code := p.wait(t, 20*time.Second); code != 0 {
		t.Fatalf("exit %d after TERM, want 0; stderr %s", code, p.stderr)
	}
	p.stdout.waitEvent(t, time.Second, "Gunicorn's Shutting down line", func(m map[string]any) bool {
		l, _ := m["line"].(string)
		return strings.Contains(l, "Shutting down: Master")
	})
	last := lastEvent(t, p)
	if last["event"] != "gwrap.exit" {
		t.Errorf("last line is %v, want gwrap.exit", last)
	}
	if last["incidents"] != float64(0) {
		t.Errorf("TTIN, HUP and TERM are not kills, yet gwrap made %v incidents", last["incidents"])
	}
}

// TestExplainGolden runs `gwrap explain --json` on the real 22.0 log: the binary prints what the
// gunicorn package's golden file holds.
func TestExplainGolden(t *testing.T) {
	out, err := exec.Command(gwrapBin, "explain", "--json", "../../gunicorn/testdata/logs/gunicorn-22.0.0-sync.log").Output()
	if err != nil {
		t.Fatal(err)
	}
	want, err := os.ReadFile("../../gunicorn/testdata/explain/gunicorn-22.0.0-sync.json")
	if err != nil {
		t.Fatal(err)
	}
	if string(out) != string(want) {
		t.Errorf("gwrap explain --json differs from the golden file:\n%s", out)
	}
	// stdin, text.
	cmd := exec.Command(gwrapBin, "explain", "-")
	cmd.Stdin, _ = os.Open("../../gunicorn/testdata/logs/gunicorn-21.2.0-written.log")
	text, err := cmd.Output()
	if err != nil || !strings.Contains(string(text), "NOT an out-of-memory kill") {
		t.Errorf("explain - : %v\n%s", err, text)
	}
}

// TestUSR2FollowsNewMaster: Gunicorn's binary upgrade. USR2 (forwarded) starts a new master as a
// child of the old one; when the old one is stopped, gwrap adopts the new master, keeps serving
// and watching, and still stops cleanly on TERM.
func TestUSR2FollowsNewMaster(t *testing.T) {
	gunicorn := testkit.Gunicorn(t)
	dir := writeApp(t, testApp)
	port := freePort(t)
	url := fmt.Sprintf("http://127.0.0.1:%d/", port)
	p := startGwrap(t, nil, "--report-dir", t.TempDir(), "--", gunicorn, "--chdir", dir, "app:app",
		"--workers", "1", "--bind", fmt.Sprintf("127.0.0.1:%d", port))
	waitHTTP(t, url, 15*time.Second)
	kids := children(p.cmd.Process.Pid)
	if len(kids) != 1 {
		t.Fatalf("gwrap's children: %v", kids)
	}
	old := kids[0]
	p.signal(t, syscall.SIGUSR2)
	// The new master is the old master's child that has workers of its own.
	var newMaster int
	deadline := time.Now().Add(15 * time.Second)
	for newMaster == 0 && time.Now().Before(deadline) {
		for _, k := range children(old) {
			if len(children(k)) > 0 {
				newMaster = k
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	if newMaster == 0 {
		t.Fatal("no new master after USR2")
	}
	if err := syscall.Kill(old, syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	ev := p.stdout.waitEvent(t, 20*time.Second, "gunicorn.new_master", isEvent("gunicorn.new_master"))
	if ev["pid"] != float64(newMaster) {
		t.Errorf("adopted %v, want %d", ev["pid"], newMaster)
	}
	waitHTTP(t, url, 10*time.Second)
	p.stdout.waitEvent(t, 10*time.Second, "a worker of the new master", func(m map[string]any) bool {
		return m["event"] == "worker.boot" && m["pid"] != nil && containsInt(children(newMaster), int(m["pid"].(float64)))
	})
	p.signal(t, syscall.SIGTERM)
	if code := p.wait(t, 20*time.Second); code != 0 {
		t.Fatalf("exit %d after TERM", code)
	}
}

func containsInt(xs []int, x int) bool {
	for _, v := range xs {
		if v == x {
			return true
		}
	}
	return false
}
