package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gwrap/gwrap/flightrec"
	"github.com/gwrap/gwrap/internal/testkit"
)

// leakRun is Debian's gunicorn serving leak.py (internal/testkit/apps) with two sync workers
// under gwrap, in a memory cgroup of its own.
type leakRun struct {
	p       *proc
	cg      *testkit.Cgroup
	port    int
	reports string
}

func startLeak(t *testing.T, limit int64, workers int, gwrapArgs ...string) *leakRun {
	t.Helper()
	testkit.RequireRoot(t)
	gunicorn := testkit.Gunicorn(t)
	cg := testkit.MemoryCgroup(t, limit)
	r := &leakRun{cg: cg, port: freePort(t), reports: t.TempDir()}
	argv := append([]string{gwrapBin, "--report-dir", r.reports}, gwrapArgs...)
	argv = append(argv, "--", gunicorn, "--chdir", testkit.AppsDir(), "leak:app", "--workers", strconv.Itoa(workers),
		"--timeout", "30", "--graceful-timeout", "5", "--bind", fmt.Sprintf("127.0.0.1:%d", r.port))
	argv = cg.Wrap(t, argv)
	r.p = startCmd(t, exec.Command(argv[0], argv[1:]...), nil)
	waitHTTP(t, r.url("/pid"), 30*time.Second)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("gwrap's output:\n%s", strings.Join(r.p.stdout.snapshot(), "\n"))
		}
	})
	return r
}

func (r *leakRun) url(path string) string { return fmt.Sprintf("http://127.0.0.1:%d%s", r.port, path) }

// oomKills reads the cgroup's own oom_kill counter: the kernel's word, not gwrap's.
func (r *leakRun) oomKills(t *testing.T) int {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(r.cg.Dir, "memory.oom_control"))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "oom_kill "); ok {
			n, _ := strconv.Atoi(strings.TrimSpace(v))
			return n
		}
	}
	t.Fatalf("no oom_kill in memory.oom_control: %q", b)
	return 0
}

// count returns the events of that name.
func (r *leakRun) count(t *testing.T, name string) []map[string]any {
	var out []map[string]any
	for _, e := range r.p.stdout.events(t) {
		if e["event"] == name {
			out = append(out, e)
		}
	}
	return out
}

// TestLeakRecycled is issue 25's "done when": a leaking app (each request keeps 1 MiB) in a
// 300 MiB cgroup, under a steady stream of 8 requests a second for 60 s. One sync worker: the
// OOM killer then always takes the worker in the middle of the request that allocates (with two,
// it may take the idle one, and no request fails). Without recycling the
// OOM killer kills workers, and the requests they were serving fail; with --recycle-at 80, gwrap
// recycles the worker with the most private memory before the limit: no OOM kill, no failed
// request.
func TestLeakRecycled(t *testing.T) {
	const (
		limit = 300 << 20
		every = 125 * time.Millisecond
		dur   = 60 * time.Second
	)
	type figures struct {
		requests, failures, recycles, ooms int
	}
	run := func(t *testing.T, args ...string) (*leakRun, figures) {
		r := startLeak(t, limit, 1, args...)
		res := testkit.SteadyLoad(r.url("/leak?1"), every, dur, 30*time.Second)
		f := figures{requests: res.Requests, failures: res.Failures, ooms: r.oomKills(t)}
		r.p.signal(t, syscall.SIGTERM)
		r.p.wait(t, 30*time.Second)
		f.recycles = len(r.count(t, "worker.recycled"))
		t.Logf("%s: %d requests, %d failed, %d recycles, %d OOM kills (the cgroup's oom_kill), %d memory.forecast; first failures: %q",
			t.Name(), f.requests, f.failures, f.recycles, f.ooms, len(r.count(t, "memory.forecast")), res.Errors)
		return r, f
	}

	t.Run("off", func(t *testing.T) {
		r, f := run(t)
		if f.ooms == 0 || f.failures == 0 {
			t.Errorf("without recycling: %d OOM kills and %d failed requests, want both (the leak is not fast enough to test anything)", f.ooms, f.failures)
		}
		if f.recycles != 0 {
			t.Errorf("%d recycles with recycling off", f.recycles)
		}
		// The OOM kill's post-mortem says recycling was off.
		pms := r.count(t, "postmortem")
		if len(pms) == 0 {
			t.Fatal("no post-mortem")
		}
		rep := readReport(t, pms[0])
		if c := field(rep, "verdict", "cause"); c != "oom_killed" {
			t.Errorf("cause %v, want oom_killed", c)
		}
		if s, _ := field(rep, "incident", "recycling").(string); !strings.HasPrefix(s, "recycling was off") {
			t.Errorf("the OOM report does not say recycling was off: incident.recycling %q", s)
		}
		// It says how fast memory grew and since when: the leak keeps 1 MiB a request, 8 a second.
		g, _ := field(rep, "incident", "memory_growth").(map[string]any)
		rate, _ := g["bytes_per_second"].(float64)
		since, _ := time.Parse(time.RFC3339Nano, fmt.Sprint(g["since"]))
		died, _ := time.Parse(time.RFC3339Nano, fmt.Sprint(field(rep, "incident", "at")))
		if rate < 3<<20 || rate > 16<<20 || since.IsZero() || !since.Before(died) {
			t.Errorf("incident.memory_growth %v: want about 8 MiB/s, since before the kill at %v", g, died)
		}
		if s, _ := field(rep, "verdict", "summary").(string); !strings.Contains(s, "the container's memory had grown") {
			t.Errorf("the summary does not say how fast memory grew: %s", s)
		}
		t.Logf("incident.memory_growth %v; summary: %s", g, field(rep, "verdict", "summary"))
	})

	t.Run("recycle_at_80", func(t *testing.T) {
		r, f := run(t, "--recycle-at", "80")
		if f.ooms != 0 || f.failures != 0 {
			t.Errorf("with --recycle-at 80: %d OOM kills and %d failed requests, want none", f.ooms, f.failures)
		}
		if f.recycles == 0 {
			t.Error("no worker.recycled event")
		}
		if len(r.count(t, "memory.forecast")) == 0 {
			t.Error("no memory.forecast: a leak of 8 MiB/s reaches 300 MiB within 10 minutes")
		}
		if n := len(r.count(t, "postmortem")); n != 0 {
			t.Errorf("%d post-mortems: a recycled worker's exit is no incident", n)
		}
		for _, e := range r.count(t, "worker.recycled") {
			if e["reason"] != "container_memory" || e["pid"] == nil || e["private_bytes"] == nil {
				t.Errorf("worker.recycled %v: want reason container_memory, pid, private_bytes", e)
			}
		}
	})
}

// TestFastFill is issue 25's fast fill: a worker fills the container from half its limit to the
// limit within 500 ms (leak.py's /fill: 4 MiB steps paced over 450 ms, then past the limit, so
// the OOM killer ends it). The OOM kill's post-mortem and the flight record each hold at least 3
// samples of the climb: v1's usage thresholds (cgroup.event_control) wake the watcher, and it
// sweeps at --fast-interval (100 ms) while memory climbs. At 1 Hz alone they held at most one.
func TestFastFill(t *testing.T) {
	const limit = 300 << 20
	r := startLeak(t, limit, 1)
	code, body := get(r.url("/hold?0.5"), 30*time.Second)
	held, err := strconv.ParseUint(strings.TrimSpace(body), 10, 64)
	if code != 200 || err != nil {
		t.Fatalf("/hold: %d %q", code, body)
	}
	start := time.Now()
	go get(r.url("/fill"), 30*time.Second) // it never answers: the OOM killer ends it
	pm := r.p.stdout.waitEvent(t, 30*time.Second, "the fill's post-mortem", isEvent("postmortem"))
	rep := readReport(t, pm)
	if c := field(rep, "verdict", "cause"); c != "oom_killed" {
		t.Fatalf("cause %v, want oom_killed: %v", c, field(rep, "verdict", "summary"))
	}
	died, err := time.Parse(time.RFC3339Nano, fmt.Sprint(field(rep, "incident", "at")))
	if err != nil {
		t.Fatal(err)
	}
	// A sample of the climb: after the fill began, up to the death, with the working set above
	// where /hold left it by more than the noise of a sample (4 MiB).
	climbing := func(at time.Time, ws uint64) bool {
		return !at.Before(start) && !at.After(died) && ws > held+4<<20
	}
	var inReport []string
	samples, _ := field(rep, "container", "samples").([]any)
	for _, s := range samples {
		m, _ := s.(map[string]any)
		at, _ := time.Parse(time.RFC3339Nano, fmt.Sprint(m["t"]))
		ws, _ := m["working_set_bytes"].(float64)
		if climbing(at, uint64(ws)) {
			inReport = append(inReport, fmt.Sprintf("%s %.0f MiB", at.Format("15:04:05.000"), ws/(1<<20)))
		}
	}
	r.p.signal(t, syscall.SIGTERM)
	r.p.wait(t, 30*time.Second)
	host, _ := os.Hostname()
	rec, err := flightrec.Previous(r.reports, host)
	if err != nil || rec == nil {
		t.Fatalf("no flight record: %v", err)
	}
	var inRecord []string
	for _, st := range rec.Container {
		if st.WorkingSet.Known && climbing(st.Time, st.WorkingSet.V) {
			inRecord = append(inRecord, fmt.Sprintf("%s %d MiB", st.Time.Format("15:04:05.000"), st.WorkingSet.V>>20))
		}
	}
	t.Logf("held %d MiB of %d; fill from %s, killed at %s; climb samples in the report %q, in the flight record %q",
		held>>20, limit>>20, start.Format("15:04:05.000"), died.Format("15:04:05.000"), inReport, inRecord)
	if len(inReport) < 3 || len(inRecord) < 3 {
		t.Errorf("%d samples of the climb in the report and %d in the flight record, want at least 3 in each", len(inReport), len(inRecord))
	}
}
