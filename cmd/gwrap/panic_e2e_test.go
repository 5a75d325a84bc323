package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/gwrap/gwrap/internal/testkit"
)

var faultBin struct {
	once sync.Once
	path string
	err  error
}

// faultGwrap is gwrap built with -tags gwrap_faults (fault_on.go): GWRAP_TEST_PANIC=PART makes
// that monitoring part panic once. The shipped gwrap has no such switch.
func faultGwrap(t *testing.T) string {
	t.Helper()
	faultBin.once.Do(func() {
		faultBin.path = filepath.Join(filepath.Dir(gwrapBin), "gwrap-faults")
		out, err := exec.Command("go", "build", "-race", "-tags", "gwrap_faults", "-o", faultBin.path, ".").CombinedOutput()
		if err != nil {
			faultBin.err = fmt.Errorf("go build -tags gwrap_faults: %v\n%s", err, out)
		}
	})
	if faultBin.err != nil {
		t.Fatal(faultBin.err)
	}
	return faultBin.path
}

// TestPanicInEveryPartKeepsTheAppRunning: a panic in any monitoring part (the worker watcher,
// the engine, the report store, the flight record, Python stacks, the OOM watcher, memory
// notifications, the cgroup sampler, /metrics) is said once — a config.warning with code panic, the part, the panic's
// message and where it was raised — and gwrap runs on: Gunicorn keeps answering, its lines are
// still relayed, and TERM still stops it gracefully, gwrap exiting with Gunicorn's code 0.
// Before, such a panic ended gwrap (exit 2) and, gwrap being PID 1, the container and the app.
func TestPanicInEveryPartKeepsTheAppRunning(t *testing.T) {
	bin := faultGwrap(t)
	gunicorn := testkit.Gunicorn(t)
	app := writeApp(t, testApp)
	for _, p := range []part{partWatcher, partEngine, partStore, partFlight, partStacks, partOOM, partNotify, partCgroup, partMetrics} {
		t.Run(string(p), func(t *testing.T) {
			port, mport := freePort(t), freePort(t)
			url := fmt.Sprintf("http://127.0.0.1:%d", port)
			reports := t.TempDir()
			run := startCmd(t, exec.Command(bin, "--report-dir", reports, "--metrics-addr", fmt.Sprintf("127.0.0.1:%d", mport), "--",
				gunicorn, "--chdir", app, "app:app", "--workers", "1", "--timeout", "30", "--graceful-timeout", "2",
				"--bind", fmt.Sprintf("127.0.0.1:%d", port)), []string{"GWRAP_TEST_PANIC=" + string(p), "GWRAP_TERMINATION_LOG=off"})
			t.Cleanup(func() {
				if t.Failed() {
					t.Logf("gwrap's output:\n%s", strings.Join(run.stdout.snapshot(), "\n"))
				}
			})
			waitHTTP(t, url+"/", 20*time.Second)
			if p == partMetrics {
				// /metrics reads the workers at scrape time: the first scrape meets the panic.
				if code, body := get(fmt.Sprintf("http://127.0.0.1:%d/metrics", mport), 5*time.Second); code != 200 {
					t.Errorf("the scrape that met the panic: %d %s", code, body)
				}
			}
			w := run.stdout.waitEvent(t, 15*time.Second, "the panic's warning", func(m map[string]any) bool {
				return m["event"] == "config.warning" && m["code"] == "panic"
			})
			where, _ := w["where"].(string)
			if w["part"] != string(p) || w["panic"] != "injected panic in gwrap's "+string(p) || !strings.Contains(where, ".go:") {
				t.Errorf("warning %v", w)
			}
			t.Logf("%s", w["message"])
			for i := 0; i < 3; i++ {
				if code, body := get(url+"/", 5*time.Second); code != 200 {
					t.Fatalf("Gunicorn answered %d %q after the panic", code, body)
				}
			}
			// Gunicorn's lines still reach stdout.
			get(url+"/print?after-the-panic", 5*time.Second)
			run.stdout.waitEvent(t, 10*time.Second, "the app's line after the panic", func(m map[string]any) bool {
				l, _ := m["line"].(string)
				return m["event"] == "gunicorn.log" && strings.HasPrefix(l, "after-the-panic ")
			})
			switch p {
			case partStore:
				// The store goes on: the next post-mortem is written.
				run.stdout.waitEvent(t, 10*time.Second, "the worker's boot", isEvent("worker.boot"))
				get(url+"/kill", 5*time.Second)
				pm := run.stdout.waitEvent(t, 15*time.Second, "a post-mortem", isEvent("postmortem"))
				path, _ := pm["report"].(string)
				waitFile(t, path, 10*time.Second)
			case partMetrics:
				if code, body := get(fmt.Sprintf("http://127.0.0.1:%d/metrics", mport), 5*time.Second); code != 200 || !strings.Contains(body, "gwrap_build_info") {
					t.Errorf("/metrics after the panic: %d %.200s", code, body)
				}
			}
			run.signal(t, syscall.SIGTERM)
			if code := run.wait(t, 20*time.Second); code != 0 {
				t.Errorf("exit code %d, want Gunicorn's 0", code)
			}
			n := 0
			for _, e := range run.stdout.events(t) {
				if e["event"] == "config.warning" && e["code"] == "panic" {
					n++
				}
			}
			if n != 1 {
				t.Errorf("%d panic warnings, want 1", n)
			}
			if evs := run.stdout.events(t); evs[len(evs)-1]["event"] != "gwrap.exit" {
				t.Errorf("the last line is not gwrap.exit: %v", evs[len(evs)-1])
			}
		})
	}
}

// waitFile waits until path exists.
func waitFile(t *testing.T, path string, d time.Duration) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		if _, err := os.Stat(path); err == nil {
			return
		} else if time.Now().After(deadline) {
			t.Fatalf("%s was not written within %v: %v", path, d, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestPanicWhileStoppingStillStops: the termination message written when a stop begins runs on
// the supervisor's goroutine, between the signal and its forward: a panic there is said once and
// the stop goes on (Gunicorn gets the TERM, gwrap exits 0), and the exit still writes its message.
func TestPanicWhileStoppingStillStops(t *testing.T) {
	bin := faultGwrap(t)
	gunicorn := testkit.Gunicorn(t)
	app := writeApp(t, testApp)
	port := freePort(t)
	term := filepath.Join(t.TempDir(), "termination-log")
	if err := os.WriteFile(term, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	run := startCmd(t, exec.Command(bin, "--report-dir", t.TempDir(), "--termination-log", term, "--",
		gunicorn, "--chdir", app, "app:app", "--workers", "1", "--graceful-timeout", "2",
		"--bind", fmt.Sprintf("127.0.0.1:%d", port)), []string{"GWRAP_TEST_PANIC=" + string(partTermlog)})
	waitHTTP(t, fmt.Sprintf("http://127.0.0.1:%d/", port), 20*time.Second)
	run.signal(t, syscall.SIGTERM)
	if code := run.wait(t, 20*time.Second); code != 0 {
		t.Errorf("exit code %d, want Gunicorn's 0", code)
	}
	var warnings []map[string]any
	for _, e := range run.stdout.events(t) {
		if e["event"] == "config.warning" && e["code"] == "panic" {
			warnings = append(warnings, e)
		}
	}
	if len(warnings) != 1 || warnings[0]["part"] != string(partTermlog) {
		t.Errorf("panic warnings %v, want one for %s", warnings, partTermlog)
	}
	if msg, _ := os.ReadFile(term); string(msg) != "gwrap: exited with code 0\n" {
		t.Errorf("the exit's termination message is %q", msg)
	}
}
