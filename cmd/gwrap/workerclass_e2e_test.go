package main

import (
	"fmt"
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
