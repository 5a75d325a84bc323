package main

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/gwrap/gwrap/internal/testkit"
)

// TestIdleSyncWorkerByPathNeverLate: Gunicorn's sync worker named by its class path
// (`-k gunicorn.workers.sync.SyncWorker`) is the sync worker (gunicorn.Class): idle, it beats
// only every timeout/2, so gwrap calls it late only past timeout/2 and a grace (3.6 s of a 6 s
// timeout), never at the age every idle beat reaches. Taken for a class that beats every second
// (as before issue 23), it was late at 3.0 s: each idle beat could make a worker.late. Sampled
// every 100 ms, the late event's heartbeat age shows the threshold; idle, none comes.
func TestIdleSyncWorkerByPathNeverLate(t *testing.T) {
	gunicorn := testkit.Gunicorn(t)
	dir := writeApp(t, testApp)
	port := freePort(t)
	p := startGwrap(t, nil, "--report-dir", t.TempDir(), "--interval", "100ms", "--", gunicorn, "--chdir", dir, "app:app",
		"-k", "gunicorn.workers.sync.SyncWorker", "--workers", "2", "--timeout", "6", "--bind", fmt.Sprintf("127.0.0.1:%d", port))
	url := fmt.Sprintf("http://127.0.0.1:%d", port)
	waitHTTP(t, url+"/pid", 15*time.Second)
	from := len(p.stdout.snapshot())
	if late := p.stdout.quiet(from, 7*time.Second, isEvent("worker.late")); len(late) != 0 {
		t.Fatalf("an idle sync worker was called late: %v", late[0])
	}
	go get(url+"/sleep?5", 10*time.Second) // below the 6 s timeout
	late := p.stdout.waitEvent(t, 10*time.Second, "worker.late of the sleeping worker", isEvent("worker.late"))
	if age, _ := late["heartbeat_age_s"].(float64); age < 3.5 {
		t.Errorf("late at a heartbeat age of %.1f s: an idle sync worker's own beat (3 s) would be late too", age)
	}
}

// TestMetricsWorkerClassFromTheLog: when only Gunicorn's log names the worker class (threads
// set by a config file gwrap does not evaluate, so it reads sync), /metrics' gwrap_gunicorn_info
// takes the class the log names (Gunicorn 20.1's "Using worker: threads", the gthread worker),
// as the engine judges the workers by it: before issue 23 it kept the start-up guess, sync.
func TestMetricsWorkerClassFromTheLog(t *testing.T) {
	gunicorn := testkit.Gunicorn(t)
	dir := writeApp(t, testApp)
	conf := filepath.Join(dir, "conf.py")
	if err := os.WriteFile(conf, []byte("import os\nthreads = int(os.environ.get('APP_THREADS', '4'))\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	port, mport := freePort(t), freePort(t)
	p := startGwrap(t, nil, "--report-dir", t.TempDir(), "--eval-config=false", "--metrics-addr", fmt.Sprintf("127.0.0.1:%d", mport),
		"--", gunicorn, "-c", conf, "--chdir", dir, "app:app", "--workers", "1", "--timeout", "30", "--bind", fmt.Sprintf("127.0.0.1:%d", port))
	start := p.stdout.waitEvent(t, 15*time.Second, "gwrap.start", isEvent("gwrap.start"))
	if c := start["worker_class"]; c == "gthread" || c == "threads" {
		t.Fatalf("gwrap read worker_class %v at start: the test needs the log alone to name the class", c)
	}
	p.stdout.waitEvent(t, 15*time.Second, "Gunicorn's Using worker line", func(m map[string]any) bool {
		return m["event"] == "gunicorn.log" && m["kind"] == "using_worker"
	})
	want := regexp.MustCompile(`gwrap_gunicorn_info\{version="[^"]+",worker_class="gthread"\} 1`)
	var body string
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); {
		var code int
		if code, body = get(fmt.Sprintf("http://127.0.0.1:%d/metrics", mport), 5*time.Second); code == 200 && want.MatchString(body) {
			return
		}
		time.Sleep(100 * time.Millisecond) // the scrape is polled: the engine takes the line on its own goroutine
	}
	for _, l := range strings.Split(body, "\n") {
		if strings.HasPrefix(l, "gwrap_gunicorn_info") {
			t.Errorf("with the log naming the threaded worker, /metrics says %s", l)
		}
	}
}
