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
	"github.com/gwrap/gwrap/probes"
)

// TestFlightRecordExplainsAWholeContainerKill runs gwrap and Gunicorn in a memory cgroup with a
// limit, lets a worker grow towards it, SIGKILLs every process of the cgroup at once (what a
// group OOM kill or a platform's stop deadline does: gwrap gets no chance to write anything),
// then starts gwrap again with the same report dir: before Gunicorn starts, it writes a
// previous_run post-mortem whose timeline shows the growth. A clean TERM and restart after that
// produces none.
func TestFlightRecordExplainsAWholeContainerKill(t *testing.T) {
	gunicorn := testkit.Gunicorn(t)
	const limit = 512 << 20
	cg := testkit.MemoryCgroup(t, limit)
	host, err := os.Hostname()
	if err != nil {
		t.Fatal(err)
	}
	dir := writeApp(t, testApp)
	reports := t.TempDir()
	port := freePort(t)
	start := func() *proc {
		argv := cg.Wrap(t, []string{gwrapBin, "--report-dir", reports, "--interval", "250ms", "--", gunicorn, "--chdir", dir, "app:app",
			"--workers", "1", "--timeout", "30", "--graceful-timeout", "2", "--bind", fmt.Sprintf("127.0.0.1:%d", port)})
		return startCmd(t, exec.Command(argv[0], argv[1:]...), nil)
	}

	// 1. The first run: the worker grows by 40 MiB five times; wait each time until the flight
	// record on disk has a sample of it.
	first := start()
	waitHTTP(t, fmt.Sprintf("http://127.0.0.1:%d/", port), 30*time.Second)
	// The worker's first sample in the record comes before the first allocation: the timeline
	// then starts from the worker as it booted, whatever the pace of the samples (ten a second
	// while memory climbs fast catch a sample between an allocation and the next).
	waitRecord(t, reports, host, 1)
	for i := 1; i <= 5; i++ {
		if code, body := get(fmt.Sprintf("http://127.0.0.1:%d/alloc?40", port), 20*time.Second); code != 200 {
			t.Fatalf("alloc %d: %d %s", i, code, body)
		}
		waitRecord(t, reports, host, uint64(i*40)<<20)
	}
	// A request in flight when the container dies: wait until the record on disk has it.
	go get(fmt.Sprintf("http://127.0.0.1:%d/sleep?60", port), 70*time.Second)
	waitServing(t, reports, host, "/sleep")

	// 2. Kill every process of the cgroup at once, gwrap included.
	killAll(t, cg)
	first.wait(t, 20*time.Second)
	if rec, _ := flightrec.Previous(reports, host); rec == nil || rec.Closed {
		t.Fatalf("after a SIGKILL the record must be there and open: %v", rec)
	}

	// 3. The next start explains the previous death before Gunicorn starts.
	second := start()
	pm := second.stdout.waitEvent(t, 30*time.Second, "a previous_run postmortem", func(m map[string]any) bool {
		return m["event"] == "postmortem" || m["event"] == "gunicorn.start"
	})
	if pm["event"] != "postmortem" || pm["kind"] != "previous_run" {
		t.Fatalf("first of postmortem/gunicorn.start is %v, want a previous_run postmortem before Gunicorn starts", pm)
	}
	t.Logf("postmortem: %v", pm["summary"])
	rep := readReport(t, pm)
	if field(rep, "incident", "kind") != "previous_run" {
		t.Errorf("incident.kind %v", field(rep, "incident", "kind"))
	}
	// Without memory.oom.group (cgroup v1) and with no OOM kill, the record cannot name the
	// killer: unknown, saying what it shows.
	if c := field(rep, "verdict", "cause"); c != "unknown" {
		t.Errorf("cause %v, want unknown: %v", c, pm["summary"])
	}
	tl, _ := rep["timeline"].([]any)
	if len(tl) < 5 {
		t.Fatalf("timeline of %d points", len(tl))
	}
	rss := func(p any) float64 { v, _ := p.(map[string]any)["rss_bytes"].(float64); return v }
	if grew := rss(tl[len(tl)-1]) - rss(tl[0]); grew < 150<<20 {
		t.Errorf("the timeline grows by %.0f MiB, want ≥ 150 MiB (5 × 40 MiB allocated)", grew/(1<<20))
	}
	samples, _ := field(rep, "container", "samples").([]any)
	ws := func(p any) float64 { v, _ := p.(map[string]any)["working_set_bytes"].(float64); return v }
	if len(samples) < 5 || ws(samples[len(samples)-1])-ws(samples[0]) < 150<<20 {
		t.Errorf("the container's samples do not show the growth: %d samples", len(samples))
	}
	if l, _ := field(rep, "container", "limit_bytes").(float64); l != limit {
		t.Errorf("container limit %v, want %d", l, limit)
	}
	// The request in flight when the container died is named: in the summary, the event and
	// incident.requests.
	if s, _ := pm["summary"].(string); !strings.Contains(s, "In flight at its last record: worker ") || !strings.Contains(s, " was serving GET /sleep from 127.0.0.1, running ") {
		t.Errorf("the summary does not name the request in flight: %q", s)
	}
	if l, _ := pm["requests"].([]any); len(l) != 1 || !strings.HasPrefix(fmt.Sprint(l[0]), "GET /sleep from 127.0.0.1, running ") {
		t.Errorf("the postmortem event's requests %v, want GET /sleep", pm["requests"])
	}
	if l, _ := field(rep, "incident", "requests").([]any); len(l) != 1 {
		t.Errorf("incident.requests %v, want the one request in flight", l)
	} else if r, _ := l[0].(map[string]any); r["method"] != "GET" || r["path"] != "/sleep" || r["remote"] != "127.0.0.1" {
		t.Errorf("incident.requests %v, want GET /sleep from 127.0.0.1", r)
	} else if age, _ := r["age_s"].(float64); age <= 0 || age > 60 {
		t.Errorf("the request in flight ran %v s, want more than 0 and at most 60", r["age_s"])
	}

	// 4. A clean TERM and restart: no post-mortem of the previous run.
	waitHTTP(t, fmt.Sprintf("http://127.0.0.1:%d/", port), 30*time.Second)
	second.signal(t, syscall.SIGTERM)
	if code := second.wait(t, 20*time.Second); code != 0 {
		t.Errorf("second run exit code %d", code)
	}
	third := start()
	ev := third.stdout.waitEvent(t, 30*time.Second, "gunicorn.start", func(m map[string]any) bool {
		return m["event"] == "postmortem" || m["event"] == "gunicorn.start"
	})
	if ev["event"] != "gunicorn.start" {
		t.Errorf("a clean stop was explained as a death: %v", ev)
	}
	waitHTTP(t, fmt.Sprintf("http://127.0.0.1:%d/", port), 30*time.Second)
	third.signal(t, syscall.SIGTERM)
	third.wait(t, 20*time.Second)
	ids, _ := filepath.Glob(filepath.Join(reports, "*previous-run.json"))
	if len(ids) != 1 {
		t.Errorf("%d previous_run reports, want 1: %v", len(ids), ids)
	}
}

// TestFlightRecordExplainsAKillAfterTERM: gwrap forwards TERM, Gunicorn waits for a worker that
// ignores TERM (up to its graceful timeout), and the whole container is SIGKILLed before the stop completes (a platform's grace period
// shorter than the stop): the next start says so.
func TestFlightRecordExplainsAKillAfterTERM(t *testing.T) {
	gunicorn := testkit.Gunicorn(t)
	cg := testkit.MemoryCgroup(t, 512<<20)
	host, err := os.Hostname()
	if err != nil {
		t.Fatal(err)
	}
	// The worker imports the app after installing its signal handlers: the app can ignore TERM.
	dir := writeApp(t, "import signal\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\n"+testApp)
	reports := t.TempDir()
	port := freePort(t)
	start := func() *proc {
		argv := cg.Wrap(t, []string{gwrapBin, "--report-dir", reports, "--stop-budget", "60s", "--", gunicorn, "--chdir", dir, "app:app",
			"--workers", "1", "--timeout", "90", "--graceful-timeout", "60", "--bind", fmt.Sprintf("127.0.0.1:%d", port)})
		return startCmd(t, exec.Command(argv[0], argv[1:]...), nil)
	}
	first := start()
	waitHTTP(t, fmt.Sprintf("http://127.0.0.1:%d/", port), 30*time.Second)
	first.signal(t, syscall.SIGTERM)
	deadline := time.Now().Add(20 * time.Second)
	for {
		rec, _ := flightrec.Previous(reports, host)
		if rec != nil && len(rec.Signals) > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the TERM never reached the flight record")
		}
		time.Sleep(50 * time.Millisecond) // polling a file with a deadline
	}
	killAll(t, cg)
	first.wait(t, 20*time.Second)

	second := start()
	pm := second.stdout.waitEvent(t, 30*time.Second, "a previous_run postmortem", isEvent("postmortem"))
	if pm["kind"] != "previous_run" || pm["cause"] != "unknown" || !strings.Contains(fmt.Sprint(pm["summary"]), "killed while stopping") {
		t.Errorf("kind %v cause %v, want previous_run killed while stopping: %v", pm["kind"], pm["cause"], pm["summary"])
	}
	t.Logf("postmortem: %v", pm["summary"])
	second.signal(t, syscall.SIGTERM)
	second.wait(t, 20*time.Second)
}

// killAll SIGKILLs every process of the cgroup at once, as a group OOM kill does.
func killAll(t *testing.T, cg *testkit.Cgroup) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(cg.Dir, "cgroup.procs"))
	if err != nil {
		t.Fatal(err)
	}
	pids := strings.Fields(string(b))
	if len(pids) < 3 {
		t.Fatalf("cgroup holds %v, want gwrap, the master and a worker", pids)
	}
	for _, p := range pids {
		n, _ := strconv.Atoi(p)
		_ = syscall.Kill(n, syscall.SIGKILL)
	}
}

// waitRecord polls the flight record on disk until a worker's last sample has at least min bytes
// of anonymous memory.
func waitRecord(t *testing.T, dir, host string, min uint64) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		rec, err := flightrec.Previous(dir, host)
		if err != nil {
			t.Fatal(err)
		}
		if rec != nil && maxAnon(rec.Workers) >= min {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the flight record never showed a worker with %d MiB", min>>20)
		}
		time.Sleep(100 * time.Millisecond) // polling a file with a deadline
	}
}

// waitServing waits until host's flight record in dir shows a worker serving a request for path.
func waitServing(t *testing.T, dir, host, path string) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		rec, err := flightrec.Previous(dir, host)
		if err != nil {
			t.Fatal(err)
		}
		if rec != nil {
			for _, rs := range rec.Serving {
				for _, r := range rs {
					if r.Path == path {
						return
					}
				}
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("the flight record never showed a request for %s in flight", path)
		}
		time.Sleep(100 * time.Millisecond) // polling a file with a deadline
	}
}

func maxAnon(ws map[probes.ID][]probes.Sample) uint64 {
	var m uint64
	for _, ss := range ws {
		if n := len(ss); n > 0 && ss[n-1].RSSAnon > m {
			m = ss[n-1].RSSAnon
		}
	}
	return m
}
