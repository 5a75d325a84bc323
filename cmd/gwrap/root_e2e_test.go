package main

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gwrap/gwrap/internal/testkit"
	"github.com/gwrap/gwrap/metrics"
)

// fifoApp runs, on /fifo, code compiled with a FIFO's path as its file name, then sleeps: the
// innermost frame of the late worker names the FIFO.
const fifoApp = `
import os, time

def app(environ, start_response):
    if environ["PATH_INFO"] == "/fifo":
        exec(compile("import time\ntime.sleep(60)\n", os.environ["FIFO"], "exec"))
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"ok\n"]
`

// TestFrameNamingAFIFO: a worker late in code whose file name is a FIFO. gwrap takes its stack,
// tries to quote the frame's line, and must neither block on the FIFO nor lose the incident: the
// post-mortem arrives, and TERM ends gwrap within its stop budget.
func TestFrameNamingAFIFO(t *testing.T) {
	gunicorn := testkit.Gunicorn(t)
	dir := writeApp(t, fifoApp)
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o666); err != nil {
		t.Fatal(err)
	}
	port := freePort(t)
	const budget = 8 * time.Second
	p := startGwrap(t, []string{"FIFO=" + fifo}, "--report-dir", t.TempDir(), "--stop-budget", budget.String(), "--",
		gunicorn, "--chdir", dir, "app:app", "--workers", "1", "--timeout", "4", "--graceful-timeout", "1",
		"--bind", fmt.Sprintf("127.0.0.1:%d", port))
	base := fmt.Sprintf("http://127.0.0.1:%d", port)
	waitHTTP(t, base+"/", 30*time.Second)
	go get(base+"/fifo", 60*time.Second)
	late := p.stdout.waitEvent(t, 30*time.Second, "worker.late with a stack", func(m map[string]any) bool {
		_, ok := m["stack_top"]
		return m["event"] == "worker.late" && ok
	})
	if top, _ := late["stack_top"].(string); !strings.Contains(top, "fifo") {
		t.Errorf("stack_top %q does not name the FIFO's frame", top)
	}
	pm := p.stdout.waitEvent(t, 30*time.Second, "a postmortem", isEvent("postmortem"))
	if pm["cause"] != "blocked" {
		t.Errorf("cause %v: %v", pm["cause"], pm["summary"])
	}
	start := time.Now()
	p.signal(t, syscall.SIGTERM)
	p.wait(t, budget+outputFlush+5*time.Second)
	if took := time.Since(start); took > budget+outputFlush {
		t.Errorf("gwrap took %v to stop, stop budget %v", took, budget)
	}
}

// uidConf is a Gunicorn config file that appends the uid it is evaluated as to a file.
const uidConf = `
import os
with open(os.environ["UIDS"], "a") as f:
    f.write("%d\n" % os.getuid())
timeout = 60 * 10
`

// TestConfigNeverEvaluatedAsRoot: behind a privilege drop (sh -c 'exec setpriv … gunicorn -c
// conf.py'), gwrap reads the settings of a master it did not start: the config file, which the
// app's user may write, runs with the master's uid, never root's. Gunicorn evaluates it once, gwrap
// once more; both record 65534, and the settings it computes are known.
func TestConfigNeverEvaluatedAsRoot(t *testing.T) {
	testkit.RequireRoot(t)
	gunicorn := testkit.Gunicorn(t)
	setpriv, err := exec.LookPath("setpriv")
	if err != nil {
		testkit.Unavailable(t, "setpriv is not installed (util-linux)")
	}
	dir, err := os.MkdirTemp("", "gwrap-uid-") // readable by nobody, unlike t.TempDir's parent
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o777); err != nil {
		t.Fatal(err)
	}
	for name, src := range map[string]string{"app.py": testApp, "conf.py": uidConf} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(src), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	uids := filepath.Join(dir, "uids")
	port := freePort(t)
	script := fmt.Sprintf("cd %s && exec %s --reuid=65534 --regid=65534 --clear-groups %s -c conf.py app:app --workers 1 --bind 127.0.0.1:%d",
		dir, setpriv, gunicorn, port)
	p := startGwrap(t, []string{"UIDS=" + uids}, "--report-dir", t.TempDir(), "--", "sh", "-c", script)
	waitHTTP(t, fmt.Sprintf("http://127.0.0.1:%d/", port), 30*time.Second)
	// Gunicorn's own evaluation and gwrap's: wait for both.
	deadline := time.Now().Add(30 * time.Second)
	var lines []string
	for time.Now().Before(deadline) {
		b, _ := os.ReadFile(uids)
		lines = strings.Fields(string(b))
		if len(lines) >= 2 {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	p.signal(t, syscall.SIGTERM)
	p.wait(t, 20*time.Second)
	if len(lines) < 2 {
		t.Fatalf("the config file was evaluated %d times (%q), want Gunicorn's and gwrap's; output:\n%s", len(lines), lines, strings.Join(p.stdout.snapshot(), "\n"))
	}
	for _, u := range lines {
		if u != "65534" {
			t.Errorf("the config file was evaluated as uid %s (all: %q)", u, lines)
		}
	}
	for _, e := range p.stdout.events(t) {
		if e["event"] == "config.warning" && strings.Contains(fmt.Sprint(e["message"]), "settings") {
			t.Errorf("warning: %v", e["message"])
		}
	}
}

// vmRSS reads VmRSS and VmHWM (bytes) of a process.
func vmRSS(t *testing.T, pid int) (rss, hwm uint64) {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		var kb uint64
		if _, err := fmt.Sscanf(l, "VmRSS: %d kB", &kb); err == nil {
			rss = kb << 10
		}
		if _, err := fmt.Sscanf(l, "VmHWM: %d kB", &kb); err == nil {
			hwm = kb << 10
		}
	}
	if rss == 0 || hwm == 0 {
		t.Fatalf("no VmRSS/VmHWM in /proc/%d/status", pid)
	}
	return rss, hwm
}

// TestMetricsConnectionFlood: 1,000 idle connections to /metrics (PID 1's own port) raise gwrap's
// RSS by at most 8 MiB, and a real scrape during the flood is answered. gwrap is built as
// shipped (no -race, whose shadow memory would be measured too); the figures are logged.
func TestMetricsConnectionFlood(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "gwrap")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	port := freePort(t)
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	p := startCmd(t, exec.Command(bin, "--metrics-addr", addr, "--report-dir", t.TempDir(), "--", "sleep", "300"), nil)
	url := "http://" + addr + "/metrics"
	waitHTTP(t, url, 30*time.Second)
	for range 5 { // settle: the first scrapes allocate what every scrape reuses
		get(url, 5*time.Second)
	}
	pid := p.cmd.Process.Pid
	before, hwmBefore := vmRSS(t, pid)
	var conns []net.Conn
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for range 1000 {
		c, err := net.DialTimeout("tcp", addr, 5*time.Second)
		if err != nil {
			t.Fatalf("dial %d: %v", len(conns), err)
		}
		conns = append(conns, c)
	}
	// The scrape queues behind the flood in the accept queue: once it is answered, gwrap has
	// accepted every idle connection.
	start := time.Now()
	code, body := get(url, 10*time.Second)
	took := time.Since(start)
	after, hwmAfter := vmRSS(t, pid)
	held := openSockets(t, pid)
	rise := int64(after) - int64(before)
	if hwmAfter > hwmBefore {
		rise = max(rise, int64(hwmAfter)-int64(before))
	}
	t.Logf("gwrap RSS before %.1f MiB, with 1,000 idle connections %.1f MiB (peak %.1f MiB, before %.1f): rise %.2f MiB; %d sockets open; scrape answered in %v",
		mib(before), mib(after), mib(hwmAfter), mib(hwmBefore), float64(rise)/(1<<20), held, took.Round(time.Millisecond))
	// The listener, the held connections (at most metrics.MaxConns), and a few of gwrap's own
	// (its stdout and stderr pipes to this test are pipes, not sockets).
	if held > metrics.MaxConns+4 {
		t.Errorf("gwrap holds %d sockets under the flood, bound %d connections", held, metrics.MaxConns)
	}
	if code != 200 || !strings.Contains(body, "gwrap_build_info") {
		t.Errorf("scrape during the flood: %d %.100q", code, body)
	}
	if rise > 8<<20 {
		t.Errorf("RSS rose by %.2f MiB under 1,000 idle connections, bound 8 MiB", float64(rise)/(1<<20))
	}
	p.signal(t, syscall.SIGTERM)
	p.wait(t, 20*time.Second)
}

func mib(b uint64) float64 { return float64(b) / (1 << 20) }

// openSockets counts the sockets a process has open.
func openSockets(t *testing.T, pid int) int {
	t.Helper()
	dir := fmt.Sprintf("/proc/%d/fd", pid)
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, e := range ents {
		if l, err := os.Readlink(filepath.Join(dir, e.Name())); err == nil && strings.HasPrefix(l, "socket:") {
			n++
		}
	}
	return n
}
