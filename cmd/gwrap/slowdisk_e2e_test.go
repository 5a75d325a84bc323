package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/gwrap/gwrap/internal/testkit"
)

// eventTime is the time field of one of gwrap's lines.
func eventTime(t *testing.T, m map[string]any) time.Time {
	t.Helper()
	s, _ := m["time"].(string)
	at, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		t.Fatalf("time %q: %v", s, err)
	}
	return at
}

// TestSlowReportDirHoldsNothingUp: with a report dir whose every write takes 10 s (a FUSE file
// system that sleeps: a share that stalls), Gunicorn starts at once, a line the app writes right
// after a worker's death (a line the flight record keeps) is relayed within 100 ms, forwarded
// signals within 100 ms, the post-mortem of that death comes on stdout with the path its report
// will have, and TERM ends gwrap within the stop budget + 1 s, with Gunicorn's exit code and the
// post-mortem that could not be written counted in gwrap.exit (and said before it).
func TestSlowReportDirHoldsNothingUp(t *testing.T) {
	const maxDelay = 100 * time.Millisecond
	const budget = 3 * time.Second
	dir := testkit.SlowDir(t, 10*time.Second)
	gunicorn := testkit.Gunicorn(t)
	app := writeApp(t, testApp)
	port := freePort(t)
	url := fmt.Sprintf("http://127.0.0.1:%d", port)
	// The test build of gwrap has the race detector, whose exit sleeps 1 s (atexit_sleep_ms)
	// before the process ends: not gwrap's time, and not in the binary shipped.
	p := startGwrap(t, []string{"GWRAP_TERMINATION_LOG=off", "GORACE=atexit_sleep_ms=0"}, "--report-dir", dir, "--stop-budget", budget.String(), "--",
		gunicorn, "--chdir", app, "app:app", "--workers", "1", "--timeout", "30", "--graceful-timeout", "2",
		"--bind", fmt.Sprintf("127.0.0.1:%d", port))
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("gwrap's output:\n%s", strings.Join(p.stdout.snapshot(), "\n"))
		}
	})
	started := time.Now()
	waitHTTP(t, url+"/", 15*time.Second)
	t.Logf("Gunicorn answered %v after gwrap started", time.Since(started).Round(time.Millisecond))

	// A worker's death: Gunicorn's line about it is one the flight record keeps, and gwrap
	// reports it (the worker is one it watches).
	p.stdout.waitEvent(t, 10*time.Second, "the worker's boot", isEvent("worker.boot"))
	get(url+"/kill", 5*time.Second)
	p.stdout.waitEvent(t, 10*time.Second, "Gunicorn's line about the killed worker", func(m map[string]any) bool {
		return m["event"] == "gunicorn.log" && m["kind"] == "signaled"
	})
	if code, body := get(url+"/print?slowdisk-probe", 10*time.Second); code != 200 {
		t.Fatalf("GET /print: %d %s", code, body)
	}
	line := p.stdout.waitEvent(t, 15*time.Second, "the app's line", func(m map[string]any) bool {
		l, _ := m["line"].(string)
		return m["event"] == "gunicorn.log" && strings.HasPrefix(l, "slowdisk-probe ")
	})
	l, _ := line["line"].(string)
	secs, err := strconv.ParseFloat(strings.TrimPrefix(l, "slowdisk-probe "), 64)
	if err != nil {
		t.Fatalf("the app's line %q: %v", l, err)
	}
	lineDelay := eventTime(t, line).Sub(time.Unix(0, int64(secs*1e9)))
	t.Logf("line relayed %v after the app wrote it", lineDelay.Round(time.Microsecond))
	if lineDelay > maxDelay {
		t.Errorf("the app's line was relayed %v after it was written, more than %v", lineDelay, maxDelay)
	}

	// The post-mortem of the killed worker: on stdout, naming the report it will have.
	pm := p.stdout.waitEvent(t, 15*time.Second, "the killed worker's post-mortem", isEvent("postmortem"))
	if path, _ := pm["report"].(string); filepath.Dir(path) != dir || !strings.HasSuffix(path, ".json") {
		t.Errorf("the post-mortem names report %q, want a file in %s", path, dir)
	}

	// Signals, one after the other: each is forwarded (and said) at once.
	for _, sig := range []syscall.Signal{syscall.SIGTTIN, syscall.SIGTTOU} {
		name := unix.SignalName(sig)
		sent := time.Now()
		p.signal(t, sig)
		ev := p.stdout.waitEvent(t, 15*time.Second, "the signal event of "+name, func(m map[string]any) bool {
			return m["event"] == "signal" && m["forwarded"] == true && m["signal"] == name
		})
		d := eventTime(t, ev).Sub(sent)
		t.Logf("%s forwarded %v after it was sent", name, d.Round(time.Microsecond))
		if d > maxDelay {
			t.Errorf("%s was forwarded %v after it was sent, more than %v", name, d, maxDelay)
		}
		p.stdout.waitEvent(t, 10*time.Second, "Gunicorn handling "+name, func(m map[string]any) bool {
			l, _ := m["line"].(string)
			return strings.Contains(l, "Handling signal: "+strings.ToLower(strings.TrimPrefix(name, "SIG")))
		})
	}

	stop := time.Now()
	p.signal(t, syscall.SIGTERM)
	code := p.wait(t, 30*time.Second)
	took := time.Since(stop)
	t.Logf("gwrap exited %v after TERM (stop budget %v)", took.Round(time.Millisecond), budget)
	if took > budget+time.Second {
		t.Errorf("gwrap took %v to stop, more than the stop budget %v + 1 s", took, budget)
	}
	if code != 0 {
		t.Errorf("exit code %d, want Gunicorn's 0", code)
	}
	evs := p.stdout.events(t)
	last := evs[len(evs)-1]
	if last["event"] != "gwrap.exit" {
		t.Fatalf("the last line is not gwrap.exit: %v", last)
	}
	unwritten, _ := last["reports_unwritten"].(float64)
	if _, ok := last["flight_lines_unwritten"].(float64); !ok || unwritten < 1 {
		t.Errorf("gwrap.exit does not count the post-mortem it could not write: %v", last)
	}
	said := false
	for _, e := range evs {
		if e["event"] == "config.warning" && e["code"] == "report_unwritten" {
			said = true
		}
	}
	if !said {
		t.Error("no config.warning said that post-mortems were not written")
	}
	t.Logf("gwrap.exit: reports_unwritten %v, flight_lines_unwritten %v", last["reports_unwritten"], last["flight_lines_unwritten"])
	if _, err := os.Stat(dir); err != nil {
		t.Fatal(err)
	}
}
