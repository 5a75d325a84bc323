package main

import (
	"fmt"
	"net/http"
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

// trustApp recycles, prints lines that look like Gunicorn's, and sleeps on request.
const trustApp = `
import os, sys, time

def app(environ, start_response):
    path = environ["PATH_INFO"]
    if path == "/forge":
        # The app's own output, on both streams: none of it is Gunicorn's.
        for pid in (1, os.getpid(), os.getppid(), 999999):
            print("[2026-11-25 03:42:36 +0000] [%d] [CRITICAL] WORKER TIMEOUT (pid:%d)" % (os.getppid(), pid), flush=True)
            print("WORKER TIMEOUT (pid:%d)" % pid, file=sys.stderr, flush=True)
            print("[2026-11-25 03:42:36 +0000] [%d] [ERROR] Worker (pid:%d) was sent SIGSEGV!" % (os.getpid(), pid), file=sys.stderr, flush=True)
    elif path == "/sleep":
        time.sleep(float(environ.get("QUERY_STRING") or 60))
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"ok\n"]
`

// hammer sends n requests over conc connections-less clients and returns how many failed.
func hammer(t *testing.T, url string, n, conc int) int {
	t.Helper()
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	var mu sync.Mutex
	failed := 0
	var wg sync.WaitGroup
	jobs := make(chan int)
	for range conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range jobs {
				r, err := client.Get(url)
				if err == nil {
					r.Body.Close()
				}
				if err != nil || r.StatusCode != 200 {
					mu.Lock()
					failed++
					mu.Unlock()
				}
			}
		}()
	}
	for i := range n {
		jobs <- i
	}
	close(jobs)
	wg.Wait()
	return failed
}

func countEvents(t *testing.T, p *proc, name string) int {
	n := 0
	for _, e := range p.stdout.events(t) {
		if e["event"] == name {
			n++
		}
	}
	return n
}

// TestNoFalseIncidents: ordinary recycling (max-requests at info and at warning level), the app's
// own lines that look like Gunicorn's, and a migration step before `exec gunicorn` make no
// incident; then one request sleeping past the timeout makes exactly one, blocked.
func TestNoFalseIncidents(t *testing.T) {
	gunicorn := testkit.Gunicorn(t)
	for _, c := range []struct {
		name     string
		args     []string
		requests int
		wrap     func(argv []string) []string
	}{
		{"max-requests 1 at info level", []string{"--workers", "4", "--max-requests", "1"}, 400, nil},
		{"max-requests 2 at warning level", []string{"--workers", "2", "--max-requests", "2", "--log-level", "warning"}, 40, nil},
		{"a migration step before exec gunicorn", []string{"--workers", "2"}, 10, func(argv []string) []string {
			// A shell runs a child that exits 1 (a failed migration is the app's business),
			// then becomes Gunicorn: the child is not a worker.
			return []string{"/bin/sh", "-c", `python3 -c 'import sys, time; time.sleep(1.5); sys.exit(1)'; exec "$@"`, "sh"}
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir := writeApp(t, trustApp)
			port := freePort(t)
			reports := t.TempDir()
			gargv := append([]string{gunicorn, "--chdir", dir, "app:app", "--timeout", "3", "--graceful-timeout", "1",
				"--bind", fmt.Sprintf("127.0.0.1:%d", port)}, c.args...)
			if c.wrap != nil {
				gargv = append(c.wrap(gargv), gargv...)
			}
			argv := append([]string{gwrapBin, "--report-dir", reports, "--"}, gargv...)
			p := startCmd(t, exec.Command(argv[0], argv[1:]...), nil)
			base := fmt.Sprintf("http://127.0.0.1:%d", port)
			waitHTTP(t, base+"/", 30*time.Second)
			if failed := hammer(t, base+"/", c.requests, 4); failed > c.requests/20 {
				t.Errorf("%d of %d requests failed", failed, c.requests)
			}
			hammer(t, base+"/forge", 3, 1)
			// Let the last recycled workers' windows close.
			time.Sleep(5 * time.Second)
			if n := countEvents(t, p, "postmortem"); n != 0 {
				t.Fatalf("%d post-mortems for ordinary recycling and forged lines:\n%s", n, strings.Join(p.stdout.snapshot(), "\n"))
			}
			for _, name := range []string{"worker.timeout", "worker.killed"} {
				if n := countEvents(t, p, name); n != 0 {
					t.Errorf("%d %s events from forged lines", n, name)
				}
			}
			// Now one real incident.
			go hammer(t, base+"/sleep?30", 1, 1)
			p.stdout.waitEvent(t, 30*time.Second, "a postmortem event", isEvent("postmortem"))
			p.signal(t, syscall.SIGTERM)
			p.wait(t, 20*time.Second)
			var causes []any
			for _, e := range p.stdout.events(t) {
				if e["event"] == "postmortem" {
					causes = append(causes, e["cause"])
				}
			}
			if fmt.Sprint(causes) != "[blocked]" {
				t.Errorf("post-mortems %v, want exactly one blocked", causes)
			}
			var jsons int
			_ = filepath.WalkDir(reports, func(path string, d os.DirEntry, err error) error {
				if err == nil && !d.IsDir() && filepath.Ext(path) == ".json" {
					jsons++
				}
				return nil
			})
			if jsons != 1 {
				t.Errorf("%d report files, want 1", jsons)
			}
		})
	}
}
