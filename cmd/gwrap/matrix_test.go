package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/gwrap/gwrap/internal/testkit"
)

// The live matrix: every Gunicorn release on the machine (Debian's 20.1 and the 23.0 and 26.x
// that scripts/deps.sh unpacks) × every worker class users run, each case under gwrap with the
// verdict (or the silence) it must give. One gwrap+Gunicorn run per release and class, with one
// worker: the cases run one after another, each on a fresh worker (the previous case killed its
// worker and Gunicorn booted a new one), so each verdict is about one worker and CPU verdicts are
// never skewed by another case. The whole run sits in a memory cgroup so the OOM case is a real
// kernel OOM kill; its limit is far above what the other cases use.

const (
	matrixTimeout  = 4                // --timeout: short, so the matrix takes minutes (at 3 s, 1 Hz sampling jitter made CPU verdicts borderline)
	matrixGraceful = 10               // --graceful-timeout: longer than the in-flight request
	matrixLimit    = 400 << 20        // the memory cgroup's limit
	matrixDeadline = 30 * time.Second // how long a kill case may take to give its post-mortem
)

// matrixClass is one worker class and the cases that make sense for it.
type matrixClass struct {
	name     string
	args     []string
	app      string
	cases    []matrixCase
	minMajor int // the first release that has the class in the matrix (0: every release)
}

// matrixCase is one thing a worker does and what gwrap must say about it.
type matrixCase struct {
	name string
	path string // the request (query = seconds or MiB)
	// want is the post-mortem's cause; "" means a healthy case: for quiet the worker must get no
	// worker.late and no incident.
	want  string
	quiet time.Duration
	check func(t *testing.T, rel testkit.Release, class string, pm, rep map[string]any)
}

var (
	// Healthy cases watch 2 × the timeout; their requests (9 s) outlive that window, then answer.
	idle = matrixCase{name: "idle 2x timeout", quiet: 2 * matrixTimeout * time.Second}
	// A request that waits past the timeout: a sync worker does not beat while it runs.
	sleepBlocked = matrixCase{name: "sleep past timeout", path: "/sleep?60", want: "blocked"}
	spinCPU      = matrixCase{name: "spin in Python", path: "/spin?60", want: "cpu_bound"}
	cloopCPU     = matrixCase{name: "C loop holding the GIL", path: "/cloop", want: "cpu_bound", check: checkEscalation}
	oomKill      = matrixCase{name: "alloc past the memory limit", path: "/alloc?2000", want: "oom_killed", check: checkOOM}
)

// matrixClasses: which cases make sense per class, and why.
var matrixClasses = []matrixClass{
	{name: "sync", args: []string{"-k", "sync"}, app: "wsgi:app",
		cases: []matrixCase{idle, sleepBlocked, spinCPU, cloopCPU, oomKill}},
	// gthread: requests run in a pool while the main thread beats every second, so a request that
	// sleeps, or even spins in Python (the GIL is handed over every 5 ms), never times the worker
	// out: both are healthy cases. Only a C loop that keeps the GIL stops the main thread.
	{name: "gthread", args: []string{"-k", "gthread", "--threads", "4"}, app: "wsgi:app",
		cases: []matrixCase{idle,
			{name: "sleep past timeout in a thread", path: "/sleep?9", quiet: 2 * matrixTimeout * time.Second},
			{name: "spin in a thread", path: "/spin?9", quiet: 2 * matrixTimeout * time.Second},
			cloopCPU, oomKill}},
	// gevent: the hub beats every second; a request blocks it only with a call gevent has not
	// patched (/sleep uses the original time.sleep) or by computing.
	{name: "gevent", args: []string{"-k", "gevent"}, app: "wsgi:app",
		cases: []matrixCase{idle,
			{name: "cooperative sleep past timeout", path: "/csleep?9", quiet: 2 * matrixTimeout * time.Second},
			{name: "unpatched sleep blocking the hub", path: "/sleep?60", want: "blocked"},
			spinCPU, cloopCPU, oomKill}},
	// Uvicorn: the loop beats every timeout/2; awaiting is healthy, a synchronous sleep or a
	// computation in a handler blocks the loop. Uvicorn resets SIGABRT to its default, so a
	// timed-out worker dies of Gunicorn's SIGABRT at once: no SIGKILL escalation (checkEscalation).
	{name: "uvicorn", args: []string{"-k", "uvicorn.workers.UvicornWorker"}, app: "asgi:app",
		cases: []matrixCase{idle,
			{name: "asyncio.sleep past timeout", path: "/asleep?9", quiet: 2 * matrixTimeout * time.Second},
			{name: "time.sleep blocking the loop", path: "/sleep?60", want: "blocked"},
			spinCPU, cloopCPU, oomKill}},
	// Gunicorn's own ASGI worker (24.0, stable since 25.1; in the matrix on 26.x): its loop beats
	// every second, awaiting is healthy. It handles SIGABRT through the event loop, which a blocked
	// loop never runs, so whatever blocks it ends in Gunicorn's SIGKILL and "Perhaps out of
	// memory?" a second after the timeout: the summary must say that was the timeout's escalation.
	{name: "asgi", args: []string{"-k", "asgi"}, app: "asgi:app", minMajor: 26,
		cases: []matrixCase{idle,
			{name: "asyncio.sleep past timeout", path: "/asleep?9", quiet: 2 * matrixTimeout * time.Second},
			{name: "time.sleep blocking the loop", path: "/sleep?60", want: "blocked", check: checkEscalation},
			{name: spinCPU.name, path: spinCPU.path, want: spinCPU.want, check: checkEscalation},
			cloopCPU, oomKill}},
}

// gracefulPath is the request in flight during a graceful stop, per class: it outlives the
// timeout but not --graceful-timeout, and waits the way that class's apps wait.
var gracefulPath = map[string]string{"sync": "/sleep?5", "gthread": "/sleep?5", "gevent": "/csleep?5", "uvicorn": "/asleep?5", "asgi": "/asleep?5"}

// matrixTable collects release × class × case → outcome for the log.
var matrixTable struct {
	sync.Mutex
	rows []string
}

func record(rel testkit.Release, class, cs, outcome string, pass bool) {
	mark := "PASS"
	if !pass {
		mark = "FAIL"
	}
	matrixTable.Lock()
	matrixTable.rows = append(matrixTable.rows, fmt.Sprintf("%-8s %-8s %-40s %-4s %s", rel.Version, class, cs, mark, outcome))
	matrixTable.Unlock()
}

func TestMatrix(t *testing.T) {
	testkit.RequireRoot(t)
	rels := testkit.Releases(t)
	majors := map[int]bool{}
	for _, r := range rels {
		majors[r.Major()] = true
	}
	for _, m := range []int{20, 23, 26} {
		if !majors[m] {
			testkit.Unavailable(t, "no Gunicorn %d.x on this machine (run scripts/deps.sh)", m)
		}
	}
	t.Cleanup(func() {
		matrixTable.Lock()
		defer matrixTable.Unlock()
		t.Logf("matrix (release class case → outcome):\n%s", strings.Join(matrixTable.rows, "\n"))
	})
	for _, rel := range rels {
		for _, class := range matrixClasses {
			if rel.Major() < class.minMajor {
				continue // the release has no such class
			}
			t.Run(rel.Version+"/"+class.name, func(t *testing.T) { runMatrix(t, rel, class) })
		}
		t.Run(rel.Version+"/boot", func(t *testing.T) { runBootCase(t, rel) })
		if rel.Major() >= 26 {
			t.Run(rel.Version+"/dirty", func(t *testing.T) { runDirtyBlock(t, rel) })
		}
	}
}

// matrixRun is one gwrap running one Gunicorn release.
type matrixRun struct {
	p    *proc
	base string // http://127.0.0.1:PORT
}

func startMatrix(t *testing.T, rel testkit.Release, args []string, env ...string) *matrixRun {
	t.Helper()
	return startMatrixWith(t, rel, nil, args, env...)
}

// startMatrixWith is startMatrix with gwrap flags of its own.
func startMatrixWith(t *testing.T, rel testkit.Release, gwrapArgs, args []string, env ...string) *matrixRun {
	t.Helper()
	port := freePort(t)
	gargs := append([]string{"--workers", "1", "--timeout", fmt.Sprint(matrixTimeout),
		"--graceful-timeout", fmt.Sprint(matrixGraceful), "--bind", fmt.Sprintf("127.0.0.1:%d", port)}, args...)
	argv := append(append(append([]string{gwrapBin, "--report-dir", t.TempDir()}, gwrapArgs...), "--"), rel.Argv(t, gargs...)...)
	argv = testkit.MemoryCgroup(t, matrixLimit).Wrap(t, argv)
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Dir = t.TempDir()
	return &matrixRun{p: startCmd(t, cmd, append(rel.Env(t), env...)), base: fmt.Sprintf("http://127.0.0.1:%d", port)}
}

// workerPID asks the one worker its pid, waiting for it to boot.
func (r *matrixRun) workerPID(t *testing.T) int {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if code, body := fetch(r.base+"/pid", 2*time.Second); code == 200 {
			var pid int
			if _, err := fmt.Sscan(body, &pid); err == nil {
				return pid
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("no worker answered within 30s; output:\n%s", strings.Join(r.p.stdout.snapshot(), "\n"))
	return 0
}

func pidOf(m map[string]any) int {
	f, _ := m["pid"].(float64)
	return int(f)
}

// alarm is what must not happen to a healthy worker.
func alarm(m map[string]any) bool {
	switch m["event"] {
	case "worker.late", "worker.stuck_boot", "worker.timeout", "worker.killed", "postmortem", "oom.kill":
		return true
	}
	return false
}

func describe(m map[string]any) string {
	return fmt.Sprintf("%v pid %v: %v", m["event"], m["pid"], m["message"])
}

// runMatrix runs a class's cases on one gwrap, then its graceful stop; the OOM case runs last on
// a gwrap of its own: the kernel may take more than the worker when its memory is not freed at
// once (a gthread worker's was not: the master went too, as the second victim of the same OOM),
// and that must not end the other cases' Gunicorn.
func runMatrix(t *testing.T, rel testkit.Release, class matrixClass) {
	run := startMatrix(t, rel, append(append([]string{}, class.args...), class.app))
	var oom []matrixCase
	for _, cs := range class.cases {
		if cs.path == oomKill.path {
			oom = append(oom, cs)
			continue
		}
		t.Run(cs.name, func(t *testing.T) { runCase(t, run, rel, class.name, cs) })
	}
	t.Run("graceful stop with a request in flight", func(t *testing.T) { runGraceful(t, run, rel, class.name) })
	for _, cs := range oom {
		t.Run(cs.name, func(t *testing.T) {
			run := startMatrix(t, rel, append(append([]string{}, class.args...), class.app))
			runCase(t, run, rel, class.name, cs)
		})
	}
}

func runCase(t *testing.T, run *matrixRun, rel testkit.Release, class string, cs matrixCase) {
	pid := run.workerPID(t)
	if cs.want == "" {
		from := len(run.p.stdout.snapshot())
		answered := make(chan int, 1)
		if cs.path != "" {
			go func() { code, _ := fetch(run.base+cs.path, 90*time.Second); answered <- code }()
		}
		bad := run.p.stdout.quiet(from, cs.quiet, alarm)
		outcome := "no worker.late, no incident"
		if len(bad) > 0 {
			var ds []string
			for _, m := range bad {
				ds = append(ds, describe(m))
			}
			outcome = strings.Join(ds, "; ")
			t.Errorf("healthy worker %d (%s): gwrap said %s", pid, cs.path, outcome)
		}
		pass := len(bad) == 0
		if cs.path != "" {
			// The request (healthySeconds long) outlived the window; it must answer.
			if code := <-answered; code != 200 {
				pass = false
				outcome += fmt.Sprintf("; the request answered %d", code)
				t.Errorf("healthy request %s answered %d, want 200", cs.path, code)
			}
		}
		record(rel, class, cs.name, outcome, pass)
		return
	}
	go fetch(run.base+cs.path, 90*time.Second)
	pm, ok := run.p.stdout.wait(matrixDeadline, func(m map[string]any) bool {
		return m["event"] == "postmortem" && pidOf(m) == pid || m["event"] == "gunicorn.exit"
	})
	if ok && pm["event"] == "gunicorn.exit" && cs.want == "oom_killed" {
		// The kernel may pick the master: a gthread worker's memory is not always freed in time,
		// and under load the master went first (twice among the 12 OOM cases of one loaded run).
		// Which process the kernel takes is its choice; gwrap must say which it was.
		pass := pm["oom_killed"] == true
		if !pass {
			t.Errorf("the master died without the OOM killer named: %v", pm)
		}
		record(rel, class, cs.name, fmt.Sprintf("the kernel OOM-killed the master: gunicorn.exit oom_killed %v", pm["oom_killed"]), pass)
		return
	}
	if ok && pm["event"] == "gunicorn.exit" {
		ok = false
	}
	if !ok {
		record(rel, class, cs.name, "no postmortem within "+matrixDeadline.String(), false)
		t.Fatalf("no postmortem for worker %d (%s) within %v; output:\n%s", pid, cs.path, matrixDeadline, strings.Join(run.p.stdout.snapshot(), "\n"))
	}
	rep := readReport(t, pm)
	pass := pm["cause"] == cs.want
	if !pass {
		t.Errorf("worker %d (%s): cause %v, want %s: %v", pid, cs.path, pm["cause"], cs.want, pm["summary"])
	}
	if cs.check != nil {
		before := t.Failed()
		cs.check(t, rel, class, pm, rep)
		pass = pass && t.Failed() == before
	}
	record(rel, class, cs.name, fmt.Sprintf("%v (kind %v, escalation %v)", pm["cause"], field(rep, "incident", "kind"), field(rep, "incident", "timeout_escalation")), pass)
	waitPIDGone(t, pid)
}

// checkEscalation: a worker stuck in C ignores SIGABRT's Python handler, so Gunicorn SIGKILLs it;
// from 21.0 Gunicorn calls that SIGKILL "Perhaps out of memory?" and the summary must correct it.
// Uvicorn workers die of the SIGABRT itself.
func checkEscalation(t *testing.T, rel testkit.Release, class string, pm, rep map[string]any) {
	if class == "uvicorn" {
		return
	}
	if field(rep, "incident", "timeout_escalation") != true {
		t.Errorf("C loop: incident.timeout_escalation %v, want true", field(rep, "incident", "timeout_escalation"))
	}
	if rel.Major() >= 21 {
		s, _ := pm["summary"].(string)
		if !strings.Contains(s, "Perhaps out of memory?") || !(strings.Contains(s, "own SIGKILL") || strings.Contains(s, "itself sent that SIGKILL")) {
			t.Errorf("C loop on %s: the summary does not say Gunicorn's \"Perhaps out of memory?\" was its own SIGKILL: %q", rel.Version, s)
		}
	}
}

func checkOOM(t *testing.T, _ testkit.Release, _ string, pm, rep map[string]any) {
	if field(rep, "incident", "kind") != "oom_kill" {
		t.Errorf("incident.kind %v, want oom_kill", field(rep, "incident", "kind"))
	}
	if pm["near_memory_limit"] != true {
		t.Errorf("an OOM-killed worker reached the limit: near_memory_limit %v", pm["near_memory_limit"])
	}
}

// runGraceful stops gwrap with SIGTERM while a request that outlives the timeout is in flight:
// Gunicorn lets it finish (it no longer times workers out while stopping), so gwrap must not call
// the worker late nor make an incident of its exit.
func runGraceful(t *testing.T, run *matrixRun, rel testkit.Release, class string) {
	pid := run.workerPID(t)
	before := sockets(pid)
	done := make(chan int, 1)
	go func() { code, _ := fetch(run.base+gracefulPath[class], 60*time.Second); done <- code }()
	waitRequestInFlight(t, pid, before)
	from := len(run.p.stdout.snapshot())
	run.p.signal(t, syscall.SIGTERM)
	code := run.p.wait(t, time.Duration(matrixGraceful+15)*time.Second)
	var bad []string
	for _, m := range run.p.stdout.events(t)[from:] {
		if alarm(m) {
			bad = append(bad, describe(m))
		}
	}
	status := <-done
	outcome := fmt.Sprintf("exit %d, request %d, no worker.late, no incident", code, status)
	if len(bad) > 0 {
		outcome = fmt.Sprintf("exit %d, request %d, %s", code, status, strings.Join(bad, "; "))
		t.Errorf("graceful stop of worker %d: gwrap said %s", pid, strings.Join(bad, "; "))
	}
	if code != 0 || status != 200 {
		t.Errorf("graceful stop: gwrap exit %d, in-flight request status %d; want 0 and 200", code, status)
	}
	record(rel, class, "graceful stop, request in flight", outcome, len(bad) == 0 && code == 0 && status == 200)
}

// runBootCase: an import that takes a minute. Gunicorn ≤ 21 times the booting worker out and
// gwrap reports boot_timeout. From 22 Gunicorn never does: gwrap must say it itself — a
// worker.stuck_boot once the boot outlasts the timeout — and, since nothing died, make no
// post-mortem until the worker dies; at the stop that ends it, the post-mortem is boot_timeout.
// The boot does not depend on the worker class (every class imports the app before its loop
// starts), so sync alone covers it.
func runBootCase(t *testing.T, rel testkit.Release) {
	run := startMatrix(t, rel, []string{"-k", "sync", "slowboot:app"}, "SLOWBOOT_SECONDS=120")
	_, stuck := run.p.stdout.wait(matrixDeadline, isEvent("worker.stuck_boot"))
	if rel.Major() >= 22 {
		if !stuck {
			record(rel, "sync", "slow import", "no worker.stuck_boot within "+matrixDeadline.String(), false)
			t.Fatalf("Gunicorn %s: no worker.stuck_boot within %v; output:\n%s", rel.Version, matrixDeadline, strings.Join(run.p.stdout.snapshot(), "\n"))
		}
		if pm, early := run.p.stdout.wait(0, isEvent("postmortem")); early {
			t.Errorf("Gunicorn %s: a post-mortem while the worker is still booting: %v", rel.Version, pm["summary"])
		}
		run.p.signal(t, syscall.SIGTERM) // the stop ends the stuck worker
	}
	pm, ok := run.p.stdout.wait(matrixDeadline, isEvent("postmortem"))
	if !ok {
		record(rel, "sync", "slow import", "no postmortem within "+matrixDeadline.String(), false)
		t.Fatalf("no postmortem for a worker stuck booting within %v; output:\n%s", matrixDeadline, strings.Join(run.p.stdout.snapshot(), "\n"))
	}
	pass := pm["cause"] == "boot_timeout"
	if !pass {
		t.Errorf("slow import: cause %v, want boot_timeout: %v", pm["cause"], pm["summary"])
	}
	gunicornTimedOut := false
	for _, s := range run.p.stdout.snapshot() {
		if strings.Contains(s, "WORKER TIMEOUT") && strings.Contains(s, `"gunicorn.log"`) {
			gunicornTimedOut = true
		}
	}
	if rel.Major() >= 22 && gunicornTimedOut {
		pass = false
		t.Errorf("Gunicorn %s timed out a booting worker: the premise of this case is wrong", rel.Version)
	}
	t.Logf("Gunicorn %s, slow import: worker.stuck_boot: %v; summary: %v", rel.Version, stuck, pm["summary"])
	record(rel, "sync", "slow import", fmt.Sprintf("%v (Gunicorn timed it out: %v, worker.stuck_boot: %v)", pm["cause"], gunicornTimedOut, stuck), pass)
}

// readReport reads the report a postmortem event names (the event comes first: gwrap writes
// the report on a goroutine of its own, so that a slow disk never holds it up).
func readReport(t *testing.T, pm map[string]any) map[string]any {
	t.Helper()
	path, _ := pm["report"].(string)
	waitFile(t, path, 10*time.Second)
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("report %q: %v", path, err)
	}
	var rep map[string]any
	if err := json.Unmarshal(b, &rep); err != nil {
		t.Fatalf("report %s: %v", path, err)
	}
	return rep
}

// matrixClient never reuses a connection: Go retries a GET that failed on a reused connection,
// and a retried /alloc or /cloop would make a second incident on the next worker.
var matrixClient = &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}

// fetch sends one GET and returns the status (0 when the request failed) and the body.
func fetch(url string, timeout time.Duration) (int, string) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, err.Error()
	}
	resp, err := matrixClient.Do(req)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// waitPIDGone waits until a worker is reaped, so the next case talks to its successor.
func waitPIDGone(t *testing.T, pid int) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil || strings.Contains(string(b), ") Z ") {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("worker %d still alive after 20s", pid)
}

// waitRequestInFlight waits until the worker holds an ESTABLISHED TCP socket it did not hold
// before: the request was accepted.
func waitRequestInFlight(t *testing.T, pid int, before map[string]bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		for inode := range sockets(pid) {
			if !before[inode] {
				return
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("worker %d never accepted the request", pid)
}

// sockets is the set of the worker's ESTABLISHED TCP sockets (its fds' inodes found in tcp/tcp6).
func sockets(pid int) map[string]bool {
	fds, _ := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	inodes := map[string]bool{}
	for _, fd := range fds {
		l, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", pid, fd.Name()))
		if err == nil && strings.HasPrefix(l, "socket:[") {
			inodes[strings.TrimSuffix(strings.TrimPrefix(l, "socket:["), "]")] = true
		}
	}
	out := map[string]bool{}
	for _, f := range []string{"tcp", "tcp6"} {
		b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/net/%s", pid, f))
		for _, line := range strings.Split(string(b), "\n")[1:] {
			fs := strings.Fields(line)
			if len(fs) > 9 && fs[3] == "01" && inodes[fs[9]] {
				out[fs[9]] = true
			}
		}
	}
	return out
}

// wait waits up to d for an event matching pred; false when none came (or the process ended).
func (l *lineLog) wait(d time.Duration, pred func(map[string]any) bool) (map[string]any, bool) {
	deadline := time.Now().Add(d)
	timer := time.AfterFunc(d, func() { l.mu.Lock(); l.cond.Broadcast(); l.mu.Unlock() })
	defer timer.Stop()
	l.mu.Lock()
	defer l.mu.Unlock()
	for seen := 0; ; {
		for ; seen < len(l.lines); seen++ {
			var m map[string]any
			if json.Unmarshal([]byte(l.lines[seen]), &m) == nil && pred(m) {
				return m, true
			}
		}
		if l.done || !time.Now().Before(deadline) {
			return nil, false
		}
		l.cond.Wait()
	}
}

// quiet watches the lines from index from for d and returns every event matching pred.
func (l *lineLog) quiet(from int, d time.Duration, pred func(map[string]any) bool) []map[string]any {
	deadline := time.Now().Add(d)
	timer := time.AfterFunc(d, func() { l.mu.Lock(); l.cond.Broadcast(); l.mu.Unlock() })
	defer timer.Stop()
	l.mu.Lock()
	for !l.done && time.Now().Before(deadline) {
		l.cond.Wait()
	}
	lines := append([]string(nil), l.lines[min(from, len(l.lines)):]...)
	l.mu.Unlock()
	var out []map[string]any
	for _, s := range lines {
		var m map[string]any
		if json.Unmarshal([]byte(s), &m) == nil && pred(m) {
			out = append(out, m)
		}
	}
	return out
}
