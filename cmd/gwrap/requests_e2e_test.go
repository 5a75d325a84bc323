package main

import (
	"bytes"
	"cmp"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gwrap/gwrap/inflight"
	"github.com/gwrap/gwrap/internal/testkit"
	"github.com/gwrap/gwrap/pystack"
)

// requestRun is one gwrap in front of one Gunicorn worker of one class and release, its report
// dir, and the worker's base URL.
type requestRun struct {
	p       *proc
	base    string
	reports string
}

// startRequestRun starts gwrap (--follow-up 1s) in front of `python3 -m gunicorn` of release r
// with one worker, --timeout timeout and args (the worker class and app), plus gwrapArgs, and
// waits until it answers.
func startRequestRun(t *testing.T, r testkit.Release, timeout int, wrap func(*testing.T, []string) []string, gwrapArgs []string, args ...string) *requestRun {
	t.Helper()
	port := freePort(t)
	reports := t.TempDir()
	argv := append([]string{gwrapBin, "--report-dir", reports, "--follow-up", "1s"}, gwrapArgs...)
	argv = append(argv, "--")
	argv = append(argv, r.Argv(t, append([]string{"--chdir", testkit.AppsDir(), "--workers", "1",
		"--timeout", strconv.Itoa(timeout), "--graceful-timeout", "1", "--bind", fmt.Sprintf("127.0.0.1:%d", port)}, args...)...)...)
	if wrap != nil {
		argv = wrap(t, argv)
	}
	p := startCmd(t, exec.Command(argv[0], argv[1:]...), r.Env(t))
	run := &requestRun{p: p, base: fmt.Sprintf("http://127.0.0.1:%d", port), reports: reports}
	waitHTTP(t, run.base+"/pid", 30*time.Second)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("gwrap's output:\n%s", strings.Join(p.stdout.snapshot(), "\n"))
		}
	})
	return run
}

// workerPID asks the worker its pid.
func (run *requestRun) workerPID(t *testing.T) int {
	t.Helper()
	_, body := get(run.base+"/pid", 10*time.Second)
	pid, err := strconv.Atoi(strings.TrimSpace(body))
	if err != nil {
		t.Fatalf("/pid answered %q", body)
	}
	return pid
}

// waitRecorded waits until worker pid's request file (found through the hook's directory in its
// environment) shows a request to path in flight.
func waitRecorded(t *testing.T, pid int, path string) {
	t.Helper()
	env, err := os.ReadFile(fmt.Sprintf("/proc/%d/environ", pid))
	if err != nil {
		t.Fatal(err)
	}
	var dir string
	for _, kv := range bytes.Split(env, []byte{0}) {
		if k, v, ok := strings.Cut(string(kv), "="); ok && k == pystack.EnvDir {
			dir = v
		}
	}
	if dir == "" {
		t.Fatalf("worker %d has no %s: the hook is not loaded", pid, pystack.EnvDir)
	}
	file := filepath.Join(dir, strconv.Itoa(pid)+".req")
	deadline := time.Now().Add(10 * time.Second)
	for {
		tb, err := inflight.ReadFile(file, inflight.QueryNames)
		for _, r := range tb.InFlight {
			if r.Path == path {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("worker %d never recorded a request to %s in flight: %+v, %v", pid, path, tb, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// postmortemFor waits for the post-mortem of worker pid and returns the event and its report.
func (run *requestRun) postmortemFor(t *testing.T, pid int, d time.Duration) (map[string]any, map[string]any) {
	t.Helper()
	pm := run.p.stdout.waitEvent(t, d, fmt.Sprintf("the postmortem of worker %d", pid), func(m map[string]any) bool {
		return m["event"] == "postmortem" && m["pid"] == float64(pid)
	})
	return pm, readReport(t, pm)
}

// stop ends gwrap with SIGTERM.
func (run *requestRun) stop(t *testing.T) {
	t.Helper()
	run.p.signal(t, syscall.SIGTERM)
	run.p.wait(t, 20*time.Second)
}

// wantRequest checks that the post-mortem names a request method+path that had run at least
// minAge seconds: in the summary, in the event's requests and in the report's incident.requests.
// It returns the report's request.
func wantRequest(t *testing.T, pm, rep map[string]any, method, path string, minAge float64) map[string]any {
	t.Helper()
	name := method + " " + path
	if s, _ := pm["summary"].(string); !strings.Contains(s, "It was serving "+name) || !strings.Contains(s, ", running ") {
		t.Errorf("the summary does not name %s and its age: %q", name, s)
	}
	if l, _ := pm["requests"].([]any); len(l) == 0 || !strings.HasPrefix(fmt.Sprint(l[0]), name) {
		t.Errorf("the postmortem event's requests %v do not name %s", pm["requests"], name)
	}
	l, _ := field(rep, "incident", "requests").([]any)
	for _, x := range l {
		r, _ := x.(map[string]any)
		if r["method"] == method && r["path"] == path {
			if age, _ := r["age_s"].(float64); age < minAge || age > 120 {
				t.Errorf("the report's request %v ran %v s, want at least %v", r, r["age_s"], minAge)
			}
			return r
		}
	}
	t.Errorf("the report's incident.requests %v do not name %s (requests_error %v)", l, name, field(rep, "incident", "requests_error"))
	return nil
}

// TestRequestsInVerdicts: for every worker class on every release, the post-mortem of a worker
// that died serving a sleeping request names that request and how long it had run. A worker
// whose sleep blocks it (sync, Uvicorn, -k asgi) is timed out by Gunicorn; a gthread worker
// beats on while a thread sleeps, so the test SIGKILLs it once the request is recorded. A gevent
// worker is late first (worker.late carries the request), then timed out: once aborted it beats
// on while it unwinds, and its timeout is still the verdict.
func TestRequestsInVerdicts(t *testing.T) {
	testkit.RequireRoot(t) // the SIGKILL of a gthread worker, /proc/<worker>/environ
	const timeout = 3
	type class struct {
		name string
		args []string
		kill bool // SIGKILL the worker (it would not time out)
		// timeout is --timeout when not the default (gevent: the test's SIGKILL comes after its
		// worker.late at half of it and well before Gunicorn's own timeout; sync: the status is
		// read well before it).
		timeout int
		since   int // the first major release that has the class
	}
	classes := []class{
		{name: "sync", args: []string{"wsgi:app"}, timeout: 6},
		{name: "gthread", args: []string{"-k", "gthread", "--threads", "2", "wsgi:app"}, kill: true},
		{name: "gevent", args: []string{"-k", "gevent", "wsgi:app"}, timeout: 6},
		{name: "uvicorn", args: []string{"-k", "uvicorn.workers.UvicornWorker", "asgi:app"}},
		{name: "asgi", args: []string{"-k", "asgi", "asgi:app"}, since: 26},
	}
	for _, r := range testkit.Releases(t) {
		for _, c := range classes {
			if r.Major() < c.since {
				continue
			}
			t.Run(r.Version+"/"+c.name, func(t *testing.T) {
				t.Parallel()
				var gwrapArgs []string
				metricsPort := 0
				if c.name == "sync" {
					metricsPort = freePort(t)
					gwrapArgs = []string{"--metrics-addr", fmt.Sprintf("127.0.0.1:%d", metricsPort)}
				}
				run := startRequestRun(t, r, cmp.Or(c.timeout, timeout), nil, gwrapArgs, c.args...)
				pid := run.workerPID(t)
				go get(run.base+"/sleep?30", 40*time.Second)
				minAge := float64(cmp.Or(c.timeout, timeout)) - 0.5
				waitRecorded(t, pid, "/sleep")
				if metricsPort != 0 {
					_, text := get(fmt.Sprintf("http://127.0.0.1:%d/metrics", metricsPort), 5*time.Second)
					if !strings.Contains(text, "\ngwrap_requests_in_flight 1\n") || !strings.Contains(text, "\ngwrap_request_oldest_seconds ") {
						t.Errorf("/metrics does not count the request in flight:\n%s", text)
					}
					// /status: the figures are those of gwrap's latest sample of the worker, so
					// wait (well within the 3 s timeout) until its second sample gave a CPU share.
					var body string
					var st statusDoc
					for deadline := time.Now().Add(2 * time.Second); ; {
						_, body = get(fmt.Sprintf("http://127.0.0.1:%d/status", metricsPort), 5*time.Second)
						st = statusDoc{}
						err := json.Unmarshal([]byte(body), &st)
						if err == nil && len(st.Workers) == 1 && st.Workers[0]["cpu_percent"] != nil || time.Now().After(deadline) {
							break
						}
						time.Sleep(100 * time.Millisecond)
					}
					checkStatus(t, "/status", pid, st, body)
					// gwrap status, run beside it, finds it among the other tests' gwraps by its
					// report dir.
					out, err := exec.Command(gwrapBin, "status", "--json", "--report-dir", run.reports).CombinedOutput()
					st = statusDoc{}
					if jerr := json.Unmarshal(out, &st); err != nil || jerr != nil {
						t.Errorf("gwrap status --json: %v %v\n%s", err, jerr, out)
					}
					checkStatus(t, "gwrap status --json", pid, st, string(out))
					out, err = exec.Command(gwrapBin, "status", "--report-dir", run.reports).CombinedOutput()
					if err != nil || !strings.Contains(string(out), "GET /sleep from 127.0.0.1, running ") || !strings.Contains(string(out), " MiB") {
						t.Errorf("gwrap status: %v\n%s", err, out)
					}
					t.Logf("gwrap status:\n%s", out)
				}
				if c.name == "gevent" {
					// A gevent worker beats every second: it is late at half the timeout
					// (a sync one may not be late before Gunicorn kills it).
					late := run.p.stdout.waitEvent(t, 30*time.Second, "worker.late", func(m map[string]any) bool {
						return m["event"] == "worker.late" && m["pid"] == float64(pid)
					})
					if l, _ := late["requests"].([]any); len(l) == 0 || !strings.HasPrefix(fmt.Sprint(l[0]), "GET /sleep") ||
						!strings.Contains(fmt.Sprint(late["message"]), "serving GET /sleep") {
						t.Errorf("worker.late does not carry the request: %v", late)
					}
				}
				if c.kill {
					if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
						t.Fatal(err)
					}
					minAge = 0
				}
				pm, rep := run.postmortemFor(t, pid, 30*time.Second)
				wantRequest(t, pm, rep, "GET", "/sleep", minAge)
				t.Logf("%s", pm["summary"])
				run.stop(t)
			})
		}
	}
}

// statusDoc is /status and gwrap status --json, as the tests read it.
type statusDoc struct {
	Workers []map[string]any `json:"workers"`
}

// checkStatus checks that the status lists worker pid alone, serving GET /sleep, with every
// figure a user reads there present and plausible for a sync worker that answered /pid (at least
// twice, quickly) and then began a sleeping request.
func checkStatus(t *testing.T, where string, pid int, st statusDoc, raw string) {
	t.Helper()
	if len(st.Workers) != 1 || st.Workers[0]["pid"] != float64(pid) {
		t.Errorf("%s does not list worker %d alone:\n%s", where, pid, raw)
		return
	}
	w := st.Workers[0]
	reqs, _ := w["requests"].([]any)
	if len(reqs) != 1 {
		t.Errorf("%s lists %d requests in flight, want 1:\n%s", where, len(reqs), raw)
	} else if r, _ := reqs[0].(map[string]any); r["method"] != "GET" || r["path"] != "/sleep" {
		t.Errorf("%s's request in flight is %v, want GET /sleep", where, r)
	} else if age, ok := r["age_s"].(float64); !ok || age < 0 || age > 10 {
		t.Errorf("%s's request in flight has age %v, want 0–10 s", where, r["age_s"])
	}
	num := func(k string, lo, hi float64) float64 {
		v, ok := w[k].(float64)
		if !ok || v < lo || v > hi {
			t.Errorf("%s: worker %d's %s is %v, want %g–%g:\n%s", where, pid, k, w[k], lo, hi, raw)
		}
		return v
	}
	if s, _ := w["state"].(string); s == "" || s == "Z" {
		t.Errorf("%s: worker %d's state %q", where, pid, s)
	}
	num("age_s", 0.1, 600)
	num("heartbeat_age_s", 0, 30)
	rss := num("rss_bytes", 1<<20, 4<<30)
	if priv := num("private_bytes", 1<<10, 4<<30); priv > rss {
		t.Errorf("%s: worker %d's private memory %v exceeds its resident memory %v", where, pid, priv, rss)
	}
	num("cpu_percent", 0, 100)
	num("requests_served", 2, 1e6)
	num("last_request_s", 0, 5)
}

// TestRequestCLoopNamed: a worker wedged in a C loop that holds the GIL runs no Python at all
// (not even a signal handler) until Gunicorn SIGKILLs it; its request is still named, read from
// the file the worker wrote when the request started.
func TestRequestCLoopNamed(t *testing.T) {
	pm, rep := runScenario(t, scenario{timeout: 3, path: "/cloop"})
	r := wantRequest(t, pm, rep, "GET", "/cloop", 2.5)
	if r != nil && r["cut"] == true {
		t.Errorf("a request wedged in C cannot have been cut by the abort's SystemExit: %v", r)
	}
}

// secretApp sleeps on every request.
const secretApp = `import time

def app(environ, start_response):
    time.sleep(30)
    start_response("200 OK", [])
    return [b"ok"]
`

// TestRequestQuerySecretNeverShown: a request whose query carries a secret is named, its query
// as names only ("token=…"), and the secret appears in none of gwrap's output: stdout, stderr,
// the report dir (reports, HTML, the flight record).
func TestRequestQuerySecretNeverShown(t *testing.T) {
	const secret = "s3cr3t"
	gunicorn := testkit.Gunicorn(t)
	dir := writeApp(t, secretApp)
	port := freePort(t)
	reports := t.TempDir()
	p := startGwrap(t, nil, "--report-dir", reports, "--follow-up", "1s", "--", gunicorn, "--chdir", dir, "app:app",
		"--workers", "1", "--timeout", "3", "--graceful-timeout", "1", "--bind", fmt.Sprintf("127.0.0.1:%d", port))
	base := fmt.Sprintf("http://127.0.0.1:%d", port)
	// The app sleeps on every request: wait for the port, not an answer.
	deadline := time.Now().Add(30 * time.Second)
	for {
		if c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), time.Second); err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("Gunicorn never listened")
		}
		time.Sleep(50 * time.Millisecond)
	}
	go get(base+"/report?token="+secret+"&year=2024", 40*time.Second)
	pm := p.stdout.waitEvent(t, 30*time.Second, "a postmortem", isEvent("postmortem"))
	rep := readReport(t, pm)
	if r := wantRequest(t, pm, rep, "GET", "/report", 2.5); r != nil && r["query"] != "token=…&year=…" {
		t.Errorf("the request's query %q, want the names only", r["query"])
	}
	p.signal(t, syscall.SIGTERM)
	p.wait(t, 20*time.Second)
	if out := strings.Join(p.stdout.snapshot(), "\n"); strings.Contains(out, secret) {
		t.Errorf("the secret is in gwrap's stdout:\n%s", out)
	}
	if strings.Contains(p.stderr.String(), secret) {
		t.Errorf("the secret is in gwrap's stderr:\n%s", p.stderr.String())
	}
	files := 0
	err := filepath.WalkDir(reports, func(path string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		files++
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		if bytes.Contains(b, []byte(secret)) {
			t.Errorf("the secret is in %s", path)
		}
		return nil
	})
	if err != nil || files < 3 {
		t.Errorf("the report dir holds %d files (a report, its HTML, the flight record): %v", files, err)
	}
}
